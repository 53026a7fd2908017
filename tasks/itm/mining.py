"""Hard-negative mining for the matching cross-encoder (MmNas's per-epoch refresh)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nas.data import move_batch
from tasks.itm.dataset import PairBatcher
from tasks.itm.precomp import CAPTIONS_PER_IMAGE

__all__ = ["mine_hard_negatives"]


@torch.no_grad()
def mine_hard_negatives(model: nn.Module, pairs: PairBatcher, pool: int, topk: int, rng: np.random.Generator,
                        device: torch.device, batch_size: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Score a random pool of non-matching partners with the current model; keep the top ``topk``.

    Returns (per image: ``topk`` caption indices, per caption: ``topk`` image rows).
    """
    was_training = model.training
    model.eval()
    images = np.arange(pairs.num_images)
    captions = np.arange(pairs.num_captions)
    pool = min(pool, pairs.num_images - 1)
    topk = min(topk, pool)
    # Shifting by 1..N-1 images never lands on the item's own image.
    other = (images[:, None] + rng.integers(1, pairs.num_images, (len(images), pool))) % pairs.num_images
    caption_pool = other * CAPTIONS_PER_IMAGE + rng.integers(0, CAPTIONS_PER_IMAGE, other.shape)  # (N_img, pool)
    image_pool = (captions[:, None] // CAPTIONS_PER_IMAGE
                  + rng.integers(1, pairs.num_images, (len(captions), pool))) % pairs.num_images  # (N_cap, pool)
    query_images = np.concatenate([np.repeat(images, pool), image_pool.reshape(-1)])
    query_captions = np.concatenate([caption_pool.reshape(-1), np.repeat(captions, pool)])
    scores = np.empty(len(query_images), np.float32)
    starts = range(0, len(scores), batch_size)
    for start in tqdm(starts, desc="mining hard negatives", unit="batch", leave=False,
                      disable=None if progress else True):
        stop = start + batch_size
        batch = move_batch(pairs.batch(query_images[start:stop], query_captions[start:stop]), device)
        scores[start:stop] = model(batch).float().cpu().numpy()
    split = len(images) * pool
    best_captions = np.argsort(-scores[:split].reshape(len(images), pool), axis=1, kind="stable")[:, :topk]
    best_images = np.argsort(-scores[split:].reshape(len(captions), pool), axis=1, kind="stable")[:, :topk]
    if was_training:
        model.train()
    return (np.take_along_axis(caption_pool, best_captions, axis=1),
            np.take_along_axis(image_pool, best_images, axis=1))
