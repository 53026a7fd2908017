"""METEOR and SPICE through pycocoevalcap, which runs them in Java.

They are optional: each returns its corpus score as a float, or the string
``"unavailable: <reason>"`` when pycocoevalcap is not installed, ``java`` is not on PATH, the
scorer fails or it runs past its time limit. A missing metric must never read as a score of 0.

Each scorer runs pycocoevalcap's own class in a child Python process in its own session, so
the whole process group (the JVM included) can be killed at the time limit. METEOR 1.5's jar and
paraphrase table ship in the pycocoevalcap wheel (the JVM start-up and table load take about
10 s). SPICE 1.0 also needs the Stanford CoreNLP 3.6.0 models, which pycocoevalcap downloads on
first use (several hundred MB, so an offline machine reports SPICE unavailable); its README asks
for Java 8 and 8 GB of heap.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from typing import Mapping, Sequence

__all__ = ["METEOR_TIMEOUT_S", "SPICE_TIMEOUT_S", "meteor", "spice", "unavailable_reason"]

METEOR_TIMEOUT_S = 300.0
SPICE_TIMEOUT_S = 1800.0  # a first run downloads the CoreNLP models

_SCORERS = {"METEOR": ("pycocoevalcap.meteor.meteor", "Meteor"), "SPICE": ("pycocoevalcap.spice.spice", "Spice")}
_MARK = "vlnas-score:"
# Runs in the child: scores {str key: [refs]} / {str key: [hyp]} from stdin, prints the mark and the score.
_CHILD = """
import importlib, json, sys
module, name, mark = sys.argv[1:4]
data = json.load(sys.stdin)
score, _ = getattr(importlib.import_module(module), name)().compute_score(data["gts"], data["res"])
print(mark + json.dumps(float(score)), flush=True)
"""


def unavailable_reason(metric: str) -> str | None:
    """Why ``metric`` ("METEOR" or "SPICE") cannot run here, or None when it can be tried."""
    module, _ = _SCORERS[metric]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        return "pycocoevalcap is not installed (pip install 'vlnas[caption]')"
    if shutil.which("java") is None:
        return "java is not on PATH"
    return None


def _run(metric: str, refs: Mapping[object, Sequence[str]], hyps: Mapping[object, str], timeout_s: float
         ) -> float | str:
    reason = unavailable_reason(metric)
    if reason is not None:
        return f"unavailable: {reason}"
    module, name = _SCORERS[metric]
    # JSON object keys are strings, and the scorers only use keys to pair refs with hyps: number them.
    payload = json.dumps({"gts": {str(i): list(refs[k]) for i, k in enumerate(hyps)},
                          "res": {str(i): [h] for i, h in enumerate(hyps.values())}})
    with subprocess.Popen([sys.executable, "-c", _CHILD, module, name, _MARK], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True) as child:
        try:
            out, err = child.communicate(payload, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            return f"unavailable: {metric} ran past its {timeout_s:g} s limit"
    scores = [line[len(_MARK):] for line in out.splitlines() if line.startswith(_MARK)]
    if child.returncode != 0 or not scores:
        last = [line.strip() for line in err.splitlines() if line.strip()]
        detail = last[-1] if last else f"exit status {child.returncode}"
        if "Downloading stanford-corenlp" in out:
            return f"unavailable: {metric} could not download the Stanford CoreNLP models it needs: {detail[:200]}"
        return f"unavailable: {metric} failed: {detail[:200]}"
    return float(json.loads(scores[-1]))


def meteor(refs: Mapping[object, Sequence[str]], hyps: Mapping[object, str], timeout_s: float = METEOR_TIMEOUT_S
           ) -> float | str:
    """pycocoevalcap's METEOR over the images of ``hyps`` (tokenised captions), or why not."""
    return _run("METEOR", refs, hyps, timeout_s)


def spice(refs: Mapping[object, Sequence[str]], hyps: Mapping[object, str], timeout_s: float = SPICE_TIMEOUT_S
          ) -> float | str:
    """pycocoevalcap's SPICE over the images of ``hyps`` (tokenised captions), or why not."""
    return _run("SPICE", refs, hyps, timeout_s)
