"""The pretrain task: corpus reading, LXMERT's masking and matching, targets, the loss and the metric."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.errors import UserError
from nas.features import RegionFeatures
from nas.space import fixed_block_factory
from search_spaces.mmnas.space import MmnasConfig, MmnasSpace
from tasks.pretrain.corpus import Sentence, read_corpus, write_corpus
from tasks.pretrain.dataset import IGNORE, Masking, PretrainDataset
from tasks.pretrain.labels import RegionLabels
from tasks.pretrain.task import PretrainConfig, PretrainTask

MASK_ID, FIRST_WORD, VOCAB = 3, 4, 60


def test_corpus_round_trip(tmp_path: Path) -> None:
    sentences = [Sentence("a", "A red cube.", "mscoco", None), Sentence("a", "Is it red?", "vqa", {"yes": 1.0}),
                 Sentence("b", "What colour?", "vqa", {"red": 0.6, "brown": 0.3}),
                 Sentence("a", "Two cubes.", "mscoco", None)]
    write_corpus(tmp_path / "c.json", sentences)
    raw = json.loads((tmp_path / "c.json").read_text())
    assert raw[0] == {"img_id": "a", "labelf": {"vqa": [{"yes": 1.0}]},
                      "sentf": {"mscoco": ["A red cube.", "Two cubes."], "vqa": ["Is it red?"]}}
    assert sorted(read_corpus(tmp_path / "c.json"), key=repr) == sorted(sentences, key=repr)


@pytest.mark.parametrize("data, message", [
    ({"img_id": "a"}, "a JSON list of images"),
    ([["a"]], "entry 0: expected an object"),
    ([{"sentf": {"vqa": ["q?"]}}], "entry 0: img_id must be a non-empty string"),
    ([{"img_id": "a", "sentf": {"vqa": "q?"}}], r"entry 0 \(a\): sentf.vqa must be a list of strings"),
    ([{"img_id": "a", "sentf": {"vqa": ["q?", "r?"]}, "labelf": {"vqa": [{"yes": 1}]}}],
     "labelf.vqa must be a list of 2 label objects"),
    ([{"img_id": "a", "sentf": {"vqa": ["q?"]}, "labelf": {"vqa": [{"yes": -1}]}}],
     r"labelf.vqa\[0\] must map answers to non-negative scores"),
    ([{"img_id": "a", "sentf": {}, "labelf": {"gqa": []}}], "labelf.gqa labels no sentf source"),
])
def test_bad_corpus_entries_are_one_line_errors_naming_file_and_entry(tmp_path: Path, data, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=message) as error:
        read_corpus(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def _dataset(masking: Masking, fixed_seed: int | None = 0, sentences: int = 400, images: int = 40
             ) -> PretrainDataset:
    rng = np.random.default_rng(0)
    regions = 10
    features = RegionFeatures(features=rng.uniform(0.5, 1.5, (images, regions, 8)).astype(np.float32),
                              boxes=np.tile(np.array([0, 0, 10, 10], np.float32), (images, regions, 1)),
                              num_regions=np.full(images, regions, np.int64),
                              image_size=np.tile(np.array([100, 100], np.int64), (images, 1)),
                              image_ids=np.arange(images, dtype=np.int64), directory=Path("."))
    objects = rng.integers(0, 5, (images, regions))
    labels = RegionLabels(objects, np.ones((images, regions), np.float32), objects + 10,
                          np.ones((images, regions), np.float32))
    image_of = np.arange(sentences) % images
    tokens = rng.integers(FIRST_WORD, VOCAB, (sentences, 20))
    tokens[:, 0] = FIRST_WORD + image_of  # the first word names the image, to tell swapped sentences
    tokens[:, 15:] = 0  # padding
    answers = [(np.array([k % 3]), np.array([1.0])) if k % 2 else None for k in range(sentences)]
    return PretrainDataset(tokens, image_of, [(0, i) for i in range(images)], [(features, labels)], answers,
                           MASK_ID, FIRST_WORD, VOCAB, masking, fixed_seed)


def test_word_and_region_masking_follow_bert_and_lxmert() -> None:
    data = _dataset(Masking(mismatch_prob=0.0))
    batch = data.__getitems__(list(range(len(data))))
    original = torch.from_numpy(data.tokens)
    scored = batch["mlm_target"] != IGNORE
    words = original != 0
    assert abs(scored.sum() / words.sum() - 0.15) < 0.02 and not (scored & ~words).any()
    assert torch.equal(batch["mlm_target"][scored], original[scored])  # targets are the original words
    assert torch.equal(batch["tokens"][~scored], original[~scored])  # unmasked words are untouched
    changed = batch["tokens"][scored]
    as_mask = (changed == MASK_ID).float().mean()
    kept = (changed == original[scored]).float().mean()
    assert abs(as_mask - 0.8) < 0.05 and abs(kept - 0.1) < 0.04 and 0.05 < 1 - as_mask - kept < 0.15
    assert ((changed == MASK_ID) | (changed >= FIRST_WORD)).all()

    masked = batch["region_masked"]
    assert abs(masked.float().mean() - 0.15) < 0.02
    assert (batch["features"][masked] == 0).all() and (batch["features"][~masked] > 0).all()
    rows = torch.from_numpy(np.asarray(data.images)[data.image_of][:, 1])
    truth = torch.from_numpy(data.sources[0][0].features)[rows]  # (S, N, D)
    assert torch.equal(batch["feature_target"], truth)  # the features before masking, masked ones too
    objects = torch.from_numpy(data.sources[0][1].objects)[rows]
    assert torch.equal(batch["object_target"][masked], objects[masked])
    assert (batch["object_target"][~masked] == IGNORE).all() and (batch["attr_target"][~masked] == IGNORE).all()
    assert torch.equal(batch["attr_target"][masked], objects[masked] + 10)
    assert (batch["matched"] == 1).all()
    # Questions with an answer are scored, captions are not.
    assert batch["answer_target"].tolist() == [k % 3 if k % 2 else IGNORE for k in range(len(data))]


def test_matching_swaps_half_the_sentences_for_another_images_and_scores_nothing_else_on_them() -> None:
    data = _dataset(Masking(token_prob=0.0, mismatch_prob=0.5))
    batch = data.__getitems__(list(range(len(data))))
    matched = batch["matched"] == 1
    assert abs(matched.float().mean() - 0.5) < 0.08
    first_word = batch["tokens"][:, 0] - FIRST_WORD
    image = torch.from_numpy(data.image_of)
    assert torch.equal(first_word[matched], image[matched])
    assert (first_word[~matched] != image[~matched]).all()
    assert (batch["mlm_target"][~matched] == IGNORE).all() and not batch["region_masked"][~matched].any()
    assert (batch["answer_target"][~matched] == IGNORE).all()
    assert batch["region_masked"][matched].any()
    # With score_mismatched (LXMERT's code), swapped pairs keep their masked regions.
    lxmert = _dataset(Masking(token_prob=0.0, mismatch_prob=1.0, score_mismatched=True))
    swapped = lxmert.__getitems__(list(range(len(lxmert))))
    assert (swapped["matched"] == 0).all() and swapped["region_masked"].any()


def test_evaluation_masks_are_fixed_and_training_masks_are_fresh() -> None:
    fixed = _dataset(Masking())
    a, b = fixed.__getitems__([3, 4, 5]), fixed.__getitems__([5, 3])
    assert torch.equal(a["tokens"][2], b["tokens"][0]) and torch.equal(a["matched"][[2, 0]], b["matched"])
    fresh = _dataset(Masking(), fixed_seed=None)
    draws = [fresh.__getitems__(list(range(50)))["tokens"] for _ in range(2)]
    assert not torch.equal(*draws)


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory: pytest.TempPathFactory) -> tuple[PretrainTask, object]:
    from nas.synth import SynthPretrainConfig, generate_pretrain
    from tasks.pretrain.task import SYNTH_SIZES

    root = tmp_path_factory.mktemp("corpus")
    generate_pretrain(root / "data", SynthPretrainConfig(**SYNTH_SIZES["tiny"]), progress=False)
    (root / "run").mkdir()
    task = PretrainTask(PretrainConfig(data_dir=str(root / "data"), cache_dir=str(root / "cache")), root / "run",
                        progress=False)
    return task, task.prepare(["mscoco_train", "mscoco_minival"])


def test_the_loss_falls_on_a_fixed_batch_and_the_metric_counts_each_objective(tiny_task) -> None:
    task, data = tiny_task
    assert task.vocab["MASK"] == 3 and task.num_objects == 5 and task.num_attrs == 9 and task.answers
    torch.manual_seed(0)
    space = MmnasSpace(MmnasConfig(hidden=32, head_dim=16, relation_dim=16, enc_blocks=1, dec_blocks=2))
    choices = {"enc/0": "self_att", "dec/0": "rel_self_att", "dec/1": "guided_att"}
    model = space.build_model(data.meta, task.build_head(32, data.meta), fixed_block_factory(choices))
    val = data.splits["mscoco_minival"]
    batch = val.__getitems__(list(range(32)))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = task.loss(model(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():
        predictions = task.predict(model(batch), batch)
    metrics = task.evaluate("mscoco_minival", val, predictions)
    words = int((batch["mlm_target"] != IGNORE).sum())
    assert sum(p["mlm"][1] for p in predictions) == words and metrics["samples"] == 32
    assert metrics["match_accuracy"] > 80 and metrics["mlm_accuracy"] > 50  # memorised
    shown = [metrics[f"{k}_accuracy"] for k in ("mlm", "object", "match", "qa")]
    assert metrics["accuracy"] == pytest.approx(sum(shown) / 4, abs=0.01)
    baseline = task.baseline(data.splits["mscoco_train"], "mscoco_minival", val)
    assert baseline["match_accuracy"] == pytest.approx(100 * float((val.__getitems__(
        list(range(len(val))))["matched"] == 1).float().mean()), abs=0.01)


def test_unknown_splits_and_missing_features_are_one_line_errors(tiny_task, tmp_path: Path) -> None:
    task, _ = tiny_task
    with pytest.raises(UserError, match="unknown pre-training split 'coco'. Valid splits: mscoco_train"):
        task.prepare(["coco"])
    with pytest.raises(UserError, match="task.mismatch_prob=2"):
        PretrainTask(PretrainConfig(mismatch_prob=2.0), tmp_path)
    with pytest.raises(UserError, match="task.qa_fusion: unknown value 'max'. Valid: sum, product"):
        PretrainTask(PretrainConfig(qa_fusion="max"), tmp_path)


def test_qa_fusion_product_adds_the_pooled_product_to_the_answer_logits_only(tmp_path: Path) -> None:
    from nas.task import TaskMeta

    meta = TaskMeta(vocab_size=VOCAB, feature_dim=8, num_outputs=2)
    heads = {}
    for fusion in ("sum", "product"):
        torch.manual_seed(0)
        heads[fusion] = PretrainTask(PretrainConfig(qa_fusion=fusion, flat_mlp=16), tmp_path).build_head(32, meta)
        heads[fusion].eval()
    torch.manual_seed(1)
    text, image = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    keep_text, keep_image = torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 7, dtype=torch.bool)
    sum_out, product_out = (heads[f](text, keep_text, image, keep_image) for f in ("sum", "product"))
    pooled_text = heads["sum"].text_pool(text, keep_text)
    pooled_image = heads["sum"].image_pool(image, keep_image)
    expected = heads["sum"].classifier(heads["sum"].norm(pooled_text + pooled_image + pooled_text * pooled_image))
    torch.testing.assert_close(product_out["answers"], expected)
    assert not torch.allclose(sum_out["answers"], expected)
    for key in ("words", "objects", "match"):  # the other objectives are the same either way
        torch.testing.assert_close(sum_out[key], product_out[key])


def test_the_metric_leaves_out_objectives_that_are_not_trained(tmp_path: Path) -> None:
    predictions = [{"index": 0, "mlm": [1, 4], "object": [2, 2], "attr": [0, 1], "match": [1, 1], "qa": [0, 1]},
                   {"index": 1, "mlm": [3, 4], "object": [0, 2], "attr": [1, 1], "match": [0, 1], "qa": [0, 0]}]
    every = PretrainTask(PretrainConfig(), tmp_path).evaluate("val", None, predictions)
    assert every == {"mlm_accuracy": 50.0, "object_accuracy": 50.0, "attr_accuracy": 50.0, "match_accuracy": 50.0,
                     "qa_accuracy": 0.0, "accuracy": 37.5, "samples": 2}
    qa_only = PretrainTask(PretrainConfig(mlm_weight=0, object_weight=0, mismatch_prob=0), tmp_path).evaluate(
        "val", None, predictions)
    assert qa_only == {"attr_accuracy": 50.0, "qa_accuracy": 0.0, "accuracy": 0.0, "samples": 2}
