"""All-pairs image-text matching evaluation: (image, caption) pairs scored per second.

Ranking 1K images against their 5K captions scores 5M pairs, each a full cross-encoder
forward pass (MmNas's ITM model fuses every pair). This scores the first ``--batches``
evaluation batches of a 1K x 5K all-pairs set (synthetic 36-region features, MmNas's
fix36) with the real evaluation loader, first while image 0 meets every caption (each
caption is encoded then, once), then ``--batches`` more, and extrapolates the full time.

    python3 benchmarks/itm_eval.py --hidden 64 --batches 20
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nas.data import make_eval_loader  # noqa: E402
from nas.features import RegionFeatures  # noqa: E402
from nas.genotype import load_genotype  # noqa: E402
from nas.space import fixed_block_factory  # noqa: E402
from nas.task import TaskMeta  # noqa: E402
from nas.text_cache import caching_text  # noqa: E402
from search_spaces.mmnas import MmnasConfig, MmnasSpace  # noqa: E402
from tasks.itm.dataset import AllPairsDataset, PairBatcher  # noqa: E402
from tasks.itm.head import MatchingHead  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1000, help="evaluation batch (pairs)")
    parser.add_argument("--batches", type=int, default=10, help="batches timed after the first image row")
    parser.add_argument("--genotype", type=Path, default=REPO / "genotypes" / "mmnas_itm.json")
    parser.add_argument("--no-text-cache", action="store_true",
                        help="encode the caption again in every pair (what vlnas did before nas.text_cache)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    regions = 36
    corner = rng.uniform(0, 300, (args.images, regions, 2)).astype(np.float32)
    features = RegionFeatures(features=rng.standard_normal((args.images, regions, args.dim), dtype=np.float32),
                              boxes=np.concatenate([corner, corner + 30], 2),
                              num_regions=np.full(args.images, regions), image_size=np.tile([480, 640], (args.images, 1)),
                              image_ids=np.arange(args.images), directory=Path("synthetic"))
    tokens = rng.integers(1, 5000, (5 * args.images, 20))
    pairs = AllPairsDataset(PairBatcher(tokens, features), np.arange(args.images))
    choices = load_genotype(args.genotype).choices
    space = MmnasSpace(MmnasConfig(hidden=args.hidden, head_dim=min(64, args.hidden),
                                   enc_blocks=sum(k.startswith("enc/") for k in choices),
                                   dec_blocks=sum(k.startswith("dec/") for k in choices)))
    meta = TaskMeta(vocab_size=5000, feature_dim=args.dim, num_outputs=1)
    model = space.build_model(meta, MatchingHead(args.hidden, 2 * args.hidden, fusion="product"), fixed_block_factory(choices)).eval()
    loader = iter(make_eval_loader(pairs, args.batch))
    captions = len(pairs.captions)
    first_row = -(-captions // args.batch)  # the batches that pair image 0 with every caption
    cache = contextlib.nullcontext() if args.no_text_cache else caching_text(model)
    with torch.inference_mode(), cache:
        model(next(loader))  # warm-up (its captions are cached too, as in a real evaluation)
        start = time.perf_counter()
        for batch in itertools.islice(loader, first_row - 1):
            model(batch)
        first_seconds = time.perf_counter() - start
        start = time.perf_counter()
        for batch in itertools.islice(loader, args.batches):
            model(batch)
        steady = args.batch * args.batches / (time.perf_counter() - start)
    first = args.batch * (first_row - 1) / first_seconds
    total = len(pairs)
    # Every caption is encoded while image 0 is paired with it; afterwards only images change.
    minutes = (captions / first + (total - captions) / steady) / 60
    print(f"{args.genotype.name} ({len(choices)} blocks), hidden {args.hidden}, {args.dim}-d regions x {regions}, "
          f"{torch.get_num_threads()} threads, text cache {'off' if args.no_text_cache else 'on'}: "
          f"{first:,.0f} pairs/s while pairing image 0 with every caption, {steady:,.0f} pairs/s after that; "
          f"all {total:,} pairs of {args.images} images x {captions} captions would take {minutes:.1f} min")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "text_cache":
                                        not args.no_text_cache, "first_row_pairs_per_second": first,
                                        "pairs_per_second": steady, "pairs": total, "minutes": minutes}, indent=2))


if __name__ == "__main__":
    main()
