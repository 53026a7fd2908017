"""Model-agnostic batched decoding: greedy, beam search with a length penalty, and sampling.

A model is seen only through a step function (``StepFn``): given the prefixes of R running
hypotheses and the batch item each belongs to, it returns (R, V) next-token log-probs. Captioning
models wrap their forward pass in one; the decoders never look inside.
"""

from nas.decoding.beam import beam_search
from nas.decoding.common import Decoded, StepFn
from nas.decoding.single_path import greedy_decode, sample_decode

__all__ = ["Decoded", "StepFn", "beam_search", "greedy_decode", "sample_decode"]
