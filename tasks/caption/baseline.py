"""The nearest-neighbour caption baseline (Devlin et al., "Exploring Nearest Neighbor Approaches
for Image Captioning", 2015): caption an image with a training caption of its most similar image.

Similarity is the cosine of the images' mean region features. Of the neighbour's references the
one chosen is the consensus caption, as Devlin et al. pick among their neighbours' captions: here
the one whose words overlap most with the other references (mean bag-of-words F1; CIDEr-D among
five captions of one image has no document frequencies to speak of).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from tasks.caption.dataset import CaptionSplit
from tasks.caption.metrics import tokenize_caption

__all__ = ["nearest_neighbour_captions", "mean_features"]


def mean_features(split: CaptionSplit) -> np.ndarray:
    """(I, D) unit-length mean region feature of each of the split's images, in ``image_ids`` order."""
    feats = split.features
    rows = split.image_rows()
    counts = np.maximum(feats.num_regions[rows], 1).astype(np.float32)
    means = feats.features[rows].sum(axis=1) / counts[:, None]  # padding rows are zeros
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)


def _consensus(references: list[str]) -> str:
    if len(references) == 1:
        return references[0]
    bags = [Counter(tokenize_caption(r).split()) for r in references]

    def f1(a: Counter, b: Counter) -> float:
        common = sum((a & b).values())
        return 2.0 * common / max(sum(a.values()) + sum(b.values()), 1)

    scores = [np.mean([f1(bag, other) for j, other in enumerate(bags) if j != k]) for k, bag in enumerate(bags)]
    return references[int(np.argmax(scores))]


def nearest_neighbour_captions(train: CaptionSplit, target: CaptionSplit) -> dict[int, str]:
    """image id -> the caption of its nearest training image (never itself when the splits overlap)."""
    train_means, target_means = mean_features(train), mean_features(target)
    similarity = target_means @ train_means.T  # (I_target, I_train)
    same = {image: k for k, image in enumerate(train.image_ids)}
    for row, image in enumerate(target.image_ids):
        if image in same:
            similarity[row, same[image]] = -np.inf
    nearest = similarity.argmax(axis=1)
    return {image: _consensus(train.references[train.image_ids[int(n)]])
            for image, n in zip(target.image_ids, nearest)}
