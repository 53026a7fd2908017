"""Pre-training samples: one sentence with its image, masked and possibly mismatched as LXMERT does.

Masking happens here, when a batch is assembled, so the model's forward is the ordinary one.
Every sample draws from its own generator, seeded by the sample's index and a per-batch salt:
training batches take the salt from torch's random stream (which checkpoints keep, so a resumed
run masks exactly as an uninterrupted one), evaluation uses a fixed salt, so every epoch's
validation scores the same masks, whatever the batch size or process count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from nas.features import RegionFeatures
from tasks.pretrain.labels import RegionLabels

__all__ = ["Masking", "PretrainDataset", "IGNORE"]

IGNORE = -1  # target of positions that are not scored


@dataclass(frozen=True)
class Masking:
    """Args:
        token_prob: share of words masked for MLM (BERT/LXMERT: 0.15), then 80% MASK, 10% a random
            word, 10% unchanged.
        region_prob: share of regions whose feature is zeroed and predicted (LXMERT: 0.15).
        mismatch_prob: share of samples whose sentence is swapped for another image's (0: no matching).
        score_mismatched: also score MLM and masked regions of swapped pairs (LXMERT's code does;
            off, as UNITER: a swapped sentence says nothing about the image it is paired with).
        qa: score answers of labelled questions (matched pairs only).
    """

    token_prob: float = 0.15
    region_prob: float = 0.15
    mismatch_prob: float = 0.5
    score_mismatched: bool = False
    qa: bool = True


class PretrainDataset(Dataset):
    """Args:
        tokens: (S, T) int64 sentence token ids.
        image_of: (S,) index of each sentence's image in ``images``.
        images: (source, row) of every image: ``sources[source]`` holds its features at ``row``.
        sources: region features and detector labels, one pair per feature file.
        answers: per sentence, (answer ids, probabilities) to draw the QA target from, or None.
        mask_id, first_word: the MASK token id, and the first id of a real word (random replacements).
        vocab_size: token ids are below it.
        masking: the objectives' settings.
        fixed_seed: None for training (fresh masks each time), else the salt of every draw.
    """

    def __init__(self, tokens: np.ndarray, image_of: np.ndarray, images: list[tuple[int, int]],
                 sources: list[tuple[RegionFeatures, RegionLabels]],
                 answers: list[tuple[np.ndarray, np.ndarray] | None],
                 mask_id: int, first_word: int, vocab_size: int, masking: Masking, fixed_seed: int | None) -> None:
        self.tokens = np.asarray(tokens, np.int64)
        self.image_of = np.asarray(image_of, np.int64)
        self.images = images
        self.sources = sources
        self.answers = answers
        self.mask_id, self.first_word, self.vocab_size = mask_id, first_word, vocab_size
        self.masking = masking
        self.fixed_seed = fixed_seed
        self.feature_dim = sources[0][0].feature_dim
        self._counts = np.asarray([sources[s][0].num_regions[r] for s, r in images], np.int64)

    def __len__(self) -> int:
        return len(self.tokens)

    def lengths(self) -> np.ndarray:
        """Each sample's region count (for ``train.group_by_length``), that of its own image."""
        return self._counts[self.image_of]

    def _partner(self, index: int, rng: np.random.Generator) -> int | None:
        """A sentence of another image, or None when every try hit the same image (a one-image corpus)."""
        for _ in range(10):
            other = int(rng.integers(len(self)))
            if self.image_of[other] != self.image_of[index]:
                return other
        return None

    def _sample(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray | int]:
        m = self.masking
        partner = self._partner(index, rng) if rng.random() < m.mismatch_prob else None
        matched = partner is None
        scored = matched or m.score_mismatched
        tokens = self.tokens[index if matched else partner].copy()
        chosen = (rng.random(tokens.shape) < m.token_prob) & (tokens != 0)  # (T,)
        mlm = np.where(chosen & scored, tokens, IGNORE)
        how = rng.random(tokens.shape)
        tokens[chosen & (how < 0.8)] = self.mask_id
        swap = chosen & (how >= 0.8) & (how < 0.9)
        tokens[swap] = rng.integers(self.first_word, self.vocab_size, size=int(swap.sum()))

        source, row = self.images[self.image_of[index]]
        feats, labels = self.sources[source]
        count = int(feats.num_regions[row])
        features = np.array(feats.features[row, :count])  # (n, D)
        masked = rng.random(count) < m.region_prob  # (n,)
        target = features.copy()
        features[masked] = 0.0
        scored_regions = masked & scored
        answer = IGNORE
        if m.qa and matched and self.answers[index] is not None:
            ids, probs = self.answers[index]
            answer = int(ids[rng.choice(len(ids), p=probs)]) if len(ids) > 1 else int(ids[0])
        return {"tokens": tokens, "mlm": mlm, "features": features, "target": target, "masked": scored_regions,
                "objects": np.where(scored_regions, labels.objects[row, :count], IGNORE),
                "objects_conf": labels.objects_conf[row, :count], "attrs": np.where(scored_regions,
                                                                                    labels.attrs[row, :count], IGNORE),
                "attrs_conf": labels.attrs_conf[row, :count], "boxes": feats.boxes[row, :count],
                "image_size": feats.image_size[row], "count": count, "matched": float(matched), "answer": answer}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        salt = self.fixed_seed if self.fixed_seed is not None else int(torch.randint(0, 2**62, ()))
        samples = [self._sample(int(i), np.random.default_rng([salt, int(i)])) for i in indices]
        size, width = len(samples), max(max(s["count"] for s in samples), 1)
        features = np.zeros((size, width, self.feature_dim), np.float32)
        target = np.zeros_like(features)
        boxes = np.zeros((size, width, 4), np.float32)
        masked = np.zeros((size, width), bool)
        labels = {key: np.full((size, width), IGNORE, np.int64) for key in ("objects", "attrs")}
        confs = {key: np.zeros((size, width), np.float32) for key in ("objects_conf", "attrs_conf")}
        for k, s in enumerate(samples):
            n = s["count"]
            features[k, :n], target[k, :n], boxes[k, :n], masked[k, :n] = (s["features"], s["target"], s["boxes"],
                                                                           s["masked"])
            for key, array in (*labels.items(), *confs.items()):
                array[k, :n] = s[key]
        return {
            "tokens": torch.from_numpy(np.stack([s["tokens"] for s in samples])),  # (B, T), masked
            "features": torch.from_numpy(features),  # (B, N, D), masked regions zeroed
            "boxes": torch.from_numpy(boxes),  # (B, N, 4)
            "num_regions": torch.tensor([s["count"] for s in samples], dtype=torch.int64),  # (B,)
            "image_size": torch.from_numpy(np.stack([s["image_size"] for s in samples]).astype(np.int64)),  # (B, 2)
            "mlm_target": torch.from_numpy(np.stack([s["mlm"] for s in samples])),  # (B, T), IGNORE unscored
            "region_masked": torch.from_numpy(masked),  # (B, N) scored masked regions
            "feature_target": torch.from_numpy(target),  # (B, N, D) the features before masking
            "object_target": torch.from_numpy(labels["objects"]),  # (B, N), IGNORE unscored
            "object_conf": torch.from_numpy(confs["objects_conf"]),  # (B, N)
            "attr_target": torch.from_numpy(labels["attrs"]),  # (B, N)
            "attr_conf": torch.from_numpy(confs["attrs_conf"]),  # (B, N)
            "matched": torch.tensor([s["matched"] for s in samples], dtype=torch.float32),  # (B,)
            "answer_target": torch.tensor([s["answer"] for s in samples], dtype=torch.int64),  # (B,)
            "index": torch.as_tensor(np.asarray(indices, np.int64)),  # (B,)
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}
