"""The caption task with the unified space: data, the captioner's passes, self-critical loss, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nas.errors import UserError
from nas.space import fixed_block_factory
from search_spaces.unified import UnifiedConfig, UnifiedSpace
from tasks.caption.metrics import CiderD, tokenize_caption
from tasks.caption.task import CaptionConfig, CaptionTask
from tasks.caption.vocab import SPECIAL, decode_caption, encode_captions

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    run = tmp_path_factory.mktemp("caption-run")
    task = CaptionTask(CaptionConfig(synth_size="tiny", word_min_count=1, beam_size=2), run, progress=False)
    return task, task.prepare(["train", "val", "test"])


def tiny_model(task: CaptionTask, meta, **space_options):
    space = UnifiedSpace(UnifiedConfig(hidden=16, head_dim=8, ffn_mult=2, relation_dim=4, dropout=0.0, layers=2,
                                       **space_options))
    choices = {**space.prior(), "layer/1/attention": "rel_self_att"}
    torch.manual_seed(0)
    return space.build_model(meta, task.build_head(16, meta), fixed_block_factory(choices))


def test_splits_vocabulary_and_batches(prepared) -> None:
    task, data = prepared
    train, val, test = (data.splits[s] for s in ("train", "val", "test"))
    assert len(train) == 60 * 5 and len(task.evaluation_view(val)) == 20 and len(task.evaluation_view(test)) == 20
    batch = train.__getitems__(list(range(6)))
    tokens = batch["tokens"]
    assert (tokens[:, 0] == SPECIAL.bos).all() and ((tokens == SPECIAL.eos).sum(1) == 1).all()
    # Word ids round-trip to the tokenised reference (every word is in the vocabulary at word_min_count=1).
    image = int(batch["image_id"][0])
    assert decode_caption(tokens[0, 1:].tolist(), task.words) == tokenize_caption(
        task.splits["train"].references[image][0])
    assert batch["question_tokens"].shape[0] == 6 and batch["target"].shape == (6, len(task.answers))
    assert (batch["target"].sum(1) > 0).sum() >= 3  # tiny data: some answers are too rare for the vocabulary
    view = task.evaluation_view(val)
    images = view.__getitems__(list(range(len(view))))
    asked = images["question_id"][images["question_id"] >= 0].tolist()
    assert sorted(asked) == sorted(task.splits["val"].questions.question_ids.tolist())  # each once
    assert task.is_labelled(val) and not task.is_labelled(test)


def test_teacher_forced_logits_are_the_decoders_step_logits(prepared) -> None:
    """Training's sequence-to-sequence pass and the step function beam search calls must agree: a
    mask that leaked a later word would make them differ."""
    task, data = prepared
    model = tiny_model(task, data.meta, seq2seq_probability=1.0).train()
    batch = data.splits["train"].__getitems__([0, 7])
    outputs = model(batch)
    assert outputs["objective"] == "seq2seq"
    tokens = batch["tokens"]
    lengths = (tokens != SPECIAL.pad).sum(1)
    model.eval()
    image, keep, relation = model._image(batch)
    step = model.step_function(image, keep, relation)
    expected = []
    for row in range(2):
        for t in range(1, int(lengths[row])):  # predict token t from tokens < t
            expected.append(step(tokens[row:row + 1, :t], torch.tensor([row]))[0])
    log_probs = torch.log_softmax(outputs["word_logits"], dim=-1)
    assert log_probs.shape == (len(expected), len(task.words))
    assert torch.allclose(log_probs, torch.stack(expected), atol=1e-5)
    assert outputs["word_targets"].tolist() == [int(tokens[r, t]) for r in range(2)
                                                for t in range(1, int(lengths[r]))]


def test_masked_lm_hides_words_only_and_predicts_the_originals(prepared) -> None:
    task, data = prepared
    model = tiny_model(task, data.meta, seq2seq_probability=0.0, mask_probability=0.3).train()
    batch = data.splits["train"].__getitems__(list(range(64)))
    torch.manual_seed(1)
    inputs, targets = model._hide_words(batch["tokens"])
    hidden = targets != -100
    words = batch["tokens"] >= SPECIAL.first_word
    assert (hidden <= words).all() and (hidden.sum(1) >= 1).all()
    assert 0.2 < hidden.sum() / words.sum() < 0.4
    assert torch.equal(targets[hidden], batch["tokens"][hidden])
    assert torch.equal(inputs[~hidden], batch["tokens"][~hidden])
    assert 0.7 < float((inputs[hidden] == SPECIAL.mask).float().mean()) < 0.9  # BERT's 80% [MASK]
    outputs = model(batch)
    assert outputs["objective"] == "mlm" and outputs["word_logits"].shape[1] == len(task.words)


def test_self_critical_loss_pushes_up_a_sample_better_than_greedy(prepared) -> None:
    task, data = prepared
    split = task.splits["train"]
    image = split.image_ids[0]
    reference = tokenize_caption(split.references[image][0]).split()
    vocab = {word: k for k, word in enumerate(task.words)}
    good = torch.from_numpy(encode_captions([reference], vocab, 20))[:, 1:]  # no BOS
    bad = torch.from_numpy(encode_captions([reference[:2]], vocab, 20))[:, 1:]
    log_prob = torch.tensor([-3.0, -3.0], requires_grad=True)
    outputs = {"objective": "scst", "sample_tokens": torch.cat([_pad(good, bad), _pad(bad, good)]),
               "greedy_tokens": torch.cat([_pad(bad, good), _pad(good, bad)]), "sample_log_prob": log_prob,
               "samples_per_image": 1}
    loss = task.loss(outputs, {"image_id": torch.tensor([image, image])})
    loss.backward()
    cider = CiderD({i: [tokenize_caption(c) for c in refs] for i, refs in split.references.items()})
    high, low = cider.score_one(image, " ".join(reference)), cider.score_one(image, " ".join(reference[:2]))
    assert high > low
    # d loss / d log p = -(reward(sample) - reward(greedy)), per row
    assert log_prob.grad.tolist() == pytest.approx([-(high - low), high - low], rel=1e-6)

    # Three samples per image: each sample's baseline is the mean reward of the other two, and the
    # advantage is shared out over the image's samples.
    middle_words = reference[:max(3, len(reference) - 2)]
    middle = torch.from_numpy(encode_captions([middle_words], vocab, 20))[:, 1:]
    log_prob = torch.full((3,), -3.0, requires_grad=True)
    width = max(good.shape[1], bad.shape[1], middle.shape[1])
    rows = [torch.nn.functional.pad(row, (0, width - row.shape[1]), value=SPECIAL.pad) for row in (good, bad, middle)]
    outputs = {"objective": "scst", "sample_tokens": torch.cat(rows), "sample_log_prob": log_prob,
               "samples_per_image": 3}
    task.loss(outputs, {"image_id": torch.tensor([image])}).backward()
    mid = cider.score_one(image, " ".join(middle_words))
    rewards = [high, low, mid]
    expected = [-(r - (sum(rewards) - r) / 2) / 3 for r in rewards]
    assert log_prob.grad.tolist() == pytest.approx(expected, rel=1e-6)
    assert sum(expected) == pytest.approx(0.0, abs=1e-9)  # mean-of-others advantages cancel per image


def test_self_critical_pass_draws_k_samples_per_image_and_backpropagates(prepared) -> None:
    task, data = prepared
    batch = data.splits["train"].__getitems__([0, 7])
    for samples in (1, 3):
        model = tiny_model(task, data.meta).train()
        model.head.scst, model.head.scst_samples = True, samples
        outputs = model(batch)
        assert outputs["objective"] == "scst" and outputs["sample_tokens"].shape[0] == 2 * samples
        assert ("greedy_tokens" in outputs) == (samples == 1)  # more samples need no greedy baseline
        assert outputs["sample_log_prob"].shape == (2 * samples,) and model.training
        loss = task.loss(outputs, batch)
        loss.backward()
        assert torch.isfinite(loss)
        assert model.backbone.attention[1].relation_to_heads.weight.grad is not None


def _pad(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    width = max(a.shape[1], b.shape[1])
    return torch.nn.functional.pad(a, (0, width - a.shape[1]), value=SPECIAL.pad)


def test_predictions_metrics_and_results_files(prepared, tmp_path: Path) -> None:
    task, data = prepared
    val = data.splits["val"]
    references = task.splits["val"].references
    perfect = [{"image_id": i, "caption": tokenize_caption(refs[0])} for i, refs in references.items()]
    answers = [{"question_id": int(q), "answer": task.annotations[int(q)]["multiple_choice_answer"]}
               for q in task.splits["val"].questions.question_ids]
    metrics = task.evaluate("val", val, perfect + answers)
    assert metrics["bleu_1"] > 80 and metrics["cider_d"] > 200 and metrics["vqa_accuracy"] > 90
    shuffled = [{"image_id": p["image_id"], "caption": perfect[(k + 1) % len(perfect)]["caption"]}
                for k, p in enumerate(perfect)]
    assert task.evaluate("val", val, shuffled)["cider_d"] < metrics["cider_d"] / 2
    path = tmp_path / "caption_val_results.json"
    with pytest.raises(UserError, match="refusing to write an incomplete submission"):
        task.write_results(perfect[1:] + answers, path, val)
    assert not path.exists()
    task.write_results(perfect + answers, path, val)
    assert len(json.loads(path.read_text())) == 20
    assert len(json.loads((tmp_path / "vqa_val_results.json").read_text())) == len(answers)


def test_search_retrain_evaluate_and_a_space_that_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nas.cli.main import main

    smoke = ["--config", "smoke", "--quiet", "task.synth_size=tiny", "task.beam_size=2", "task.word_min_count=1"]
    search, retrain = tmp_path / "search", tmp_path / "retrain"
    assert main(["search", "--task", "caption", "--space", "unified", "--out", str(search), *smoke]) == 0
    genotype = json.loads((search / "genotype.json").read_text())
    assert genotype["space"] == "unified" and genotype["task"] == "caption"
    assert main(["retrain", "--genotype", str(search / "genotype.json"), "--out", str(retrain), *smoke,
                 "train.epochs=1"]) == 0
    summary = json.loads((retrain / "summary.json").read_text())
    assert {"cider_d", "bleu_4", "rouge_l", "vqa_accuracy"} <= set(summary["final"])
    assert summary["baseline"]["rule"].startswith("nearest-neighbour caption; majority answer")
    results = json.loads(Path(summary["results_file"]).read_text())
    assert len(results) == 20 and all(isinstance(r["caption"], str) for r in results)
    assert (retrain / "results" / "vqa_test_results.json").is_file()
    # Self-critical fine-tuning from the cross-entropy checkpoint.
    assert main(["retrain", "--genotype", str(search / "genotype.json"), "--out", str(tmp_path / "scst"), *smoke,
                 "train.epochs=1", "task.scst=true", "--init", str(retrain / "checkpoints" / "last.pt")]) == 0
    capsys.readouterr()
    references = Path(summary["data_dir"]) / "annotations" / "captions_val2014.json"
    val_results = tmp_path / "val_results.json"
    val_results.write_text(json.dumps([{"image_id": i, "caption": "a red cube"} for i in
                                       sorted({a["image_id"] for a in json.loads(references.read_text())[
                                           "annotations"]})]))
    assert main(["evaluate", "--task", "caption", "--json", "--references", str(references),
                 "--results", str(val_results), "--no-java"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["num_images"] == 20 and 0 < scores["Bleu_1"] < 100
    assert scores["METEOR"] == scores["SPICE"] == "unavailable: --no-java"
    assert main(["search", "--task", "caption", "--space", "mmnas", "--out", str(tmp_path / "x"), *smoke]) == 2
    assert "task 'caption' writes text" in capsys.readouterr().err


@pytest.mark.parametrize("setting,expected", [
    ("task.dataset=coco2017", "task.dataset: unknown value 'coco2017'. Valid: coco, flickr30k"),
    ("task.beam_size=0", "task.beam_size=0: must be at least 1"),
    ("task.vqa_weight=-1", "task.vqa_weight=-1.0: must be >= 0"),
    ("task.max_decode_length=1", "task.max_decode_length=1: must be at least 2"),
    ("space.mask_probability=1.0", "space.mask_probability=1.0: must be in [0, 1)"),
])
def test_bad_settings_are_one_line_errors(setting: str, expected: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    from nas.cli.main import main

    assert main(["search", "--task", "caption", "--space", "unified", "--config", "smoke", "--quiet",
                 "--out", str(tmp_path / "run"), setting]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"nas: error: {expected}"


def test_the_flickr30k_layout_trains_captions_only(tmp_path: Path) -> None:
    task = CaptionTask(CaptionConfig(dataset="flickr30k", synth_size="tiny", word_min_count=1), tmp_path,
                       progress=False)
    data = task.prepare(["train", "val", "test"])
    assert data.meta.num_outputs == 0 and task.build_head(16, data.meta).answers is None
    assert all(task.splits[s].questions is None for s in ("train", "val", "test"))
    assert task.is_labelled(data.splits["test"])  # Karpathy's test split has references
    batch = data.splits["train"].__getitems__([0, 1])
    assert "question_tokens" not in batch and batch["tokens"].shape[0] == 2
    model = tiny_model(task, data.meta).eval()
    view = task.evaluation_view(data.splits["test"])
    with torch.no_grad():
        outputs = model(view.__getitems__(list(range(len(view)))))
    assert "answer_logits" not in outputs
    predictions = task.predict(outputs, {"image_id": torch.tensor(view.image_ids)})
    metrics = task.evaluate("test", data.splits["test"], predictions)
    assert set(metrics) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d"}
