"""Built-in procedurally generated datasets written in the real on-disk formats.

``generate_vqa`` writes a CLEVR-like world as VQA v2 question/annotation JSON plus bottom-up
``.npz`` region features, in MCAN's ``datasets/`` layout, so the real loaders read it.
"""

from nas.synth.vqa_questions import FAMILIES
from nas.synth.vqa_writer import SynthSummary, SynthVqaConfig, generate_vqa

__all__ = ["FAMILIES", "SynthSummary", "SynthVqaConfig", "generate_vqa"]

# Visual grounding (RefCOCO formats) and image-text matching (SCAN f30k_precomp) from the same
# kind of scenes; see refer_writer.py and scan_writer.py for the layouts.
from nas.synth.refer_writer import SynthReferConfig, SynthReferSummary, generate_refer  # noqa: E402
from nas.synth.scan_writer import SynthScanConfig, SynthScanSummary, generate_scan  # noqa: E402

__all__ += ["SynthReferConfig", "SynthReferSummary", "SynthScanConfig", "SynthScanSummary",
            "generate_refer", "generate_scan"]

# GQA question files + LXMERT obj36 TSVs from the same scenes; see gqa_writer.py for the layout.
from nas.synth.gqa_writer import SynthGqaConfig, SynthGqaSummary, generate_gqa  # noqa: E402

__all__ += ["SynthGqaConfig", "SynthGqaSummary", "generate_gqa"]

# NLVR2 statements about image pairs + LXMERT obj36 TSVs; see nlvr2_writer.py for the layout.
from nas.synth.nlvr2_writer import SynthNlvr2Config, SynthNlvr2Summary, generate_nlvr2  # noqa: E402

__all__ += ["SynthNlvr2Config", "SynthNlvr2Summary", "generate_nlvr2"]

# LXMERT's pre-training corpus (captions + questions) and obj36 TSVs with detector labels; see pretrain_writer.py.
from nas.synth.pretrain_writer import SynthPretrainConfig, SynthPretrainSummary, generate_pretrain  # noqa: E402

__all__ += ["SynthPretrainConfig", "SynthPretrainSummary", "generate_pretrain"]

# CLEVR-Ref+ scenes (with object masks), refexps with programs and IEP's HDF5 files; see clevr_ref_writer.py.
from nas.synth.clevr_ref_writer import SynthClevrRefConfig, SynthClevrRefSummary, generate_clevr_ref  # noqa: E402

__all__ += ["SynthClevrRefConfig", "SynthClevrRefSummary", "generate_clevr_ref"]

# COCO captions of the built-in VQA images (or a Flickr30K layout); see caption_writer.py.
from nas.synth.caption_writer import SynthCaptionConfig, SynthCaptionSummary, generate_caption  # noqa: E402

__all__ += ["SynthCaptionConfig", "SynthCaptionSummary", "generate_caption"]
