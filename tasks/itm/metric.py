"""Official image-text retrieval metrics (R@1/5/10, medr, meanr, rsum) as in SCAN.

Source of the rules: kuanghuei/SCAN@806355736e ``evaluation.py``
(``i2t``, ``t2i`` and the ``fold5`` branch of ``evalrank``). ``sims`` is the
(N_images, N_images * 5) image-caption similarity matrix and caption ``j``
belongs to image ``j // 5``.

* Image -> text: image ``i``'s rank is the best (lowest, 0-based) position of
  any of captions ``5i .. 5i+4`` when its row is sorted by decreasing score.
* Text -> image: caption ``j``'s rank is the position of image ``j // 5`` when
  its column is sorted by decreasing score.
* ``R@K = 100.0 * #(rank < K) / #queries``; ``medr = floor(median(rank)) + 1``;
  ``meanr = mean(rank) + 1``; ``rsum`` = the three i2t recalls + the three t2i
  recalls. Each is computed with the same expression as SCAN, so the floats
  are the same bits.
* COCO 1K: five folds of 1000 images and their 5000 captions
  (``sims[1000f:1000(f+1), 5000f:5000(f+1)]``); every metric is the mean over
  the folds (``np.array(results).mean(axis=0)``, as SCAN). SCAN's printout of
  the fold mean indexes the wrong columns: its "rsum" is ``6 * mean(ar)``
  (twice the i2t recall sum), its "Average i2t Recall" is the t2i average and
  its "Average t2i Recall" is the mean rsum. We report ``rsum`` as the sum of
  the six fold-averaged recalls. Similarities outside the five diagonal blocks
  are not read (SCAN never computes them).

Ties. SCAN sorts with ``numpy.argsort(sims[i])[::-1]``: the default, unstable
sort, then reversed. Which of two equal scores comes first is therefore up to
numpy's sort implementation (on numpy 2.4 with AVX2 it is not stable even for
10 elements); where the sort happens to be stable the reversal puts the
*higher* index first. We define ties instead: equal scores are ordered by
*lower* index first, exactly as ``numpy.argsort(-sims[i], kind="stable")``.
So an item's rank is ``#(scores > its score) + #(equal scores at lower
indexes)``, which is what we count (no full sort, so a 5000 x 25000 matrix
takes about a second). Without ties the result equals SCAN's.

Similarity file (our format): the matrix saved with ``numpy.save`` as a
``.npy`` file (any integer or floating dtype, no pickled objects). It is
memory-mapped, so large matrices are read in row chunks.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from nas.errors import UserError

__all__ = [
    "COCO_1K_FOLDS",
    "COCO_1K_IMAGES",
    "PROTOCOLS",
    "RetrievalScores",
    "coco_1k_scores",
    "evaluate_itm_file",
    "retrieval_scores",
]

PROTOCOLS: tuple[str, ...] = ("all", "coco1k")
COCO_1K_FOLDS = 5
COCO_1K_IMAGES = 5000  # COCO testall; each fold has 1000 images
_RECALL_AT = (1, 5, 10)
# Rows per chunk are chosen so a chunk holds about this many entries; it bounds
# the temporary boolean arrays to a few tens of MB.
_CHUNK_ENTRIES = 1 << 22


@dataclass(frozen=True)
class RetrievalScores:
    """Recalls in percent, median and mean rank 1-based; fold means for COCO 1K."""

    i2t_r1: float
    i2t_r5: float
    i2t_r10: float
    i2t_medr: float
    i2t_meanr: float
    t2i_r1: float
    t2i_r5: float
    t2i_r10: float
    t2i_medr: float
    t2i_meanr: float
    rsum: float
    num_images: int  # images evaluated in all (5000 for COCO 1K)
    num_folds: int = 1

    def to_dict(self) -> dict:
        return {field.name: getattr(self, field.name) for field in fields(self)}


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------

def _check_captions_per_image(captions_per_image: Any) -> int:
    if (isinstance(captions_per_image, bool) or not isinstance(captions_per_image, (int, np.integer))
            or captions_per_image < 1):
        raise UserError(f"captions_per_image must be a positive integer, got {captions_per_image!r}")
    return int(captions_per_image)


def _check_matrix(sims: Any, captions_per_image: int, source: str) -> np.ndarray:
    """Shape and dtype checks; finiteness is checked chunk by chunk while ranking."""
    if not isinstance(sims, np.ndarray):
        try:
            sims = np.asarray(sims)
        except (TypeError, ValueError):
            raise UserError(f"{source}: similarities must be a 2-D array of numbers") from None
    if sims.dtype.kind not in "iuf":
        raise UserError(f"{source}: similarities must be integers or floats, got dtype {sims.dtype}")
    cpi = captions_per_image
    if sims.ndim != 2 or sims.shape[0] == 0 or sims.shape[1] != sims.shape[0] * cpi:
        raise UserError(f"{source}: similarity matrix must be N_images x (N_images * {cpi}), "
                        f"captions {cpi}i..{cpi}i+{cpi - 1} belonging to image i; got shape "
                        f"{tuple(sims.shape)}")
    return sims


def _check_finite(chunk: np.ndarray, first_row: int, source: str) -> None:
    if chunk.dtype.kind != "f":
        return
    bad = ~np.isfinite(chunk)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise UserError(f"{source}: similarity matrix has a non-finite value "
                        f"{float(chunk[row, col])} at row {first_row + int(row)}, column {int(col)}")


# --------------------------------------------------------------------------
# Ranks and metrics
# --------------------------------------------------------------------------

def _ranks(sims: np.ndarray, cpi: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """0-based i2t ranks (one per image) and t2i ranks (one per caption), ties lower-index first."""
    n_img, n_cap = sims.shape
    caption_ids = np.arange(n_cap)
    owner = caption_ids // cpi
    # Each caption's score with its own image, and each image's best own
    # caption (argmax takes the first of equal maxima = the lowest index, the
    # one that a stable sort puts first among the image's captions).
    own_score = np.empty(n_cap, dtype=sims.dtype)
    best_col = np.empty(n_img, dtype=np.int64)
    i2t = np.empty(n_img, dtype=np.int64)
    t2i = np.zeros(n_cap, dtype=np.int64)
    step = max(1, _CHUNK_ENTRIES // n_cap)
    chunks = [(start, min(start + step, n_img)) for start in range(0, n_img, step)]
    for start, stop in chunks:
        chunk = np.asarray(sims[start:stop])
        _check_finite(chunk, start, source)
        block = chunk[:, start * cpi:stop * cpi].reshape(stop - start, stop - start, cpi)
        local = np.arange(stop - start)
        own = block[local, local]  # (rows, cpi): each image's own captions
        own_score[start * cpi:stop * cpi] = own.reshape(-1)
        best_col[start:stop] = np.arange(start, stop) * cpi + own.argmax(axis=1)
    best_score = own_score[best_col]
    for start, stop in chunks:
        chunk = np.asarray(sims[start:stop])
        rows = np.arange(start, stop)
        # i2t: entries above the best own caption, plus equal ones to its left.
        best = best_score[start:stop, None]
        i2t[start:stop] = ((chunk > best).sum(axis=1)
                           + ((chunk == best) & (caption_ids[None, :] < best_col[start:stop, None])).sum(axis=1))
        # t2i: images above the caption's own image, plus equal ones before it.
        t2i += (chunk > own_score[None, :]).sum(axis=0)
        t2i += ((chunk == own_score[None, :]) & (rows[:, None] < owner[None, :])).sum(axis=0)
    return i2t, t2i


def _metrics(ranks: np.ndarray) -> tuple[float, float, float, float, float]:
    # SCAN keeps ranks in a float64 array; mean() of that is what we must match.
    ranks = ranks.astype(np.float64)
    recalls = [100.0 * int(np.count_nonzero(ranks < k)) / len(ranks) for k in _RECALL_AT]
    medr = float(np.floor(np.median(ranks)) + 1)
    meanr = float(ranks.mean() + 1)
    return recalls[0], recalls[1], recalls[2], medr, meanr


def _fold_metrics(sims: np.ndarray, cpi: int, source: str) -> list[float]:
    i2t_ranks, t2i_ranks = _ranks(sims, cpi, source)
    return [*_metrics(i2t_ranks), *_metrics(t2i_ranks)]


def _scores(values: list[float], num_images: int, num_folds: int) -> RetrievalScores:
    r1, r5, r10, medr, meanr, ri1, ri5, ri10, medri, meanri = (float(v) for v in values)
    return RetrievalScores(
        i2t_r1=r1, i2t_r5=r5, i2t_r10=r10, i2t_medr=medr, i2t_meanr=meanr,
        t2i_r1=ri1, t2i_r5=ri5, t2i_r10=ri10, t2i_medr=medri, t2i_meanr=meanri,
        # Same order of additions as SCAN's rsum.
        rsum=r1 + r5 + r10 + ri1 + ri5 + ri10,
        num_images=num_images, num_folds=num_folds)


def retrieval_scores(sims: np.ndarray, captions_per_image: int = 5) -> RetrievalScores:
    """SCAN's i2t and t2i metrics over all images at once (F30K 1K test, COCO 5K)."""
    cpi = _check_captions_per_image(captions_per_image)
    sims = _check_matrix(sims, cpi, "sims")
    return _scores(_fold_metrics(sims, cpi, "sims"), num_images=sims.shape[0], num_folds=1)


