"""Coverage-guided fuzzing of the parsers that read users' files (issue 11).

Each target writes the fuzzer's bytes to a file and reads it the way ``nas`` does. A ``UserError``
is the parser's own clean refusal; any other exception is a crash: the input is saved under
``--out`` and the run stops with the traceback.

    python3 benchmarks/fuzz.py --target genotype --seconds 120
    python3 benchmarks/fuzz.py --target all --seconds 120      # each target in its own process

Targets: ``genotype`` (genotype JSON, validated against its space as ``nas genotype validate``
does), ``npz`` (one region-feature ``.npz``), ``tsv`` (LXMERT/BUTD obj36 TSV lines), ``config``
(a YAML experiment file, resolved), ``refs`` (a RefCOCO ``refs(unc).p`` pickle and its
instances). Seeds are valid files (``genotypes/*.json``, ``experiments/*.yaml``, generated npz, TSV
and refs).

With atheris (``pip install atheris``; Python 3.8-3.11 wheels) the fuzzing is coverage-guided
(libFuzzer). Without it the script falls back to a hypothesis-driven loop of random byte-level
mutations (cuts, flips, inserts, splices) of the same seeds, which finds shallow crashes only.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

try:
    import atheris
except ImportError:  # the hypothesis fallback below
    atheris = None

TARGETS = ("genotype", "npz", "tsv", "config", "refs")
# Scratch files live in memory where possible: every input is written once.
SCRATCH = Path(tempfile.mkdtemp(prefix="vlnas-fuzz-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))


def _imports() -> None:
    """Import the parsers (instrumented for coverage when atheris runs)."""
    global UserError, load_genotype, validated_space, read_npz, read_obj_tsv, yaml_layer, resolve_config, Layer
    global read_refer
    import nas.strategies  # noqa: F401  (registrations)
    import search_spaces  # noqa: F401  (registers the mmnas space)
    import tasks  # noqa: F401
    from nas.cli.genotype_cmd import _validated_space as validated_space
    from nas.config import Layer, resolve_config, yaml_layer
    from nas.errors import UserError
    from nas.features import _read_npz as read_npz
    from nas.features_tsv import read_obj_tsv
    from nas.genotype import load_genotype
    from tasks.vgd.annotations import read_refer


def target_genotype(data: bytes) -> None:
    path = SCRATCH / "genotype.json"
    path.write_bytes(data)
    genotype = load_genotype(path)
    validated_space(genotype, str(path))


def target_npz(data: bytes) -> None:
    path = SCRATCH / "COCO_train2014_000000000001.jpg.npz"
    path.write_bytes(data)
    read_npz(path, None)


def target_tsv(data: bytes) -> None:
    path = SCRATCH / "features_obj36.tsv"
    path.write_bytes(data)
    for _ in read_obj_tsv(path):
        pass


def target_config(data: bytes) -> None:
    path = SCRATCH / "experiment.yaml"
    path.write_bytes(data)
    base = Layer("defaults", {"task": {"name": "vqa"}, "space": {"name": "mmnas"}, "strategy": {"name": "mmnas"}})
    resolve_config([base, yaml_layer(path)])


def target_refs(data: bytes) -> None:
    folder = SCRATCH / "refcoco"
    folder.mkdir(exist_ok=True)
    (folder / "refs(unc).p").write_bytes(data)
    (folder / "instances.json").write_text(json.dumps({"annotations": [{"id": 7, "bbox": [1, 2, 30, 40]}]}))
    read_refer(SCRATCH, "refcoco", "unc")


def seeds(target: str) -> list[bytes]:
    """Valid inputs to start from."""
    import numpy as np

    if target == "genotype":
        return [path.read_bytes() for path in sorted((REPO / "genotypes").glob("*.json"))]
    if target == "config":
        return [path.read_bytes() for path in sorted((REPO / "experiments").glob("*.yaml"))]
    if target == "npz":
        found = []
        for layout in ((8, 5), (5, 8)):  # 5 regions of 8 floats: released (D, N), bottom-up-attention's (N, D)
            buffer = io.BytesIO()
            np.savez_compressed(buffer, x=np.ones(layout, np.float32), bbox=np.ones((5, 4), np.float32),
                                num_bbox=np.int64(5), image_h=np.int64(480), image_w=np.int64(640))
            found.append(buffer.getvalue())
        buffer = io.BytesIO()
        np.savez(buffer, x=np.ones((4, 3), np.float32), bbox=np.ones((3, 4), np.float32), image_h=np.int64(2),
                 image_w=np.int64(3))  # uncompressed, so byte flips reach the arrays
        return [*found, buffer.getvalue()]
    if target == "tsv":
        from nas.features_tsv import ObjRecord, write_obj_tsv

        path = SCRATCH / "seed.tsv"
        rng = np.random.default_rng(0)
        write_obj_tsv(path, [ObjRecord(img_id=f"COCO_val2014_{i:012d}", img_h=480, img_w=640,
                                       boxes=rng.random((2, 4), dtype=np.float32),
                                       features=rng.random((2, 3), dtype=np.float32)) for i in range(2)])
        lxmert = path.read_bytes()
        butd = b"\t".join(lxmert.split(b"\n")[0].split(b"\t")[i] for i in (0, 2, 1, 7, 8, 9)) + b"\n"
        return [lxmert, butd]
    if target == "refs":
        refs = [{"ref_id": 0, "ann_id": 7, "image_id": 3, "split": "train",
                 "sentences": [{"sent_id": 0, "sent": "the red cube"}, {"sent_id": 1, "sent": "left one"}]}]
        return [pickle.dumps(refs, protocol=protocol) for protocol in (0, 2, 4)]
    raise ValueError(target)


def one_input(target: Callable[[bytes], None], data: bytes) -> None:
    """Run one input; only UserError is a clean outcome."""
    try:
        target(data)
    except UserError:
        pass


def run_atheris(name: str, seconds: int, out: Path, max_len: int) -> int:
    corpus = Path(tempfile.mkdtemp(prefix=f"corpus-{name}-", dir=SCRATCH))
    for number, seed in enumerate(seeds(name)):
        (corpus / f"seed{number}").write_bytes(seed)
    target = globals()[f"target_{name}"]
    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", f"-max_len={max_len}", "-print_final_stats=1",
                   f"-artifact_prefix={out}/{name}-", "-rss_limit_mb=4096", str(corpus)],
                  lambda data: one_input(target, data))
    atheris.Fuzz()  # exits the process: with 0 when the time is up, non-zero on a crash
    return 0


def run_fallback(name: str, seconds: int, out: Path, max_len: int) -> int:
    """Without atheris: hypothesis draws byte-level mutations of the seeds until the time is up."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    target, pool = globals()[f"target_{name}"], seeds(name)
    deadline, tried = time.monotonic() + seconds, [0]

    class TimeUp(Exception):
        pass

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(pool)))
        for _ in range(draw(st.integers(1, 6))):
            kind = draw(st.sampled_from(["cut", "flip", "insert", "splice", "delete"]))
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            if kind == "cut":
                del data[at:]
            elif kind == "flip" and data:
                data[at] ^= draw(st.integers(1, 255))
            elif kind == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            elif kind == "splice":
                other = draw(st.sampled_from(pool))
                data[at:] = other[draw(st.integers(0, len(other))):]
            elif kind == "delete":
                del data[at:at + draw(st.integers(1, 16))]
        return bytes(data[:max_len])

    @settings(max_examples=10**9, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(mutated() | st.binary(max_size=64))
    def loop(data: bytes) -> None:
        if time.monotonic() > deadline:
            raise TimeUp
        tried[0] += 1
        try:
            one_input(target, data)
        except Exception:
            crash = out / f"{name}-crash-{tried[0]}"
            crash.write_bytes(data)
            print(f"crash on input saved as {crash}:\n{traceback.format_exc()}", flush=True)
            raise

    try:
        loop()
    except TimeUp:
        print(f"{name}: {tried[0]} inputs in {seconds} s, no crash (hypothesis fallback, not coverage-guided)")
        return 0
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=[*TARGETS, "all"], required=True)
    parser.add_argument("--seconds", type=int, default=120, help="fuzzing time per target (default 120)")
    parser.add_argument("--out", default="runs/fuzz", help="where crashing inputs are saved (default runs/fuzz)")
    parser.add_argument("--max-len", type=int, default=4096, help="longest input in bytes (default 4096)")
    parser.add_argument("--no-atheris", action="store_true", help="use the hypothesis fallback even with atheris")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.target == "all":  # libFuzzer ends its process, so each target gets its own
        codes = [subprocess.call([sys.executable, __file__, "--target", name, "--seconds", str(args.seconds),
                                  "--out", str(out), "--max-len", str(args.max_len),
                                  *(["--no-atheris"] if args.no_atheris else [])]) for name in TARGETS]
        return max(codes)
    if atheris is not None and not args.no_atheris:
        import numpy  # noqa: F401  (heavy libraries stay uninstrumented: coverage of them slows every run)
        import torch  # noqa: F401
        with atheris.instrument_imports(include=["nas", "tasks", "search_spaces", "yaml", "zipfile",
                                                 "numpy.lib._npyio_impl", "numpy.lib._format_impl", "csv",
                                                 "base64", "pickle"]):
            _imports()
        return run_atheris(args.target, args.seconds, out, args.max_len)
    _imports()
    return run_fallback(args.target, args.seconds, out, args.max_len)


if __name__ == "__main__":
    sys.exit(main())
