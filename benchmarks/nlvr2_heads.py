"""Why NLVR2 stays at chance on the built-in data: one backbone, several heads, step by step (issue 8).

Trains the quick-start network (MmNas's prior pattern, 4 encoder + 6 decoder blocks, width 64;
or a 2+1+2-layer ``lxmert`` layout with ``--space lxmert``) on an NLVR2 folder written by
``nas data synth --task nlvr2`` and prints train and dev accuracy every ``--every`` steps.
Heads (``--head``):

    pair        the task's head (tasks/nlvr2/head.py): each row pooled, [left, right] -> MLP
    count       pair + a count-preserving term: sigmoid gates over the regions, summed
    product     pair MLP over [left, right, left*right, |left-right|]
    named_row   only "The left/right image contains ..." statements, and only the named
                image's row, with MmNas's FusionHead: the single-image existence problem

It is a diagnosis, not the training loop: plain Adam at a constant rate on random batches, no
schedule, no checkpoints, so that heads differ in nothing else.

    nas data synth --task nlvr2 --out data/nlvr2-exist train_sets=2000 dev_sets=150 \\
        test1_sets=50 sentences_per_set=6 phrase_attributes=1 feature_dim=128 \\
        'families=[side_exist,both_exist,one_exist]'
    python3 benchmarks/nlvr2_heads.py --data data/nlvr2-exist --head pair --steps 2500
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import search_spaces  # noqa: F401  (registers the spaces)
from nas.heads import FusionHead
from nas.registry import SPACES
from nas.space import fixed_block_factory
from tasks.nlvr2.dataset import Nlvr2Dataset
from tasks.nlvr2.head import PairHead
from tasks.nlvr2.task import Nlvr2Config, Nlvr2Task

HIDDEN, FLAT_MLP = 64, 128
ROW_KEYS = ("tokens", "features", "boxes", "num_regions", "image_size")


class CountPairHead(PairHead):
    """The pair head plus summed sigmoid gates over the regions: a count survives pooling, where
    AttFlat's softmax average keeps only a proportion."""

    def __init__(self, hidden: int, flat_mlp: int, glimpses: int = 8) -> None:
        super().__init__(hidden, flat_mlp)
        self.gate = nn.Sequential(nn.Linear(hidden, flat_mlp), nn.GELU(), nn.Linear(flat_mlp, glimpses))
        self.count = nn.Linear(glimpses, 2 * hidden)

    def forward(self, text, text_keep, image, image_keep):
        # image: (2B, N, H) -> logits (B,)
        gates = torch.sigmoid(self.gate(image)) * image_keep.unsqueeze(-1)  # (2B, N, k)
        row = self.pool(text, text_keep, image, image_keep) + self.count(gates.sum(1))  # (2B, 2H)
        return self.classifier(row.reshape(row.shape[0] // 2, -1)).squeeze(1)


class ProductPairHead(PairHead):
    """The pair MLP reads [left, right, left*right, |left-right|]: a direct cross-row term."""

    def __init__(self, hidden: int, flat_mlp: int) -> None:
        super().__init__(hidden, flat_mlp)
        pooled = 2 * hidden
        self.classifier = nn.Sequential(nn.Linear(4 * pooled, pooled), nn.GELU(), nn.LayerNorm(pooled),
                                        nn.Linear(pooled, 1))

    def forward(self, text, text_keep, image, image_keep):
        row = self.pool(text, text_keep, image, image_keep)  # (2B, 2H)
        left, right = row[0::2], row[1::2]  # (B, 2H) each
        return self.classifier(torch.cat([left, right, left * right, (left - right).abs()], -1)).squeeze(1)


def build_head(name: str) -> nn.Module:
    return {"pair": lambda: PairHead(HIDDEN, FLAT_MLP), "count": lambda: CountPairHead(HIDDEN, FLAT_MLP),
            "product": lambda: ProductPairHead(HIDDEN, FLAT_MLP),
            "named_row": lambda: FusionHead(HIDDEN, FLAT_MLP, 1, fusion="product")}[name]()


def build_model(space_name: str, meta, head: nn.Module) -> nn.Module:
    space_class = SPACES.get(space_name)
    if space_name == "lxmert":
        space = space_class(space_class.Config(hidden=HIDDEN, head_dim=16, relation_dim=16, lang_layers=2,
                                               obj_layers=1, cross_layers=2))
    else:
        space = space_class(space_class.Config(hidden=HIDDEN, head_dim=16, relation_dim=16, enc_blocks=4,
                                               dec_blocks=6))
    # lxr955's pattern at this depth; MmNas's prior at the quick start's (genotypes/mmnas_prior_small.json)
    return space.build_model(meta, head, fixed_block_factory(space.prior()))


def selection(task: Nlvr2Task, dataset: Nlvr2Dataset, families: dict[str, str], named_row: bool
              ) -> tuple[np.ndarray, np.ndarray]:
    """Examples kept (all, or the side_exist ones for named_row) and the named row of each (0 left)."""
    keep, side = [], []
    for position, number in enumerate(dataset.numbers.tolist()):
        identifier = task._names[number]
        split, set_no, _, sentence_no = identifier.split("-")
        if named_row and families[f"{split}-{set_no}--{sentence_no}"] != "side_exist":
            continue
        keep.append(position)
        side.append(0 if "left image" in task.examples[identifier].sentence else 1)
    return np.asarray(keep, np.int64), np.asarray(side, np.int64)


def batch_of(dataset: Nlvr2Dataset, positions: np.ndarray, sides: np.ndarray, named_row: bool) -> dict:
    batch = dataset.__getitems__(positions.tolist())
    if named_row:  # keep row 2i + side of each example
        rows = torch.arange(len(positions)) * 2 + torch.as_tensor(sides)
        batch = {k: (v[rows] if k in ROW_KEYS else v) for k, v in batch.items()}
    return batch


def accuracy(model: nn.Module, dataset: Nlvr2Dataset, keep: np.ndarray, sides: np.ndarray, named_row: bool,
             limit: int) -> float:
    model.eval()
    right = total = 0
    with torch.no_grad():
        for start in range(0, min(limit, len(keep)), 128):
            batch = batch_of(dataset, keep[start:start + 128], sides[start:start + 128], named_row)
            right += int(((model(batch).reshape(-1) > 0).float() == batch["label"]).sum())
            total += len(batch["label"])
    model.train()
    return 100.0 * right / total if total else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="an NLVR2 folder from nas data synth --task nlvr2")
    parser.add_argument("--head", default="pair", choices=("pair", "count", "product", "named_row"))
    parser.add_argument("--space", default="mmnas", choices=("mmnas", "lxmert"))
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--curriculum", type=int, default=0, metavar="STEPS",
                        help="first train the named_row problem for STEPS steps, then --head on the pairs, "
                             "keeping the backbone and the pooling")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as run_dir:
        task = Nlvr2Task(Nlvr2Config(data_dir=args.data), Path(run_dir), progress=False)
        data = task.prepare(["train", "dev"])
    families = json.loads((Path(args.data) / "synth_meta.json").read_text())["families"]
    rng = np.random.default_rng(args.seed)
    model = None
    phases = ([("named_row", args.curriculum)] if args.curriculum else []) + [(args.head, args.steps)]
    for head_name, steps in phases:
        head = build_head(head_name)
        if model is None:
            model = build_model(args.space, data.meta, head)
        else:  # the curriculum's second phase: same backbone, the pooling carried over
            head.load_state_dict({k: v for k, v in model.head.state_dict().items()
                                  if not k.startswith("classifier.")}, strict=False)
            model.head = head
        train_phase(task, data, families, model, head_name, steps, rng, args)


def train_phase(task: Nlvr2Task, data, families: dict[str, str], model: nn.Module, head_name: str, steps: int,
                rng: np.random.Generator, args: argparse.Namespace) -> None:
    named_row = head_name == "named_row"
    train, dev = data.splits["train"], data.splits["dev"]
    train_keep, train_sides = selection(task, train, families, named_row)
    dev_keep, dev_sides = selection(task, dev, families, named_row)
    print(f"{head_name} head, {args.space}: {len(train_keep)} training and {len(dev_keep)} dev examples", flush=True)
    optimizer = torch.optim.Adam(model.parameters(), args.lr)
    started = time.time()
    for step in range(1, steps + 1):
        pick = rng.integers(len(train_keep), size=args.batch_size)
        batch = batch_of(train, train_keep[pick], train_sides[pick], named_row)
        loss = F.binary_cross_entropy_with_logits(model(batch).reshape(-1), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            print(f"step {step} ({time.time() - started:.0f} s): loss {loss.item():.3f}, "
                  f"train {accuracy(model, train, train_keep, train_sides, named_row, 640):.1f}, "
                  f"dev {accuracy(model, dev, dev_keep, dev_sides, named_row, 1500):.1f}", flush=True)

if __name__ == "__main__":
    main()
