"""Built-in procedurally generated datasets written in the real on-disk formats.

``generate_vqa`` writes a CLEVR-like world as VQA v2 question/annotation JSON plus bottom-up
``.npz`` region features, in MCAN's ``datasets/`` layout, so the real loaders read it.
"""

from nas.synth.vqa_questions import FAMILIES
from nas.synth.vqa_writer import SynthSummary, SynthVqaConfig, generate_vqa

__all__ = ["FAMILIES", "SynthSummary", "SynthVqaConfig", "generate_vqa"]
