"""NNI's exported choice dict -> our version-1 genotype, validated against the space.

NNI 3.0 exports an architecture as a flat sample ``{label: value}`` (``strategy.list_models()``
-> ``model.sample``, ``NasExperiment.export_top_models(formatter='dict')``,
``oneshot_module.export()``); ``model_space.freeze(sample)`` rebuilds it. For a LayerChoice whose
candidates are keyed by name (``nas.interop.nni_space``) the value is the op name; for one built
from a list it is the candidate's index, which is accepted too. Reading and converting needs no
NNI installation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from nas.errors import UserError
from nas.genotype import Genotype, _compact
from nas.io import read_json
from nas.space import SearchSpace

__all__ = ["NNI_STRATEGIES", "genotype_from_nni", "read_nni_arch"]

# strategy.algorithm -> the NNI 3.0 strategy class that runs it.
NNI_STRATEGIES = {
    "darts": "nni.nas.strategy.DARTS",
    "gumbel": "nni.nas.strategy.GumbelDARTS",
    "proxyless": "nni.nas.strategy.Proxyless",
    "random": "nni.nas.strategy.RandomOneShot",
}


def read_nni_arch(path: str | Path) -> dict[str, Any]:
    """A saved NNI export: a non-empty JSON object of label -> op name (or candidate index)."""
    data = read_json(path, "NNI architecture file")
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path}: an NNI export must be a non-empty JSON object of label -> op "
                        f"(e.g. {{\"enc/0\": \"self_att\"}}), got {type(data).__name__}")
    return data


def genotype_from_nni(sample: Mapping[str, Any], space: SearchSpace, task: str, source: str,
                      algorithm: str | None = None, provenance: Mapping[str, Any] | None = None) -> Genotype:
    """The genotype of an NNI sample, checked key by key against ``space.choices()``.

    Args:
        sample: NNI's ``{label: op name or candidate index}``.
        space: the search space the sample was searched in (at its depth).
        task: the task it was searched for.
        source: the file it came from, named in every error.
        algorithm: the ``strategy.algorithm`` that found it (``darts``, ...), when known.
        provenance: further provenance (seed, config hash, ...), kept next to NNI's.
    """
    expected = space.choices()
    choices: dict[str, str] = {}
    for label, value in sample.items():
        if label not in expected:
            raise UserError(f"{source}: unknown label '{label}' (value {value!r}); space {space.name} has "
                            f"labels {_compact(list(expected)) or 'none at the depth the export implies'}")
        candidates = expected[label]
        # bool is an int in Python; an index that is really a flag would pick an op silently.
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(candidates):
            choices[label] = candidates[value]
        elif isinstance(value, str) and value in candidates:
            choices[label] = value
        else:
            raise UserError(f"{source}: '{label}': unknown op {value!r}. Valid ops: {', '.join(candidates)} "
                            f"(or their index 0..{len(candidates) - 1})")
    record: dict[str, Any] = {"source": f"NNI export {Path(source).name}", "strategy": "nni",
                              "nni_algorithm": algorithm or "unknown"}
    if algorithm in NNI_STRATEGIES:
        record["nni_strategy"] = NNI_STRATEGIES[algorithm]
    record.update(provenance or {})
    genotype = Genotype(space=space.name, task=task, choices=choices, provenance=record)
    space.validate(genotype, source)  # every label present
    return genotype