def coco_1k_scores(sims: np.ndarray, captions_per_image: int = 5) -> RetrievalScores:
    """COCO 1K: the mean of the metrics of five 1000-image folds of a 5000-image matrix."""
    return _coco_1k(sims, _check_captions_per_image(captions_per_image), "sims")


def _coco_1k(sims: Any, cpi: int, source: str) -> RetrievalScores:
    sims = _check_matrix(sims, cpi, source)
    if sims.shape[0] != COCO_1K_IMAGES:
        raise UserError(f"{source}: the COCO 1K protocol needs exactly {COCO_1K_IMAGES} images "
                        f"(COCO testall), got {sims.shape[0]} (shape {tuple(sims.shape)})")
    size = COCO_1K_IMAGES // COCO_1K_FOLDS
    rows = []
    for fold in range(COCO_1K_FOLDS):
        block = sims[fold * size:(fold + 1) * size, fold * size * cpi:(fold + 1) * size * cpi]
        rows.append(_fold_metrics(block, cpi, f"{source} (COCO 1K fold {fold})"))
    # Same reduction as SCAN's np.array(results).mean(axis=0).
    means = np.array(rows).mean(axis=0)
    return _scores(list(means), num_images=COCO_1K_IMAGES, num_folds=COCO_1K_FOLDS)


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

