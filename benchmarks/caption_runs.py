"""Caption runs on built-in data: CIDEr-D with greedy and beam decoding, VQA accuracy, baselines.

Usage: python benchmarks/caption_runs.py [--data DIR] [--checkpoint NAME] RUN_DIR [RUN_DIR ...]

For every ``nas retrain --task caption`` run directory, re-evaluates the last checkpoint (or
``checkpoints/NAME.pt``, e.g. ``best``) on the validation split with greedy decoding and with the
run's beam size (at least 3), and prints those with the nearest-neighbour-caption and
majority-answer baselines and three example captions.

``--data DIR`` evaluates on another built-in caption dataset instead (``nas data synth --task
caption`` with the runs' seed and ``feature_dim``, so the same world and feature prototypes), e.g.
one with 1,000 validation images: on the 200 of the ``small`` preset one image's caption moves
CIDEr-D by about 0.5 point, and two checkpoints a few points apart cannot be told apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from nas.config import resolve_config, yaml_layer
from nas.data import make_eval_loader
from nas.training import predict
from run_loading import load_run


def evaluate(run: Path, beam_size: int, data_dir: str | None, checkpoint: str = "last") -> tuple[dict, list[dict], dict]:
    config, task, data, model = load_run(run, data_dir, checkpoint, beam_size=beam_size)
    split = config.task.eval_split
    predictions = predict(model, make_eval_loader(task.evaluation_view(data.splits[split]), 100), task,
                          torch.device("cpu"), "eval", False)
    references = task.splits[split].references
    examples = [{"caption": p["caption"], "reference": references[p["image_id"]][0]}
                for p in predictions if "caption" in p][:3]
    baseline = task.baseline(data.splits[config.task.train_split], split, data.splits[split])
    return task.evaluate(split, data.splits[split], predictions), examples, baseline


def main(arguments: list[str]) -> None:
    torch.set_num_threads(1)
    data_dir, checkpoint = None, "last"
    while arguments[:1] in (["--data"], ["--checkpoint"]):
        if arguments[0] == "--data":
            data_dir = arguments[1]
        else:
            checkpoint = arguments[1]
        arguments = arguments[2:]
    for run in map(Path, arguments):
        greedy, _, _ = evaluate(run, 1, data_dir, checkpoint)
        # SCST runs validate greedily (beam_size 1) to pick their best checkpoint; beam 3 is the comparison
        beam_size = max(resolve_config([yaml_layer(run / "config.yaml")]).task.beam_size, 3)
        beamed, examples, baseline = evaluate(run, beam_size, data_dir, checkpoint)
        print(f"{run} ({checkpoint}): CIDEr-D greedy {greedy['cider_d']:.2f}, beam {beam_size} {beamed['cider_d']:.2f} "
              f"(BLEU-4 {beamed['bleu_4']:.2f}, ROUGE-L {beamed['rouge_l']:.2f}); nearest-neighbour caption "
              f"{baseline.get('cider_d', float('nan')):.2f}; VQA accuracy {beamed.get('vqa_accuracy', float('nan')):.2f}"
              f" (majority answer {baseline.get('vqa_accuracy', float('nan')):.2f})")
        for example in examples:
            print(f"  generated: {example['caption']}\n  reference: {example['reference']}")


if __name__ == "__main__":
    main(sys.argv[1:])
