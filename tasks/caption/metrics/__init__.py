"""COCO caption metrics: BLEU-1..4, ROUGE-L and CIDEr-D in Python, agreeing with pycocoevalcap on
the same tokenised input; METEOR and SPICE through pycocoevalcap and Java when present."""

from tasks.caption.metrics.bleu import bleu
from tasks.caption.metrics.cider import CiderD, cider_d
from tasks.caption.metrics.evaluate import METRIC_NAMES, evaluate_captions
from tasks.caption.metrics.external import meteor, spice, unavailable_reason
from tasks.caption.metrics.rouge import rouge_l
from tasks.caption.metrics.tokenizer import PTB_PUNCTUATION, tokenize_caption

__all__ = ["METRIC_NAMES", "PTB_PUNCTUATION", "CiderD", "bleu", "cider_d", "evaluate_captions", "meteor",
           "rouge_l", "spice", "tokenize_caption", "unavailable_reason"]
