"""TensorBoard logs of searches, retrains and genotype files.

A run directory gets ``tensorboard/`` with event files:
- search: per epoch, scalars (losses, held-out metric, mean and per-block entropy of the op
  distribution, how many blocks changed their argmax), images (op-probability heatmap, genotype
  diagram) and text (the genotype as a Markdown table, its diff against the previous epoch);
- retrain: per epoch, scalars; at the end the HParams plugin's record with the genotype summary
  (op counts per stream, parameters, FLOPs) and the final metrics, so sweeps sort in the HParams tab.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nas.board.diagrams import genotype_diagram, probability_heatmap, streams_of

__all__ = ["BoardWriter", "entropy", "genotype_table", "genotype_diff", "op_counts", "flat_scalars",
           "forward_flops_per_sample"]


def entropy(probabilities: Mapping[str, float]) -> float:
    """Shannon entropy in nats of one block's op distribution."""
    return float(-sum(p * math.log(p) for p in probabilities.values() if p > 0))


def genotype_table(choices: Mapping[str, str], probabilities: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """Markdown: one row per block, one column per stream (and the chosen op's probability)."""
    streams = streams_of(list(choices))
    header = "| block | " + " | ".join(streams) + " |"
    rows = [header, "|" + " --- |" * (len(streams) + 1)]
    for index in range(max(len(labels) for labels in streams.values())):
        cells = []
        for labels in streams.values():
            if index < len(labels):
                label = labels[index]
                shown = choices[label]
                if probabilities and label in probabilities:
                    shown += f" ({probabilities[label].get(choices[label], 0.0):.2f})"
                cells.append(shown)
            else:
                cells.append("")
        rows.append(f"| {index} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def genotype_diff(previous: Mapping[str, str] | None, current: Mapping[str, str]) -> str:
    if previous is None:
        return "first epoch: nothing to compare"
    changed = [label for label in current if previous.get(label) != current[label]]
    if not changed:
        return "unchanged since the previous epoch"
    lines = ["| block | before | now |", "| --- | --- | --- |"]
    lines += [f"| {label} | {previous.get(label, '-')} | {current[label]} |" for label in changed]
    return f"{len(changed)} block(s) changed\n\n" + "\n".join(lines)


def op_counts(choices: Mapping[str, str]) -> dict[str, int]:
    """``{"enc.self_att": 6, "dec.guided_att": 4, ...}`` for the HParams table."""
    counts: dict[str, int] = {}
    for stream, labels in streams_of(list(choices)).items():
        for label in labels:
            key = f"{stream}.{choices[label]}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def flat_scalars(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numbers of a (nested) metrics dict as ``prefix/key/subkey`` scalars; other values are skipped."""
    found: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            found[name] = float(value)
        elif isinstance(value, Mapping):
            found.update(flat_scalars(value, name))
    return found


def forward_flops_per_sample(model: Any, batch: Mapping[str, Any]) -> float:
    """FLOPs of one forward pass per sample, counted by torch on a real batch (eval mode, no grad)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from nas.data import count_samples

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(batch)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / max(count_samples(batch), 1)


class BoardWriter:
    """Event files under ``logdir``; a thin layer over torch's SummaryWriter."""

    def __init__(self, logdir: str | Path, short_names: Mapping[str, str] | None = None,
                 links: Mapping[str, str] | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(logdir)
        self.writer = SummaryWriter(str(self.logdir))
        self.short_names = dict(short_names or {})
        self.links = dict(links or {})

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def genotype(self, step: int, choices: Mapping[str, str], title: str,
                 probabilities: Mapping[str, Mapping[str, float]] | None = None) -> None:
        image = genotype_diagram(choices, title, self.short_names, self.links)
        self.writer.add_image("architecture/genotype", image, step, dataformats="HWC")
        self.writer.add_text("genotype/table", genotype_table(choices, probabilities), step)

    def search_epoch(self, record: Mapping[str, Any], previous: Mapping[str, Any] | None, metric_key: str) -> None:
        """Everything the search loop knows at the end of one epoch (a ``search_log.jsonl`` record)."""
        step = int(record["epoch"])
        probabilities = record.get("probabilities") or {}
        entropies = {label: entropy(p) for label, p in probabilities.items()}
        values = {"search/loss": record["loss"], f"search/{metric_key}": record[metric_key], "search/lr": record["lr"]}
        if "arch_loss" in record:
            values["search/arch_loss"] = record["arch_loss"]
        if entropies:
            values["architecture/mean_entropy"] = float(np.mean(list(entropies.values())))
            values.update({f"entropy/{label}": value for label, value in entropies.items()})
        before = previous["genotype"] if previous else None
        values["architecture/argmax_changes"] = float(
            sum(before.get(label) != op for label, op in record["genotype"].items()) if before else 0)
        self.scalars(step, values)
        if probabilities:
            self.writer.add_image("architecture/probabilities",
                                  probability_heatmap(probabilities, f"op probabilities, epoch {step}"), step,
                                  dataformats="HWC")
        self.genotype(step, record["genotype"], f"argmax genotype, epoch {step}", probabilities)
        self.writer.add_text("genotype/diff", genotype_diff(before, record["genotype"]), step)
        self.writer.flush()

    def train_epoch(self, record: Mapping[str, Any]) -> None:
        """One ``metrics.jsonl`` record of a retrain."""
        step = int(record["epoch"])
        values = {f"train/{k}": float(v) for k, v in record.items()
                  if k not in ("epoch", "metrics") and isinstance(v, (int, float))}
        values.update(flat_scalars(record.get("metrics") or {}, "eval"))
        self.scalars(step, values)
        self.writer.flush()

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """One HParams-plugin record in this run's own folder (not a sub-run), so each run is one row."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
        experiment, start, end = hparams_summary(clean, dict(metrics))
        for summary in (experiment, start, end):
            self.writer.file_writer.add_summary(summary)
        for name, value in metrics.items():
            self.writer.add_scalar(name, value)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
