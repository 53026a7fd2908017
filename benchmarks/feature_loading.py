"""Feature loading: first load (parse + cache build) against cached loads, for a folder of released
``.npz`` files, an LXMERT obj36 TSV and a GQA-style HDF5 file of the same images.

Writes ``--images`` images of ``--boxes`` regions x ``--dim`` floats (the release: 36 x 2048 for
obj36, 10-100 x 2048 for the npz), then times, each in a fresh cache:
- first load: reading every file and writing the memory-mapped cache;
- cached open: what every later run pays (the arrays memory-mapped);
- cached read: copying all features into memory from the cache (the upper bound of a full pass).

    python3 benchmarks/feature_loading.py --images 2000 --out runs/bench-features
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nas.features import load_region_features  # noqa: E402
from nas.features_h5 import load_h5_features  # noqa: E402
from nas.features_tsv import ObjRecord, load_tsv_features, write_obj_tsv  # noqa: E402


def write_inputs(folder: Path, images: int, boxes: int, dim: int) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    npz_dir, tsv, h5_dir = folder / "val2014", folder / "val2014_obj36.tsv", folder / "gqa"
    npz_dir.mkdir(parents=True, exist_ok=True)
    h5_dir.mkdir(parents=True, exist_ok=True)
    h5 = h5py.File(h5_dir / "gqa_objects_0.h5", "w")
    h5_features = h5.create_dataset("features", (images, 100, dim), np.float32)
    h5_boxes = h5.create_dataset("bboxes", (images, 100, 4), np.float32)
    info = {}
    records = []
    for index in range(images):
        features = rng.standard_normal((boxes, dim), dtype=np.float32)
        corner = rng.uniform(0, 300, (boxes, 2)).astype(np.float32)
        bbox = np.concatenate([corner, corner + 20], 1)
        name = f"COCO_val2014_{index + 1:012d}"
        np.savez_compressed(npz_dir / f"{name}.jpg.npz", x=features.T, bbox=bbox, num_bbox=boxes, image_h=480,
                            image_w=640)
        records.append(ObjRecord(img_id=name, img_h=480, img_w=640, boxes=bbox, features=features))
        h5_features[index, :boxes], h5_boxes[index, :boxes] = features, bbox  # GQA's 100-row slots
        info[str(index + 1)] = {"file": 0, "idx": index, "objectsNum": boxes, "width": 640, "height": 480}
    h5.close()
    (h5_dir / "gqa_objects_info.json").write_text(json.dumps(info))
    write_obj_tsv(tsv, records)
    return npz_dir, tsv, h5_dir


def timed(load, cache: Path) -> dict[str, float]:
    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    load(cache)
    first = time.perf_counter() - start
    start = time.perf_counter()
    cached = load(cache)
    opened = time.perf_counter() - start
    start = time.perf_counter()
    np.array(cached.features)
    read = time.perf_counter() - start
    return {"first_load_s": round(first, 3), "cached_open_s": round(opened, 4), "cached_read_s": round(read, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--boxes", type=int, default=36)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-features")
    args = parser.parse_args()
    npz_dir, tsv, h5_dir = write_inputs(args.out / "inputs", args.images, args.boxes, args.dim)
    ids = range(1, args.images + 1)
    results = {
        "npz folder": timed(lambda c: load_region_features(npz_dir, ids, args.boxes, c, progress=False),
                            args.out / "cache-npz"),
        "obj36 TSV": timed(lambda c: load_tsv_features(tsv, args.boxes, c, progress=False), args.out / "cache-tsv"),
        "GQA HDF5": timed(lambda c: load_h5_features(h5_dir, None, args.boxes, c, progress=False),
                          args.out / "cache-h5"),
    }
    size = {"npz folder": sum(p.stat().st_size for p in npz_dir.iterdir()), "obj36 TSV": tsv.stat().st_size,
            "GQA HDF5": (h5_dir / "gqa_objects_0.h5").stat().st_size}
    print(f"{args.images} images x {args.boxes} boxes x {args.dim} float32 ({args.images * args.boxes * args.dim * 4 / 2**20:.0f} MiB of features)")
    print("| input | size on disk (MiB) | first load (s) | cached open (s) | cached full read (s) | first / cached open | first / cached read |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, figures in results.items():
        print(f"| {name} | {size[name] / 2**20:.0f} | {figures['first_load_s']} | {figures['cached_open_s']} | "
              f"{figures['cached_read_s']} | {figures['first_load_s'] / max(figures['cached_open_s'], 1e-4):.0f}x | "
              f"{figures['first_load_s'] / max(figures['cached_read_s'], 1e-4):.1f}x |")
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "results": results, "bytes": size}, indent=2))


if __name__ == "__main__":
    main()
