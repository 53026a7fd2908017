"""The modules search space (IEP-Ref): labels and the shipped genotype, stack-based prefix execution,
which weights each training stage updates through the trainer's auxiliary-loss hook, REINFORCE's
sign and baseline, and search -> pg -> ee -> joint from the CLI with --init."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from nas.checkpoint import load_checkpoint
from nas.cli.main import main
from nas.config import TrainConfig
from nas.errors import UserError
from nas.genotype import load_genotype
from nas.space import fixed_block_factory
from nas.training import EpochProgress, Trainer, with_auxiliary_loss
from search_spaces.modules import ModulesConfig, ModulesSpace
from search_spaces.modules.engine import STEM, ExecutionEngine, Node, parse_program
from search_spaces.modules.reinforce import iou_reward, reinforce_loss, update_baseline
from tasks.clevr_ref.programs import END, NULL, START
from tasks.clevr_ref.task import ClevrRefConfig, ClevrRefMeta, ClevrRefTask
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: more threads only contend

TOKENS = ["filter_color[red]", "filter_shape[cube]", "intersect", "relate[left]", "scene", "unique"]
VOCAB = {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, **{t: 4 + i for i, t in enumerate(TOKENS)}}
ROWS, COLS, C = 3, 4, 5


def ids(*tokens: str) -> list[int]:
    return [START, *(VOCAB[t] for t in tokens), END]


RELATE = ids("relate[left]", "unique", "filter_color[red]", "scene")
INTERSECT = ids("intersect", "filter_color[red]", "scene", "filter_shape[cube]", "scene")


def tiny_space(**options) -> ModulesSpace:
    return ModulesSpace(ModulesConfig(**{"hidden": 8, "module_dim": 6, "word_dim": 6, "rnn_hidden": 8,
                                         "rnn_layers": 1, **options}))


def meta() -> ClevrRefMeta:
    return ClevrRefMeta(vocab_size=9, feature_dim=C, num_outputs=1, program_vocab=VOCAB, program_length=8)


def batch(known: list[bool] | None = None) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    cells = [[40.0 * c, 40.0 * r, 40.0 * c + 40, 40.0 * r + 40] for r in range(ROWS) for c in range(COLS)]
    programs = torch.zeros(4, 8, dtype=torch.long)
    for row, program in enumerate([RELATE, INTERSECT, RELATE, INTERSECT]):
        programs[row, :len(program)] = torch.tensor(program)
    return {"tokens": torch.tensor([[4, 5, 6, 0], [7, 8, 0, 0], [4, 6, 0, 0], [8, 7, 5, 4]]),
            "features": torch.randn(4, ROWS * COLS, C, generator=generator),
            "boxes": torch.tensor(cells).expand(4, -1, -1).clone(), "num_regions": torch.full((4,), ROWS * COLS),
            "image_size": torch.tensor([[120, 160]] * 4), "target": (torch.rand(4, ROWS * COLS, generator=generator)
                                                                     > 0.6).float(),
            "program": programs, "program_known": torch.tensor(known or [True, True, False, False])}


def test_labels_prior_and_the_shipped_iep_ref_genotype() -> None:
    space = tiny_space()
    assert space.choices() == {f"cell/{i}": ["conv3x3", "conv1x1", "dil_conv3x3", "sep_conv3x3", "identity"]
                               for i in range(2)}
    assert space.prior() == {"cell/0": "conv3x3", "cell/1": "conv3x3"}
    genotype = load_genotype(REPO / "genotypes" / "iep_ref.json")
    space.validate(genotype)
    assert genotype.choices == space.prior()
    assert ModulesSpace.config_from_choices({"cell/0": "conv1x1", "cell/1": "identity", "cell/2": "conv3x3"}) == {
        "cell_ops": 3}
    assert tiny_space(cell_ops=3).describe({"cell/0": "conv1x1", "cell/1": "identity", "cell/2": "conv3x3"}) == \
        "module: C1 -> - -> C3 | stage ee, ground_truth programs"


@pytest.mark.parametrize("override, message", [({"stage": "train"}, r"space\.stage: unknown value 'train'"),
                                               ({"programs": "gt"}, r"space\.programs: unknown value 'gt'"),
                                               ({"cell_ops": 0}, r"space\.cell_ops=0"),
                                               ({"baseline_decay": 1.0}, r"space\.baseline_decay=1\.0")])
def test_bad_settings_are_one_line_errors(override: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        tiny_space(**override)


def test_a_task_without_programs_is_a_one_line_error() -> None:
    from nas.task import TaskMeta

    with pytest.raises(UserError, match="clevr_ref"):
        tiny_space().build_model(TaskMeta(vocab_size=9, feature_dim=C, num_outputs=1), nn.Identity(),
                                 fixed_block_factory(tiny_space().prior()))


def test_prefix_programs_parse_with_a_stack() -> None:
    arities = [1, 1, 2, 1, 0, 1]  # TOKENS' arities
    module = {t: i for i, t in enumerate(TOKENS)}
    nodes, root = parse_program(INTERSECT, arities)
    # read right to left: scene, filter_shape, scene, filter_color, intersect(filter_color, filter_shape)
    assert nodes == [Node(module["scene"], (STEM,)), Node(module["filter_shape[cube]"], (0,)),
                     Node(module["scene"], (STEM,)), Node(module["filter_color[red]"], (2,)),
                     Node(module["intersect"], (3, 1))]
    assert root == 4
    # Malformed predictions: a missing input is the stem, tokens after <END> and specials are skipped.
    nodes, root = parse_program([START, VOCAB["unique"], 3, VOCAB["filter_color[red]"], END, VOCAB["scene"]], arities)
    assert nodes == [Node(module["filter_color[red]"], (STEM,)), Node(module["unique"], (0,))] and root == 1
    assert parse_program([START, END, VOCAB["scene"]], arities) == ([], STEM)
    assert parse_program([START, NULL], arities) == ([], STEM)


class RecordingOp(nn.Module):
    """A stub cell op: adds a constant of its module, recording which module ran on how many maps."""

    def __init__(self, calls: list[tuple[str, int]]) -> None:
        super().__init__()
        self.calls = calls

    def forward(self, x: torch.Tensor, module: int) -> torch.Tensor:
        self.calls.append((TOKENS[module], x.shape[0]))
        return x + 0.1 * (module + 1)


def test_prefix_execution_calls_the_right_modules_in_order() -> None:
    torch.manual_seed(0)
    calls: list[tuple[str, int]] = []
    engine = ExecutionEngine(C, 6, 1, TOKENS, [RecordingOp(calls)], classifier_dim=4)
    stem = torch.randn(2, 6, ROWS, COLS)
    programs = torch.tensor([RELATE + [NULL], INTERSECT])
    result = engine.execute(stem, programs)
    # Leaves first; the nodes of a level that call the same module run together.
    assert calls == [("scene", 3), ("filter_color[red]", 2), ("filter_shape[cube]", 1), ("intersect", 1),
                     ("unique", 1), ("relate[left]", 1)]
    module = {t: i for i, t in enumerate(TOKENS)}

    def run(token: str, *inputs: torch.Tensor) -> torch.Tensor:
        return engine.run_module(module[token], list(inputs))

    with torch.no_grad():
        first = run("relate[left]", run("unique", run("filter_color[red]", run("scene", stem[:1]))))
        red, cube = run("filter_color[red]", run("scene", stem[1:])), run("filter_shape[cube]", run("scene", stem[1:]))
        second, swapped = run("intersect", red, cube), run("intersect", cube, red)
    assert torch.allclose(result[0], first[0]) and torch.allclose(result[1], second[0])
    assert not torch.allclose(result[1], swapped[0])  # the binary module's inputs keep their order


def test_ground_truth_runs_where_known_and_predictions_elsewhere() -> None:
    torch.manual_seed(0)
    model = tiny_space().build_model(meta(), nn.Identity(), fixed_block_factory(tiny_space().prior())).eval()
    data = batch([True, False, True, False])
    chosen = model.programs_to_run(data)
    predicted, _ = model.generator.decode(data["tokens"], sample=False)
    assert torch.equal(chosen[[0, 2], :8], data["program"][[0, 2]])
    assert torch.equal(chosen[[1, 3], :predicted.shape[1]], predicted[[1, 3]])
    assert model(data).shape == (4, ROWS * COLS)


def _train_one_step(stage: str, tmp_path: Path) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    space = tiny_space(stage=stage)
    model = space.build_model(meta(), nn.Identity(), fixed_block_factory(space.prior()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    task = ClevrRefTask(ClevrRefConfig(), tmp_path, progress=False)
    trainer = Trainer(model, task, TrainConfig(lr=1e-2, grad_clip=0.0), torch.device("cpu"))
    trainer.train_epoch([batch()], stage, False, EpochProgress())
    return model, before


@pytest.mark.parametrize("stage, learns", [("pg", {"generator"}), ("ee", {"engine"}),
                                           ("joint", {"generator", "engine", "baseline"})])
def test_each_stage_updates_only_its_weights(stage: str, learns: set[str], tmp_path: Path) -> None:
    model, before = _train_one_step(stage, tmp_path)
    changed = {key.split(".")[0] for key, value in model.state_dict().items() if not torch.equal(value, before[key])}
    assert changed == learns


def test_the_trainer_adds_a_models_auxiliary_loss() -> None:
    class WithExtra(nn.Module):
        def auxiliary_loss(self) -> torch.Tensor | None:
            return torch.tensor(2.5)

    loss = torch.tensor(1.0)
    assert float(with_auxiliary_loss(nn.Linear(1, 1), loss)) == 1.0
    assert float(with_auxiliary_loss(WithExtra(), loss)) == 3.5
    wrapped = nn.Module()
    wrapped.module = WithExtra()  # DistributedDataParallel keeps the model as .module
    assert float(with_auxiliary_loss(wrapped, loss)) == 3.5


def test_reinforce_sign_and_moving_average_baseline() -> None:
    log_probs = torch.tensor([-1.0, -2.0], requires_grad=True)
    reward, baseline = torch.tensor([1.0, 0.0]), torch.tensor(0.2)
    loss = reinforce_loss(log_probs, reward, baseline)
    # advantages 0.8 and -0.2: -(0.8 * -1 + -0.2 * -2) = 0.4
    assert float(loss.detach()) == pytest.approx(0.4)
    loss.backward()
    # Descending the loss raises the better-than-baseline program's log-probability, lowers the other's.
    assert log_probs.grad.tolist() == pytest.approx([-0.8, 0.2])
    update_baseline(baseline, reward, 0.9)
    assert float(baseline) == pytest.approx(0.9 * 0.2 + 0.1 * 0.5)
    # IoU reward: cells 0, 1 predicted; target covers cell 1 fully and cell 2 by half -> 1 / (1 + 1 + 0.5)
    assert iou_reward(torch.tensor([[1.0, 2.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.5]])).tolist() == \
        pytest.approx([0.4])


def test_search_then_three_stages_from_the_cli(tmp_path: Path) -> None:
    tiny = ["--quiet", "task.synth_size=tiny", "task.max_images=8", "train.threads=1", "train.batch_size=16",
            "train.warmup_epochs=0", "train.decay_epochs=[]", "train.epochs=1", "train.lr=1e-3", "space.hidden=8",
            "space.module_dim=8", "space.word_dim=8", "space.rnn_hidden=8", "space.rnn_layers=1"]
    search = tmp_path / "search"
    assert main(["search", "--task", "clevr_ref", "--space", "modules", "--strategy", "darts", "--out", str(search),
                 *tiny, "train.epochs=2", "strategy.arch_start_epoch=0"]) == 0
    genotype = load_genotype(search / "genotype.json")
    tiny_space().validate(genotype)
    assert genotype.task == "clevr_ref" and set(genotype.choices) == {"cell/0", "cell/1"}
    runs = {stage: tmp_path / stage for stage in ("pg", "ee", "joint")}
    assert main(["retrain", "--genotype", str(search / "genotype.json"), "--out", str(runs["pg"]), *tiny,
                 "space.stage=pg", "task.num_programs=20"]) == 0
    assert main(["retrain", "--genotype", str(search / "genotype.json"), "--out", str(runs["ee"]), *tiny,
                 "space.stage=ee", "space.programs=predicted", "--init", str(runs["pg"] / "checkpoints/last.pt")]) == 0
    assert main(["retrain", "--genotype", str(search / "genotype.json"), "--out", str(runs["joint"]), *tiny,
                 "space.stage=joint", "space.programs=predicted",
                 "--init", str(runs["ee"] / "checkpoints/last.pt")]) == 0
    weights = {stage: load_checkpoint(run / "checkpoints/last.pt")["model"] for stage, run in runs.items()}
    generator = [k for k in weights["pg"] if k.startswith("generator.")]
    engine = [k for k in weights["pg"] if k.startswith("engine.")]
    # ee starts from pg and keeps its generator; joint starts from ee and trains both and the baseline.
    assert all(torch.equal(weights["pg"][k], weights["ee"][k]) for k in generator)
    assert not all(torch.equal(weights["pg"][k], weights["ee"][k]) for k in engine)
    assert not all(torch.equal(weights["ee"][k], weights["joint"][k]) for k in generator)
    assert float(weights["ee"]["baseline"]) == 0.0 and float(weights["joint"]["baseline"]) > 0.0
    summary = json.loads((runs["joint"] / "summary.json").read_text())
    assert summary["genotype"]["space"] == "modules" and 0.0 <= summary["final"]["cumulative_iou"] <= 100.0
    assert summary["baseline"]["rule"] in ("all foreground", "centre box")
    # Settings that change weights must agree with the checkpoint's.
    assert main(["retrain", "--genotype", str(search / "genotype.json"), "--out", str(tmp_path / "other"), *tiny,
                 "space.module_dim=4", "--init", str(runs["ee"] / "checkpoints/last.pt")]) != 0
