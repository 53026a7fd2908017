"""Tests for tasks.itm.metric: SCAN's retrieval metrics and the COCO 1K protocol.

Rules checked against kuanghuei/SCAN@806355736e ``evaluation.py`` (``i2t``,
``t2i``, ``evalrank(fold5=True)``). Expected values are worked out by hand in
the comments; the brute-force reference below is our own restatement of the
rank rule (a stable sort of each row / column), used on random matrices.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from nas.errors import UserError
from tasks.itm import metric
from tasks.itm.metric import (
    PROTOCOLS,
    RetrievalScores,
    coco_1k_scores,
    evaluate_itm_file,
    retrieval_scores,
)

# Three images, five captions each: captions 0-4 -> image 0, 5-9 -> image 1,
# 10-14 -> image 2. No two entries of a row or a column are equal.
#
# Image -> text (position of the best own caption in the row, 0-based):
#   image 0: own c2 = 95 is the row maximum                        -> rank 0
#   image 1: best own c6 = 85; above it c10..c12 = 96, 97, 98      -> rank 3
#   image 2: best own c14 = 5; all 10 foreign captions are above   -> rank 10
#   ranks [0, 3, 10]: R@1 = 100*1/3, R@5 = 100*2/3, R@10 = 100*2/3 (10 < 10 is false),
#   medr = floor(3) + 1 = 4, meanr = 13/3 + 1.
# Text -> image (position of the caption's own image in its column):
#   c0 90/30/81 -> 0; c1 80/31/82 -> 1; c2 95/32/83 -> 0; c3 70/33/84 -> 1; c4 60/34/86 -> 1
#   c5..c9: image 1's own entry is below image 2's (87..92) and above image 0's -> 1 each
#   c10..c14: image 2's own entries 1..5 are the column minimum -> 2 each
#   ranks: two 0s, eight 1s, five 2s: R@1 = 100*2/15, R@5 = R@10 = 100,
#   medr = floor(median = 1) + 1 = 2, meanr = 18/15 + 1 = 2.2.
# rsum = 100/3 + 200/3 + 200/3 + 40/3 + 100 + 100 = 380.
HAND = np.array([
    [90, 80, 95, 70, 60, 10, 11, 12, 13, 14, 20, 21, 22, 23, 24],
    [30, 31, 32, 33, 34, 50, 85, 40, 41, 42, 96, 97, 98, 43, 44],
    [81, 82, 83, 84, 86, 87, 88, 89, 91, 92, 1, 2, 3, 4, 5],
], dtype=np.float64)


def _reference_ranks(sims: np.ndarray, cpi: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: sort each row / column by decreasing score, ties lower index first."""
    n_img, n_cap = sims.shape
    by_row = np.argsort(-sims, axis=1, kind="stable")
    row_pos = np.empty_like(by_row)
    np.put_along_axis(row_pos, by_row, np.arange(n_cap)[None, :].repeat(n_img, 0), axis=1)
    i2t = row_pos.reshape(n_img, n_img, cpi)[np.arange(n_img), np.arange(n_img)].min(axis=1)
    by_col = np.argsort(-sims, axis=0, kind="stable")
    col_pos = np.empty_like(by_col)
    np.put_along_axis(col_pos, by_col, np.arange(n_img)[:, None].repeat(n_cap, 1), axis=0)
    t2i = col_pos[np.arange(n_cap) // cpi, np.arange(n_cap)]
    return i2t, t2i


def _reference_scores(sims: np.ndarray, cpi: int = 5) -> list[float]:
    values: list[float] = []
    for ranks in _reference_ranks(sims, cpi):
        ranks = ranks.astype(np.float64)
        values += [100.0 * np.sum(ranks < k) / len(ranks) for k in (1, 5, 10)]
        values += [np.floor(np.median(ranks)) + 1, ranks.mean() + 1]
    return values


def _as_list(scores: RetrievalScores) -> list[float]:
    return [scores.i2t_r1, scores.i2t_r5, scores.i2t_r10, scores.i2t_medr, scores.i2t_meanr,
            scores.t2i_r1, scores.t2i_r5, scores.t2i_r10, scores.t2i_medr, scores.t2i_meanr]


# --------------------------------------------------------------------------
# All images at once
# --------------------------------------------------------------------------

def test_hand_worked_three_image_matrix() -> None:
    scores = retrieval_scores(HAND)
    assert scores.i2t_r1 == pytest.approx(100 / 3)
    assert scores.i2t_r5 == pytest.approx(200 / 3)
    assert scores.i2t_r10 == pytest.approx(200 / 3)
    assert (scores.i2t_medr, scores.i2t_meanr) == (4.0, pytest.approx(13 / 3 + 1))
    assert scores.t2i_r1 == pytest.approx(100 * 2 / 15)
    assert (scores.t2i_r5, scores.t2i_r10) == (100.0, 100.0)
    assert (scores.t2i_medr, scores.t2i_meanr) == (2.0, pytest.approx(2.2))
    assert scores.rsum == pytest.approx(380.0)
    assert (scores.num_images, scores.num_folds) == (3, 1)
    # SCAN's expressions: 100.0 * count / n, added up in its order.
    assert scores.i2t_r1 == 100.0 * 1 / 3
    assert scores.rsum == 100.0 * 1 / 3 + 100.0 * 2 / 3 + 100.0 * 2 / 3 + 100.0 * 2 / 15 + 100.0 + 100.0


def test_scores_do_not_depend_on_dtype_or_scale() -> None:
    expected = retrieval_scores(HAND)
    for sims in (HAND.astype(np.float32), HAND.astype(np.float16), HAND.astype(np.int64),
                 HAND.astype(np.uint8), HAND * 1e-3 - 7.0):
        assert retrieval_scores(sims) == expected


def test_exact_ties_are_broken_lower_index_first() -> None:
    # Two images, all similarities equal. Our rule = a stable sort of -sims:
    #   i2t: row order c0..c9; image 0's best own caption c0 at 0, image 1's c5 at 5.
    #   t2i: column order image 0, image 1; image 0's captions rank 0, image 1's rank 1.
    scores = retrieval_scores(np.zeros((2, 10)))
    # i2t ranks [0, 5]: R@1 = R@5 = 50 (5 < 5 is false), R@10 = 100,
    # medr = floor(2.5) + 1 = 3, meanr = 2.5 + 1.
    assert _as_list(scores)[:5] == [50.0, 50.0, 100.0, 3.0, 3.5]
    # t2i ranks five 0s, five 1s: R@1 = 50, medr = floor(0.5) + 1 = 1, meanr = 0.5 + 1.
    assert _as_list(scores)[5:] == [50.0, 100.0, 100.0, 1.0, 1.5]

    # One caption per image; image 0's own score ties a foreign caption to its
    # right (it wins, rank 0); image 1's ties one to its left (it loses, rank 1).
    tie = np.array([[1.0, 1.0], [0.0, 0.0]])
    one = retrieval_scores(tie, captions_per_image=1)
    assert (one.i2t_r1, one.i2t_meanr) == (50.0, 1.5)
    # Columns: c0 = (1, 0) -> image 0 first, rank 0; c1 = (1, 0) -> image 1 second, rank 1.
    assert (one.t2i_r1, one.t2i_meanr) == (50.0, 1.5)

    # SCAN's own expression, argsort(row)[::-1], with a *stable* sort ranks the
    # higher index first, i.e. the opposite; with numpy's default sort it is
    # whatever the sort implementation does. This is why ties are defined here.
    scan_order = np.argsort(tie[1], kind="stable")[::-1]
    assert list(scan_order).index(1) == 0  # SCAN-with-stable-sort: image 1 at rank 0, ours 1


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("chunk_entries", [64, 1 << 22])
def test_matches_brute_force_ranks_with_and_without_ties(seed: int, chunk_entries: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny chunk size splits even these matrices into many uneven row chunks.
    monkeypatch.setattr(metric, "_CHUNK_ENTRIES", chunk_entries)
    rng = np.random.default_rng(seed)
    n_img = int(rng.integers(1, 40))
    cpi = int(rng.integers(1, 6))
    shape = (n_img, n_img * cpi)
    # Even seeds: few distinct values, so ties everywhere. Odd: continuous, no ties.
    sims = rng.integers(-2, 3, size=shape).astype(np.float32) if seed % 2 == 0 else rng.standard_normal(shape)
    scores = retrieval_scores(sims, captions_per_image=cpi)
    assert _as_list(scores) == _reference_scores(sims, cpi)  # bit-identical


def test_realistic_size_matches_brute_force() -> None:
    # Half a COCO 1K fold, at the default chunk size.
    rng = np.random.default_rng(7)
    sims = rng.standard_normal((500, 2500)).astype(np.float32)
    sims[np.arange(2500) // 5, np.arange(2500)] += 2.0  # own pairs score higher: recalls in (0, 100)
    scores = retrieval_scores(sims)
    assert 0 < scores.i2t_r1 < 100 and 0 < scores.t2i_r1 < 100
    assert _as_list(scores) == _reference_scores(sims)


# --------------------------------------------------------------------------
# COCO 1K: five folds of 1000 images
# --------------------------------------------------------------------------

# Fold f (f = 0..4) gets m_f = 250 f "good" images. Inside fold f, image g's
# own captions score [1, -1, -1, -1, -1] if g < m_f else [-1] * 5; every other
# entry of the fold block is 0.
#   i2t: good image -> rank 0; other -> its best own (-1) is below 4995 zeros -> rank 4995.
#     R@K = m_f / 10 = 0, 25, 50, 75, 100 -> mean 50 (K = 1, 5, 10).
#     medr = 4996, 4996, floor((0 + 4995) / 2) + 1 = 2498, 1, 1 -> mean 2498.4.
#     meanr = (1000 - m_f) * 4.995 + 1 = 4996, 3747.25, 2498.5, 1249.75, 1 -> mean 2498.5.
#   t2i: a caption scoring 1 -> rank 0; scoring -1 -> below 999 zeros -> rank 999.
#     R@K = m_f / 50 = 0, 5, 10, 15, 20 -> mean 10.
#     medr = 1000 in every fold (fewer than half the ranks are 0).
#     meanr = (5000 - m_f) / 5000 * 999 + 1 = 1000, 950.05, 900.1, 850.15, 800.2 -> mean 900.1.
#   rsum = 3 * 50 + 3 * 10 = 180. (SCAN's printout would say 6 * mean(ar) = 300.)
COCO_EXPECTED = [50.0, 50.0, 50.0, 2498.4, 2498.5, 10.0, 10.0, 10.0, 1000.0, 900.1]


def _fill_coco_pattern(sims: np.ndarray) -> None:
    """Write the pattern above into a zeroed (5000, 25000) array (only what is non-zero)."""
    for fold in range(5):
        good = 250 * fold
        for g in range(1000):
            image = fold * 1000 + g
            sims[image, 5 * image:5 * image + 5] = [1, -1, -1, -1, -1] if g < good else -1
    # Off-diagonal blocks are never read; large values there would wreck every rank if they were.
    sims[0:1000, 5000:10000] = 2.0
    sims[4000:5000, 0:5000] = 2.0


def test_coco_1k_averages_five_folds() -> None:
    # np.zeros is lazily zeroed memory: only the written pages are materialised.
    sims = np.zeros((5000, 25000), dtype=np.float16)
    _fill_coco_pattern(sims)
    scores = coco_1k_scores(sims)
    assert _as_list(scores) == pytest.approx(COCO_EXPECTED)
    assert scores.rsum == pytest.approx(180.0)
    assert (scores.num_images, scores.num_folds) == (5000, 5)
    # Same as averaging retrieval_scores of the five diagonal blocks by hand.
    folds = [retrieval_scores(sims[f * 1000:(f + 1) * 1000, f * 5000:(f + 1) * 5000]) for f in range(5)]
    assert _as_list(scores) == list(np.array([_as_list(s) for s in folds]).mean(axis=0))


def test_coco_1k_file_round_trip_memory_mapped(tmp_path: Path) -> None:
    path = tmp_path / "sims.npy"
    # A sparse file: only the pages we write take disk space.
    sims = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(5000, 25000))
    _fill_coco_pattern(sims)
    sims.flush()
    del sims
    scores = evaluate_itm_file(path, protocol="coco1k")
    assert _as_list(scores) == pytest.approx(COCO_EXPECTED)
    assert scores.to_dict()["rsum"] == pytest.approx(180.0)


def test_coco_1k_needs_5000_images() -> None:
    with pytest.raises(UserError, match=r"^sims: the COCO 1K protocol needs exactly 5000 images "
                                        r"\(COCO testall\), got 3 \(shape \(3, 15\)\)$"):
        coco_1k_scores(HAND)


# --------------------------------------------------------------------------
# Files and errors
# --------------------------------------------------------------------------

def test_file_round_trip_all_protocol(tmp_path: Path) -> None:
    path = tmp_path / "sims.npy"
    np.save(path, HAND.astype(np.float32))
    scores = evaluate_itm_file(path)
    assert scores == retrieval_scores(HAND)
    assert scores.to_dict() == {
        "i2t_r1": scores.i2t_r1, "i2t_r5": scores.i2t_r5, "i2t_r10": scores.i2t_r10,
        "i2t_medr": 4.0, "i2t_meanr": scores.i2t_meanr, "t2i_r1": scores.t2i_r1, "t2i_r5": 100.0,
        "t2i_r10": 100.0, "t2i_medr": 2.0, "t2i_meanr": scores.t2i_meanr, "rsum": scores.rsum,
        "num_images": 3, "num_folds": 1}
    assert PROTOCOLS == ("all", "coco1k")


def test_file_round_trip_other_captions_per_image(tmp_path: Path) -> None:
    path = tmp_path / "sims.npy"
    np.save(path, np.eye(4))  # one caption per image, each image's own caption best
    scores = evaluate_itm_file(path, captions_per_image=1)
    assert (scores.i2t_r1, scores.t2i_r1, scores.rsum, scores.i2t_medr) == (100.0, 100.0, 600.0, 1.0)


def _file_error(path: Path, **kwargs) -> str:
    with pytest.raises(UserError) as caught:
        evaluate_itm_file(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("array, expected", [
    (HAND[:, :14], "similarity matrix must be N_images x (N_images * 5), captions 5i..5i+4 belonging "
                   "to image i; got shape (3, 14)"),
    (HAND.T, "got shape (15, 3)"),
    (HAND.reshape(-1), "got shape (45,)"),
    (HAND.reshape(3, 15, 1), "got shape (3, 15, 1)"),
    (np.zeros((0, 0)), "got shape (0, 0)"),
    (HAND > 50, "similarities must be integers or floats, got dtype bool"),
    (HAND.astype(np.complex64), "got dtype complex64"),
])
def test_wrong_shape_or_dtype(tmp_path: Path, array: np.ndarray, expected: str) -> None:
    path = tmp_path / "sims.npy"
    np.save(path, array)
    message = _file_error(path)
    assert message.startswith(f"{path}: ") and expected in message


@pytest.mark.parametrize("value, text", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_values(tmp_path: Path, value: float, text: str) -> None:
    sims = HAND.copy()
    sims[2, 7] = value
    path = tmp_path / "sims.npy"
    np.save(path, sims)
    assert _file_error(path) == (f"{path}: similarity matrix has a non-finite value {text} at row 2, "
                                 "column 7")
    with pytest.raises(UserError, match=r"^sims: similarity matrix has a non-finite value"):
        retrieval_scores(sims)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_unreadable_files(tmp_path: Path) -> None:
    good = tmp_path / "good.npy"
    np.save(good, HAND)
    cases = {
        "truncated.npy": good.read_bytes()[:-16],
        "empty.npy": b"",
        "garbage.npy": b"not an npy file at all" * 10,
        "pickle.npy": pickle.dumps(HAND),
    }
    reasons = {"truncated.npy": "", "empty.npy": "(it does not start with numpy's magic bytes)",
               "garbage.npy": "(it does not start with numpy's magic bytes)",
               "pickle.npy": "(it does not start with numpy's magic bytes)"}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert _file_error(path).startswith(f"{path}: not a readable .npy similarity matrix ({reasons[name][1:]}"), name
    missing = tmp_path / "missing.npy"
    assert _file_error(missing) == f"{missing}: similarity file not found"
    assert _file_error(tmp_path).startswith(f"{tmp_path}: is a directory")
    archive = tmp_path / "sims.npz"
    np.savez(archive, sims=HAND)
    assert _file_error(archive).startswith(f"{archive}: is an .npz archive")


def test_object_array_file_runs_nothing(tmp_path: Path) -> None:
    # An object array is a pickle inside the .npy; allow_pickle=False refuses it unread.
    marker = tmp_path / "MARKER"
    path = tmp_path / "sims.npy"
    np.save(path, np.array([[_Payload(str(marker))]], dtype=object), allow_pickle=True)
    assert _file_error(path) == (f"{path}: not a readable .npy similarity matrix (it holds pickled Python "
                                 "objects, which are never loaded)")
    assert not marker.exists()


def test_argument_errors(tmp_path: Path) -> None:
    path = tmp_path / "sims.npy"
    np.save(path, HAND)
    assert _file_error(path, protocol="coco5k") == (
        "unknown retrieval protocol 'coco5k'; valid protocols: all, coco1k")
    assert _file_error(path, captions_per_image=0) == "captions_per_image must be a positive integer, got 0"
    assert _file_error(path, protocol="coco1k").startswith(f"{path}: the COCO 1K protocol needs exactly "
                                                           "5000 images")
    with pytest.raises(UserError, match=r"^sims: similarity matrix must be N_images x \(N_images \* 3\)"):
        retrieval_scores(HAND, captions_per_image=3)
