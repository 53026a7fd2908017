"""Find genotypes in the paths given to ``nas board`` and write one TensorBoard run for each."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.board.writer import BoardWriter, flat_scalars, op_counts
from nas.errors import UserError, json_type
from nas.genotype import Genotype, load_genotype
from nas.io import read_json

__all__ = ["BoardEntry", "collect", "write_entry"]


@dataclass
class BoardEntry:
    name: str  # the TensorBoard run name
    genotype: Genotype
    source: Path
    search_log: list[dict[str, Any]] = field(default_factory=list)  # a search run's per-epoch records
    metrics_log: list[dict[str, Any]] = field(default_factory=list)  # a retrain run's per-epoch records
    summary: dict[str, Any] | None = None  # a retrain run's summary.json


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError, ValueError) as error:
                raise UserError(f"{path}: line {number} is not JSON ({getattr(error, 'msg', 'unreadable')})") from None
            if not isinstance(record, dict):
                raise UserError(f"{path}: line {number} must be a JSON object, got {json_type(record)}")
            records.append(record)
    return records


def _run_entry(folder: Path, name: str) -> BoardEntry | None:
    summary_path = folder / "summary.json"
    if (folder / "genotype.json").is_file():  # a search run
        return BoardEntry(name, load_genotype(folder / "genotype.json"), folder,
                          search_log=_jsonl(folder / "search_log.jsonl"))
    if summary_path.is_file():  # a retrain run: its genotype is in the summary
        from nas.genotype import genotype_from_dict

        summary = read_json(summary_path, "retrain summary")
        if not isinstance(summary, dict) or "genotype" not in summary:
            raise UserError(f"{summary_path}: expected the JSON object 'nas retrain' writes, with a 'genotype' key")
        return BoardEntry(name, genotype_from_dict(summary["genotype"], str(summary_path)), folder,
                          metrics_log=_jsonl(folder / "metrics.jsonl"), summary=summary)
    return None


def collect(paths: list[str | Path]) -> list[BoardEntry]:
    """Genotype files, search and retrain run directories, and folders of either (e.g. ``genotypes/``)."""
    entries: list[BoardEntry] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            entries.append(BoardEntry(path.stem, load_genotype(path), path))
            continue
        if not path.is_dir():
            raise UserError(f"{path}: no such genotype file or run directory")
        run = _run_entry(path, path.name)
        if run is not None:
            entries.append(run)
            continue
        found = sorted(path.glob("*.json"))
        for file in found:
            entries.append(BoardEntry(file.stem, load_genotype(file), file))
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            run = _run_entry(sub, f"{path.name}/{sub.name}")
            if run is not None:
                entries.append(run)
        if not found and not any(e.source.parent == path for e in entries):
            raise UserError(f"{path}: holds no genotype JSON and no search or retrain run")
    names: dict[str, int] = {}
    for entry in entries:  # keep run names unique and path-safe
        base = re.sub(r"[^\w./-]+", "_", entry.name)
        names[base] = names.get(base, 0) + 1
        entry.name = base if names[base] == 1 else f"{base}_{names[base]}"
    return entries


def write_entry(entry: BoardEntry, logdir: Path, short_names: dict[str, str], links: dict[str, str]) -> Path:
    """One TensorBoard run: the genotype's diagram and table, its metrics, and any per-epoch history."""
    out = logdir / entry.name
    writer = BoardWriter(out, short_names, links)
    try:
        genotype = entry.genotype
        for record, previous in zip(entry.search_log, [None, *entry.search_log[:-1]]):
            key = next((k for k in record if k.startswith("heldout_")), None)
            if key is not None:
                writer.search_epoch(record, previous, key)
        for record in entry.metrics_log:
            writer.train_epoch(record)
        final_step = max([0] + [int(r["epoch"]) for r in entry.search_log + entry.metrics_log])
        writer.genotype(final_step, genotype.choices, f"{entry.name} ({genotype.task}, {genotype.space})")
        metrics = flat_scalars(genotype.metrics, "genotype")
        if entry.summary is not None:
            metrics.update(flat_scalars(entry.summary.get("final") or {}, "final"))
            if isinstance(entry.summary.get("best"), (int, float)):
                metrics["final/best"] = float(entry.summary["best"])
        hparams: dict[str, Any] = {"task": genotype.task, "space": genotype.space, "source": str(entry.source),
                                   **op_counts(genotype.choices)}
        hparams.update({k: v for k, v in genotype.provenance.items() if isinstance(v, (int, float, str))
                        and k in ("strategy", "epoch", "seed", "source_commit")})
        writer.hparams(hparams, metrics or {"genotype/blocks": float(len(genotype.choices))})
        text = "\n".join(f"- **{k}**: {v}" for k, v in {**genotype.provenance, **genotype.metrics}.items())
        writer.writer.add_text("genotype/provenance", text or "(none)", final_step)
    finally:
        writer.close()
    return out
