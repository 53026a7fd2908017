"""train.init / --init: a retrain starts from a pre-trained checkpoint's embedding and backbone, word rows
matched by token; another genotype or space is refused; the CLI path nas data synth -> nas pretrain ->
nas retrain --init, and a resumed run does not apply the init again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nas.checkpoint import save_checkpoint
from nas.config import Layer, config_to_dict, resolve_config
from nas.errors import UserError
from nas.genotype import genotype_from_dict
from nas.heads import FusionHead
from nas.pretrained import POOLER, TRANSFERRED, init_from_checkpoint
from nas.registry import SPACES
from nas.space import fixed_block_factory
from nas.task import TaskMeta
from nas.text import build_vocab
from tasks.pretrain.head import PretrainHead

CHOICES = {"enc/0": "self_att", "enc/1": "feed_forward", "dec/0": "rel_self_att", "dec/1": "guided_att",
           "dec/2": "feed_forward"}
SPACE = {"name": "mmnas", "hidden": 32, "head_dim": 16, "relation_dim": 16, "word_dim": 12}


def _config(task: str = "gqa", **space):
    return resolve_config([Layer("test", {"task": {"name": task}, "strategy": {"name": "mmnas"},
                                          "space": {**SPACE, "enc_blocks": 2, "dec_blocks": 3, **space}})])


def _genotype(**changes):
    return genotype_from_dict({"format": "vlnas-genotype", "version": 1, "space": "mmnas", "task": "gqa",
                               "choices": {**CHOICES, **changes}}, "test")


def _model(config, vocab: dict[str, int], head: torch.nn.Module, seed: int):
    torch.manual_seed(seed)
    meta = TaskMeta(vocab_size=len(vocab), feature_dim=8, num_outputs=3)
    return SPACES.get("mmnas")(config.space).build_model(meta, head, fixed_block_factory(CHOICES))


@pytest.fixture()
def pretrained(tmp_path: Path) -> tuple[Path, torch.nn.Module, dict[str, int]]:
    """A pretrain-like run directory: vocab.json and checkpoints/best.pt as nas retrain writes them."""
    vocab = build_vocab([["MASK", "a", "red", "cube", "left", "of", "sphere"]])
    config = _config("pretrain")
    model = _model(config, vocab, PretrainHead(32, len(vocab), 5, 9, 8, 4, 16, 0.0), seed=1)
    run = tmp_path / "pt"
    (run / "checkpoints").mkdir(parents=True)
    (run / "vocab.json").write_text(json.dumps(vocab))
    save_checkpoint({"model": model.state_dict(), "genotype": _genotype().to_dict(),
                     "config": config_to_dict(config)}, run / "checkpoints" / "best.pt")
    return run / "checkpoints" / "best.pt", model, vocab


def test_embedding_backbone_and_pooler_are_copied_word_rows_by_token_and_the_outputs_are_not(
        pretrained, tmp_path: Path) -> None:
    path, source, source_vocab = pretrained
    vocab = build_vocab([["is", "the", "cube", "red", "what", "sphere"]])  # 3 of 6 words known, other ids
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    target = _model(_config(), vocab, FusionHead(32, 16, 3, dropout=0.0), seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = init_from_checkpoint(target, path, _genotype(), _config(), tmp_path)
    after, saved = target.state_dict(), source.state_dict()
    assert report.words_copied == 3 + 3 and report.words == len(vocab) == 9  # PAD, UNK, CLS + 3 shared words
    words = "embedding.words.weight"
    for token, row in vocab.items():
        expected = saved[words][source_vocab[token]] if token in source_vocab else before[words][row]
        assert torch.equal(after[words][row], expected), token
    transferred = [k for k in after if k.startswith(TRANSFERRED) and k != words]
    assert len(transferred) > 10 and report.tensors == len(transferred) + 1
    for key in transferred:
        assert torch.equal(after[key], saved[key]), key
    assert any(not torch.equal(before[k], saved[k]) for k in transferred)  # the copy changed something
    pooler = [k for k in after if k.startswith(POOLER)]
    assert len(pooler) == report.pooler == 14  # two AttFlat poolings (4 tensors each + 2 of output), the norm
    for key in pooler:  # the QA pooling of the pre-training head, same names and shapes
        assert torch.equal(after[key], saved[key]), key
    assert sum(not torch.equal(before[k], saved[k]) for k in pooler) >= 10  # all but the norms' ones and zeros
    for key in ("head.classifier.weight", "head.classifier.bias"):  # outputs stay the new task's
        assert torch.equal(after[key], before[key])


def _answer_dict(path: Path, answers: list[str]) -> None:
    path.write_text(json.dumps([{a: i for i, a in enumerate(answers)}, {str(i): a for i, a in enumerate(answers)}]))


def test_answer_rows_are_copied_by_answer_when_both_runs_have_answer_vocabularies(pretrained, tmp_path: Path
                                                                                  ) -> None:
    path, source, _ = pretrained
    _answer_dict(path.parent.parent / "answer_dict.json", ["yes", "no", "red", "2"])
    _answer_dict(tmp_path / "answer_dict.json", ["red", "blue", "yes"])
    (tmp_path / "vocab.json").write_text(json.dumps(build_vocab([["cube"]])))
    target = _model(_config(), build_vocab([["cube"]]), FusionHead(32, 16, 3, dropout=0.0), seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = init_from_checkpoint(target, path, _genotype(), _config(), tmp_path)
    after, saved = target.state_dict(), source.state_dict()
    assert (report.answers_copied, report.answers) == (2, 3)
    for key in ("head.classifier.weight", "head.classifier.bias"):
        assert torch.equal(after[key][0], saved[key][2]) and torch.equal(after[key][2], saved[key][0])  # red, yes
        assert torch.equal(after[key][1], before[key][1])  # "blue": the checkpoint has no row for it


def test_another_genotype_or_space_is_refused_in_one_line(pretrained, tmp_path: Path) -> None:
    path, _, _ = pretrained
    (tmp_path / "vocab.json").write_text(json.dumps(build_vocab([["cube"]])))
    vocab = build_vocab([["cube"]])
    model = _model(_config(), vocab, torch.nn.Linear(32, 3), seed=2)
    with pytest.raises(UserError, match=r"another genotype \(1 label\(s\) differ, e.g. dec/2: feed_forward there, "
                                        r"self_att here\)"):
        init_from_checkpoint(model, path, _genotype(**{"dec/2": "self_att"}), _config(), tmp_path)
    with pytest.raises(UserError, match="pre-trained with space.hidden=32, this run has space.hidden=64"):
        init_from_checkpoint(model, path, _genotype(), _config(hidden=64), tmp_path)
    # Dropout changes no weight, so it may differ.
    init_from_checkpoint(model, path, _genotype(), _config(dropout=0.3), tmp_path)
    with pytest.raises(UserError, match="pre-trained with space.norm='post', this run has space.norm='pre'"):
        init_from_checkpoint(model, path, _genotype(), _config(norm="pre"), tmp_path)
    (path.parent.parent / "vocab.json").unlink()
    with pytest.raises(UserError, match="has no vocab.json"):
        init_from_checkpoint(model, path, _genotype(), _config(), tmp_path)


def test_a_checkpoint_saved_before_a_space_key_existed_is_read_with_that_keys_default(pretrained,
                                                                                     tmp_path: Path) -> None:
    path, _, _ = pretrained
    state = torch.load(path, weights_only=True)
    del state["config"]["space"]["norm"]
    save_checkpoint(state, path)
    (tmp_path / "vocab.json").write_text(json.dumps(build_vocab([["cube"]])))
    model = _model(_config(), build_vocab([["cube"]]), torch.nn.Linear(32, 3), seed=2)
    assert init_from_checkpoint(model, path, _genotype(), _config(), tmp_path).tensors > 0
    with pytest.raises(UserError, match="pre-trained with space.norm='post', this run has space.norm='pre'"):
        init_from_checkpoint(model, path, _genotype(), _config(norm="pre"), tmp_path)


def test_pretrain_then_retrain_from_it_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nas.cli.main import main

    genotype = tmp_path / "g.json"
    genotype.write_text(json.dumps(_genotype().to_dict()))
    data, pt, ft = tmp_path / "corpus", tmp_path / "pt", tmp_path / "ft"
    assert main(["data", "synth", "--task", "pretrain", "--out", str(data), "--quiet", "train_images=40",
                 "val_images=10", "captions_per_image=3", "questions_per_image=3", "feature_dim=32"]) == 0
    small = ["--config", "smoke", "--quiet", f"task.cache_dir={tmp_path / 'cache'}", "train.epochs=1"]
    assert main(["pretrain", "--genotype", str(genotype), "--data", str(data), "--out", str(pt), *small]) == 0
    summary = json.loads((pt / "summary.json").read_text())
    assert summary["task"] == "pretrain" and set(summary["final"]) >= {"mlm_accuracy", "object_accuracy",
                                                                       "match_accuracy", "qa_accuracy"}
    finetune = ["retrain", "--genotype", str(genotype), "--task", "gqa", "--init", str(pt / "checkpoints" / "best.pt"),
                "--out", str(ft), *small, "task.synth_size=tiny"]
    assert main(finetune) == 0
    assert "train.init: 43 embedding and backbone tensors" in (ft / "log.txt").read_text()
    assert "word rows by token" in (ft / "log.txt").read_text()
    # A resumed run continues from its own checkpoint: the init file is not read again.
    (pt / "checkpoints" / "best.pt").unlink()
    assert main([*finetune, "train.epochs=2"]) == 0
    assert len((ft / "metrics.jsonl").read_text().splitlines()) == 2
    # A search has no use for it.
    capsys.readouterr()
    assert main(["search", "--task", "gqa", "--out", str(tmp_path / "s"), *small, "task.synth_size=tiny",
                 f"train.init={pt / 'checkpoints' / 'best.pt'}"]) == 2
    assert "train.init" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["pretrain", "--help"])
    assert done.value.code == 0 and "masked words" in capsys.readouterr().out
