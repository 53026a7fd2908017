"""The unified encoder-decoder as VLP runs it: one stack, two masks, three jobs.

- training with the sequence-to-sequence mask: each caption position predicts the next word;
- training with the bidirectional mask: masked-language modelling on the caption (15% of words
  hidden as BERT does: 80% [MASK], 10% a random word, 10% unchanged);
- VQA with the bidirectional mask on the question, through the head's answer classifier.

Each training batch draws its caption objective (seq2seq with probability ``seq2seq_probability``,
else masked-LM) from torch's random stream, so a resumed run draws the same ones. Evaluation
decodes captions (beam search) with the sequence-to-sequence mask and answers questions with the
bidirectional one: the same weights do both. With the head's ``scst`` on, training is self-critical
(Rennie et al. 2017): a sampled caption is rewarded by the task against the greedy one.

VLP's own sequence-to-sequence objective predicts masked words under that mask (UniLM); the
next-word objective here is the common captioning form of the same mask and decodes the same way.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from nas.decoding import Decoded, beam_search, greedy_decode, sample_decode
from search_spaces.unified.backbone import UnifiedStack
from search_spaces.unified.incremental import CachedStep, supports_cache
from search_spaces.unified.masks import bidirectional_mask, seq2seq_mask

__all__ = ["UnifiedCaptioner"]

_REPLACE_WITH_MASK, _REPLACE_AT_RANDOM = 0.8, 0.1  # BERT's split of the hidden words


class UnifiedCaptioner(nn.Module):
    """Args:
        embedding: a ``TwoStreamEmbedding`` (``embed_text``, ``embed_image``).
        backbone: the searched stack.
        head: the caption task's head: ``word_logits``, ``answer_logits``, ``special`` token ids,
            ``decoding`` settings and the ``scst`` switch.
        seq2seq_probability: share of training batches whose caption objective is next-word prediction.
        mask_probability: share of caption words hidden in a masked-LM batch.
    """

    # ``--init`` copies the whole network: self-critical training starts from the cross-entropy model's
    # word predictor and answer classifier too (same data, so the same vocabularies).
    init_prefixes = ("embedding.", "backbone.", "head.")

    def __init__(self, embedding: nn.Module, backbone: UnifiedStack, head: nn.Module, seq2seq_probability: float,
                 mask_probability: float) -> None:
        super().__init__()
        self.embedding, self.backbone, self.head = embedding, backbone, head
        self.seq2seq_probability = seq2seq_probability
        self.mask_probability = mask_probability

    # ------------------------------------------------------------ passes
    def _image(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        image, keep = self.embedding.embed_image(batch["features"], batch["boxes"], batch["num_regions"],
                                                 batch["image_size"])  # (B, N, H), (B, N)
        return image, keep, self.backbone.relation(batch["boxes"])

    def _run(self, tokens: torch.Tensor, image: torch.Tensor, image_keep: torch.Tensor,
             relation: torch.Tensor | None, mask_kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                     torch.Tensor]:
        # tokens: (R, T); image: (R, N, H) -> text (R, T, H), text_keep (R, T), image (R, N, H), image_keep (R, N)
        text, text_keep = self.embedding.embed_text(tokens)
        make = seq2seq_mask if mask_kind == "seq2seq" else bidirectional_mask
        text, image_out = self.backbone.run(image, text, make(image_keep, text_keep, text.dtype), relation)
        return text, text_keep, image_out, image_keep

    def _answers(self, questions: torch.Tensor, image: torch.Tensor, image_keep: torch.Tensor,
                 relation: torch.Tensor | None) -> torch.Tensor:
        # questions: (B, T) or (B, Q, T) -> answer logits (B, A) or (B, Q, A)
        if questions.dim() == 2:
            return self.head.answer_logits(*self._run(questions, image, image_keep, relation, "bidirectional"))
        batch, per_image, length = questions.shape
        rows = torch.arange(batch, device=questions.device).repeat_interleave(per_image)  # (B*Q,)
        logits = self.head.answer_logits(*self._run(questions.reshape(-1, length), image[rows], image_keep[rows],
                                                    None if relation is None else relation[rows], "bidirectional"))
        return logits.view(batch, per_image, -1)

    def _word_log_probs(self, states: torch.Tensor) -> torch.Tensor:
        # states: (R, H) -> (R, V) float32 log-probs
        return torch.log_softmax(self.head.word_logits(states).float(), dim=-1)

    def step_function(self, image: torch.Tensor, image_keep: torch.Tensor, relation: torch.Tensor | None,
                      cached: bool = True) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The decoder's view of the model: next-word log-probabilities of each prefix.

        With ``cached`` (and a stack of fixed ops) a step runs only each prefix's new word
        (``incremental.py``); otherwise every step runs the whole [regions; prefix] sequence, which
        a supernet's mixed ops need and which the cached steps are tested against.
        """
        if cached and supports_cache(self.backbone):
            return CachedStep(self.embedding.embed_text, self.backbone, self._word_log_probs, image, image_keep,
                              relation)

        def step(prefix: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            # prefix: (R, t) starting with BOS; rows: (R,) image of each -> (R, V)
            text, _, _, _ = self._run(prefix, image[rows], image_keep[rows],
                                      None if relation is None else relation[rows], "seq2seq")
            return self._word_log_probs(text[:, -1])

        return step

    # ---------------------------------------------------------- training
    def _hide_words(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT's masking of caption words (never BOS, EOS or padding): (inputs, targets with -100)."""
        special = self.head.special
        words = (tokens != special.pad) & (tokens != special.bos) & (tokens != special.eos)  # (B, L)
        hidden = words & (torch.rand(tokens.shape, device=tokens.device) < self.mask_probability)
        # At least one hidden word per caption, so every caption teaches something.
        none = hidden.sum(1) == 0
        if none.any():
            scores = torch.rand(tokens.shape, device=tokens.device).masked_fill(~words, -1.0)
            first = torch.zeros_like(hidden).scatter_(1, scores.argmax(1, keepdim=True), True) & words
            hidden = hidden | (first & none[:, None])
        draw = torch.rand(tokens.shape, device=tokens.device)
        inputs = tokens.clone()
        inputs[hidden & (draw < _REPLACE_WITH_MASK)] = special.mask
        randomised = hidden & (draw >= _REPLACE_WITH_MASK) & (draw < _REPLACE_WITH_MASK + _REPLACE_AT_RANDOM)
        inputs[randomised] = torch.randint(special.first_word, self.head.vocab_size, (int(randomised.sum()),),
                                           device=tokens.device)
        return inputs, tokens.masked_fill(~hidden, -100)

    def _caption_loss_outputs(self, tokens: torch.Tensor, image: torch.Tensor, image_keep: torch.Tensor,
                              relation: torch.Tensor | None) -> dict[str, Any]:
        # tokens: (B, L) = BOS w1 .. wn EOS pad..
        if float(torch.rand(())) < self.seq2seq_probability:
            text, _, _, _ = self._run(tokens[:, :-1], image, image_keep, relation, "seq2seq")  # (B, L-1, H)
            targets = tokens[:, 1:].masked_fill(tokens[:, 1:] == self.head.special.pad, -100)  # (B, L-1)
            objective = "seq2seq"
        else:
            inputs, targets = self._hide_words(tokens)
            text, _, _, _ = self._run(inputs, image, image_keep, relation, "bidirectional")  # (B, L, H)
            objective = "mlm"
        supervised = targets != -100  # (B, L')
        return {"objective": objective, "word_logits": self.head.word_logits(text[supervised]),  # (M, V)
                "word_targets": targets[supervised]}  # (M,)

    def _self_critical(self, batch: dict[str, torch.Tensor], image: torch.Tensor, image_keep: torch.Tensor,
                       relation: torch.Tensor | None) -> dict[str, Any]:
        """``scst_samples`` captions drawn per image; with one, also the greedy caption (the baseline)."""
        special, settings, samples = self.head.special, self.head.decoding, self.head.scst_samples

        def repeat(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.repeat_interleave(samples, dim=0)  # (B*K, ...)

        step = self.step_function(repeat(image), repeat(image_keep), repeat(relation))
        sampled = sample_decode(step, image.shape[0] * samples, settings.max_length, special.bos, special.eos,
                                special.pad, device=image.device)
        outputs = {"objective": "scst", "sample_tokens": sampled.tokens,  # (B*K, L), image-major
                   "sample_log_prob": sampled.log_prob, "samples_per_image": samples}
        if samples == 1:
            self.eval()  # the baseline is what test time would produce: no dropout, images embedded again
            try:
                with torch.no_grad():
                    greedy = greedy_decode(self.step_function(*self._image(batch)), image.shape[0],
                                           settings.max_length, special.bos, special.eos, special.pad,
                                           device=image.device)
            finally:
                self.train()
            outputs["greedy_tokens"] = greedy.tokens
        return outputs

    # ----------------------------------------------------------- forward
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        image, image_keep, relation = self._image(batch)
        outputs: dict[str, Any] = {}
        if self.training:
            if self.head.scst:
                outputs.update(self._self_critical(batch, image, image_keep, relation))
            else:
                outputs.update(self._caption_loss_outputs(batch["tokens"], image, image_keep, relation))
        else:
            settings, special = self.head.decoding, self.head.special
            step = self.step_function(image, image_keep, relation)
            if settings.beam_size > 1:
                decoded: Decoded = beam_search(step, image.shape[0], settings.beam_size, settings.max_length,
                                               special.bos, special.eos, special.pad, settings.length_penalty,
                                               device=image.device)
            else:
                decoded = greedy_decode(step, image.shape[0], settings.max_length, special.bos, special.eos,
                                        special.pad, device=image.device)
            outputs["caption_tokens"] = decoded.tokens  # (B, L)
        if "question_tokens" in batch and self.head.num_answers:
            outputs["answer_logits"] = self._answers(batch["question_tokens"], image, image_keep, relation)
        return outputs