def _load_npy(path: str | os.PathLike) -> np.ndarray:
    if not os.path.exists(path):
        raise UserError(f"{path}: similarity file not found")
    if os.path.isdir(path):
        raise UserError(f"{path}: is a directory, expected a .npy similarity file")
    if zipfile.is_zipfile(path):
        raise UserError(f"{path}: is an .npz archive; save the similarity matrix with numpy.save "
                        "as one .npy array")
    with open(path, "rb") as handle:
        if handle.read(6) != b"\x93NUMPY":  # numpy would guess it is a pickle and say so
            raise UserError(f"{path}: not a readable .npy similarity matrix (it does not start with "
                            "numpy's magic bytes)")
    try:
        # allow_pickle=False: a similarity file must never be able to run code.
        loaded = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        detail = " ".join(str(error).split())
        if "pickled" in detail or "Python objects" in detail:
            detail = "it holds pickled Python objects, which are never loaded"
        raise UserError(f"{path}: not a readable .npy similarity matrix ({detail})") from None
    if not isinstance(loaded, np.ndarray):
        raise UserError(f"{path}: expected a .npy array, got {type(loaded).__name__}")
    return loaded


def evaluate_itm_file(sims_path: str | os.PathLike, captions_per_image: int = 5,
                      protocol: str = "all") -> RetrievalScores:
    """Retrieval metrics of a similarity matrix saved with ``numpy.save``.

    Args:
        sims_path: ``.npy`` file holding the (N, N * captions_per_image) matrix.
        captions_per_image: captions per image, consecutive in column order.
        protocol: ``"all"`` (every image at once: F30K 1K test, COCO 5K) or
            ``"coco1k"`` (five folds of 1000 images; needs exactly 5000 images).
    """
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown retrieval protocol {protocol!r}; valid protocols: "
                        f"{', '.join(PROTOCOLS)}")
    cpi = _check_captions_per_image(captions_per_image)
    sims = _load_npy(sims_path)
    source = str(sims_path)
    try:
        if protocol == "coco1k":
            return _coco_1k(sims, cpi, source)
        sims = _check_matrix(sims, cpi, source)
        return _scores(_fold_metrics(sims, cpi, source), num_images=sims.shape[0], num_folds=1)
    except OSError as error:  # an I/O error while paging in the memory map
        raise UserError(f"{source}: cannot read the similarity file ({error.strerror or error})") from None
