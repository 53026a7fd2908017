"""The modules search space: IEP-Ref's module network with a searched residual-module cell.

Johnson et al., "Inferring and Executing Programs for Visual Reasoning" (IEP,
https://arxiv.org/abs/1705.03633) and Liu et al., "CLEVR-Ref+: Diagnosing Visual Reasoning with
Referring Expressions" (IEP-Ref, https://arxiv.org/abs/1901.00850). A program generator (LSTM
seq2seq, ``generator.py``) turns the expression into a prefix-order program; the execution
engine (``engine.py``) runs one residual module per program function over the grid features and
a classifier gives one foreground logit per cell, which is what the ``clevr_ref`` task scores
(its head is not used). The searched part is the body shared by every module's residual block:
``space.cell_ops`` labels ``cell/0``, ``cell/1``, ... each in {conv3x3, conv1x1, dil_conv3x3,
sep_conv3x3, identity}; IEP's module is (conv3x3, conv3x3), shipped as ``genotypes/iep_ref.json``.

Training follows IEP-Ref's three stages (``space.stage``: pg, ee, joint; ``model.py``), each a
``nas retrain`` started from the previous stage's checkpoint with ``--init``. A search trains the
engine alone (``stage: ee``) on ground-truth programs by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from torch import nn

from nas.errors import UserError
from nas.registry import SPACES
from nas.space import BlockFactory, SearchSpace
from search_spaces.modules.engine import ExecutionEngine
from search_spaces.modules.generator import ProgramGenerator
from search_spaces.modules.model import PROGRAMS, REWARDS, STAGES, ModuleNetwork
from search_spaces.modules.ops import CELL_OPS, PARAMETER_FREE, SHORT_NAMES, make_op
from tasks.clevr_ref.programs import SPECIALS

__all__ = ["ModulesConfig", "ModulesSpace"]


@dataclass
class ModulesConfig:
    name: str = "modules"
    hidden: int = 512  # the per-cell classifier's hidden channels (IEP-Ref's classifier is 1x1 convs)
    module_dim: int = 128  # IEP's module_dim
    stem_layers: int = 2  # IEP's module_stem_num_layers
    cell_ops: int = 2  # searched ops in the module body: labels cell/0 .. cell/{cell_ops-1}
    coords: bool = True  # add x, y coordinate channels to the features
    word_dim: int = 300  # IEP's rnn_wordvec_dim; the word vectors' size when the task supplies them
    rnn_hidden: int = 256  # IEP's rnn_hidden_dim
    rnn_layers: int = 2  # IEP's rnn_num_layers
    stage: str = "ee"  # pg | ee | joint (IEP-Ref's three training stages)
    programs: str = "ground_truth"  # ground_truth | predicted: what the engine executes (joint training samples)
    reward: str = "iou"  # iou | loss: REINFORCE's reward in the joint stage
    baseline_decay: float = 0.9  # IEP's reward_decay of the moving-average baseline

    # Settings that change no weight: a later stage may start (train.init) from an earlier one's checkpoint.
    weightless_keys: ClassVar[frozenset[str]] = frozenset({"stage", "programs", "reward", "baseline_decay"})


def cell_labels(count: int) -> list[str]:
    return [f"cell/{i}" for i in range(count)]


@SPACES.register("modules")
class ModulesSpace(SearchSpace):
    Config = ModulesConfig
    name = "modules"
    version = 1
    parameter_free_ops = PARAMETER_FREE
    short_names = SHORT_NAMES

    def __init__(self, config: ModulesConfig) -> None:
        super().__init__(config)
        for key in ("hidden", "module_dim", "stem_layers", "cell_ops", "word_dim", "rnn_hidden", "rnn_layers"):
            if getattr(config, key) < 1:
                raise UserError(f"space.{key}={getattr(config, key)}: must be at least 1")
        for key, valid in (("stage", STAGES), ("programs", PROGRAMS), ("reward", tuple(REWARDS))):
            if getattr(config, key) not in valid:
                raise UserError(f"space.{key}: unknown value '{getattr(config, key)}'. Valid: {', '.join(valid)}")
        if not 0.0 <= config.baseline_decay < 1.0:
            raise UserError(f"space.baseline_decay={config.baseline_decay}: must be in [0, 1)")

    def choices(self) -> dict[str, list[str]]:
        return {label: list(CELL_OPS) for label in cell_labels(self.config.cell_ops)}

    def prior(self) -> dict[str, str]:
        """IEP's residual module: conv3x3, ReLU, conv3x3."""
        return {label: "conv3x3" for label in cell_labels(self.config.cell_ops)}

    @classmethod
    def config_from_choices(cls, choices: Mapping[str, str]) -> dict[str, Any]:
        count = sum(1 for label in choices if label.startswith("cell/"))
        return {"cell_ops": count} if count else {}

    def build_model(self, meta: Any, head: nn.Module, block_factory: BlockFactory) -> nn.Module:
        """The module network; ``head`` (the task's) is not used: the engine's classifier gives the cell logits."""
        cfg = self.config
        vocab = getattr(meta, "program_vocab", None)
        if not vocab:
            raise UserError("space.name=modules: this task's data has no programs; the module network needs "
                            "a task with program annotations (clevr_ref)")
        tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])][len(SPECIALS):]
        if not tokens:
            raise UserError("space.name=modules: the training programs hold no function token")

        def make(name: str) -> nn.Module:
            return make_op(name, cfg.module_dim, len(tokens))

        cells = [block_factory(label, candidates, make) for label, candidates in self.choices().items()]
        engine = ExecutionEngine(meta.feature_dim, cfg.module_dim, cfg.stem_layers, tokens, cells, cfg.hidden,
                                 cfg.coords)
        word_dim = meta.word_vectors.shape[1] if meta.word_vectors is not None else cfg.word_dim
        generator = ProgramGenerator(meta.vocab_size, len(vocab), word_dim, cfg.rnn_hidden, cfg.rnn_layers,
                                     meta.program_length, meta.word_vectors)
        return ModuleNetwork(generator, engine, cfg.stage, cfg.programs, cfg.reward, cfg.baseline_decay)

    def describe(self, choices: Mapping[str, str]) -> str:
        """E.g. ``module: C3 -> C3 | stage ee, ground_truth programs``."""
        ops = " -> ".join(SHORT_NAMES.get(choices.get(label, "?"), "?") for label in cell_labels(self.config.cell_ops))
        return f"module: {ops} | stage {self.config.stage}, {self.config.programs} programs"
