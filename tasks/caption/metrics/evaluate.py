"""The COCO caption evaluation (pycocoevalcap's ``COCOEvalCap.evaluate``) on in-memory captions."""

from __future__ import annotations

from typing import Mapping, Sequence

from nas.errors import UserError

from tasks.caption.metrics.bleu import bleu
from tasks.caption.metrics.cider import cider_d
from tasks.caption.metrics.external import meteor, spice
from tasks.caption.metrics.rouge import rouge_l
from tasks.caption.metrics.tokenizer import tokenize_caption

__all__ = ["METRIC_NAMES", "evaluate_captions"]

METRIC_NAMES = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")


def evaluate_captions(references: Mapping[int, Sequence[str]], results: Mapping[int, str], external: bool = True,
                      source: str = "results") -> dict[str, float | str]:
    """pycocoevalcap's scores, under its keys and scale (fractions; CIDEr about 0..10).

    Only the images in ``results`` are scored, as ``COCO.loadRes`` + ``params['image_id'] =
    cocoRes.getImgIds()`` do, and CIDEr-D's document frequencies come from their references.
    Both sides are tokenised with ``tokenize_caption``. METEOR and SPICE run through Java when
    ``external`` and available, else they are ``"unavailable: <reason>"``.

    Args:
        references: raw reference captions per image id.
        results: one raw generated caption per image id.
        external: try METEOR and SPICE (each starts a JVM: seconds to minutes).
        source: the results' file name, for error messages.
    """
    if not results:
        raise UserError(f"{source}: no captions to score")
    unknown = [image_id for image_id in results if not references.get(image_id)]
    if unknown:
        raise UserError(f"{source}: image_id {unknown[0]!r} has no reference captions"
                        + (f" ({len(unknown)} such ids)" if len(unknown) > 1 else ""))
    refs = {image_id: [tokenize_caption(c) for c in references[image_id]] for image_id in results}
    hyps = {image_id: tokenize_caption(caption) for image_id, caption in results.items()}
    bleus, _ = bleu(refs, hyps)
    scores: dict[str, float | str] = {f"Bleu_{k + 1}": value for k, value in enumerate(bleus)}
    scores["METEOR"] = meteor(refs, hyps) if external else "unavailable: not requested (external=False)"
    scores["ROUGE_L"] = rouge_l(refs, hyps)[0]
    scores["CIDEr"] = cider_d(refs, hyps)[0]
    scores["SPICE"] = spice(refs, hyps) if external else "unavailable: not requested (external=False)"
    return scores
