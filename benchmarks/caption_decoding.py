"""Decoding with and without the unified captioner's key-value cache: time and equality.

Usage: python benchmarks/caption_decoding.py [--data DIR] [--images N] RUN_DIR

Loads the last checkpoint of a ``nas retrain --task caption`` run and, on the first N validation
images (default 200), times beam search (the run's beam size) and greedy decoding, each with the
cache (``search_spaces/unified/incremental.py``) and with full runs of every prefix, and checks that
both give the same captions. Then times one self-critical training step on a 64-image batch
(sampling with autograd, the baseline, the backward pass) with one sample and a greedy baseline and
with five samples and the mean-of-others baseline, with and without the cache. One thread.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from run_loading import load_run
from nas.data import make_eval_loader, make_loader


def _decode(model: torch.nn.Module, batches: list[dict], cached: bool) -> tuple[float, list[torch.Tensor]]:
    model.eval()
    original = model.step_function

    def step_function(*args, **kwargs):
        return original(*args, **{**kwargs, "cached": cached and kwargs.get("cached", True)})

    model.step_function = step_function  # forward() builds its step function through this
    try:
        started = time.perf_counter()
        with torch.no_grad():
            captions = [model({k: v for k, v in batch.items() if k != "question_tokens"})["caption_tokens"]
                        for batch in batches]
        return time.perf_counter() - started, captions
    finally:
        model.step_function = original


def _scst_step(model: torch.nn.Module, task, batch: dict, samples: int, cached: bool) -> float:
    model.train()
    model.head.scst, model.head.scst_samples = True, samples
    original = model.step_function
    model.step_function = lambda *args, **kwargs: original(*args, **{**kwargs, "cached": cached})
    try:
        torch.manual_seed(0)
        started = time.perf_counter()
        outputs = model({k: v for k, v in batch.items() if k != "question_tokens"})
        task.loss(outputs, batch).backward()
        model.zero_grad()
        return time.perf_counter() - started
    finally:
        model.step_function = original
        model.head.scst = False


def main(arguments: list[str]) -> None:
    torch.set_num_threads(1)
    data_dir, images = None, 200
    while arguments[:1] in (["--data"], ["--images"]):
        if arguments[0] == "--data":
            data_dir = arguments[1]
        else:
            images = int(arguments[1])
        arguments = arguments[2:]
    run = Path(arguments[0])
    config, task, data, model = load_run(run, data_dir)
    view = task.evaluation_view(data.splits[config.task.eval_split])
    batches = [batch for _, batch in zip(range((images + 99) // 100), make_eval_loader(view, 100))]
    print(f"{run}: {sum(len(b['image_id']) for b in batches)} images, beam {config.task.beam_size}, "
          f"max {config.task.max_decode_length} tokens")
    for beam in (config.task.beam_size, 1):
        model.head.decoding = type(model.head.decoding)(beam, config.task.length_penalty,
                                                         config.task.max_decode_length)
        full_time, full = _decode(model, batches, cached=False)
        cached_time, cached = _decode(model, batches, cached=True)
        same = all(torch.equal(a, b) for a, b in zip(full, cached))
        print(f"  {'greedy' if beam == 1 else f'beam {beam}'}: full {full_time:.2f} s, cached {cached_time:.2f} s "
              f"({full_time / cached_time:.1f}x); same captions: {same}")
    train = data.splits[config.task.train_split]
    batch = next(iter(make_loader(train, 64, shuffle=True, seed=0)))
    for samples in (1, 5):
        times = {cached: _scst_step(model, task, batch, samples, cached) for cached in (False, True)}
        print(f"  SCST step, 64 captions, {samples} sample(s) per caption: full {times[False]:.2f} s, "
              f"cached {times[True]:.2f} s ({times[False] / times[True]:.1f}x)")


if __name__ == "__main__":
    main(sys.argv[1:])
