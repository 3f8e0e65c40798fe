#!/usr/bin/env python
"""Profile one GAN training iteration (per-phase times + top operators): the "why" behind a GAN benchmark figure.

    .venv/bin/python scripts/profile_gan.py [--device cuda] [--preset thesis] [--dataset scr-lung] [--iters 4] [--compile] [--count]

All logic lives in pairgen.perf.profiling.profile_gan.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing


def main() -> None:
    import torch

    from pairgen.perf.gan_bench import bench_config
    from pairgen.perf.profiling import format_operator_counts, operator_counts, profile_gan

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="thesis")
    parser.add_argument("--dataset", default="scr-lung")
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--compile", action="store_true", help="the torch.compile'd critic step (pairgen.compiled)")
    parser.add_argument("--count", action="store_true", help="only count ATen calls per phase (CPU, seconds), for "
                        "the preset's critic norm and without a norm")
    args = parser.parse_args()
    if args.count:
        steps = bench_config(args.dataset, args.preset, torch.device("cpu")).critic_steps
        for norm in (None, "none"):
            print(f"{args.dataset} {args.preset}, critic norm {norm or 'of the preset'}:")
            print(format_operator_counts(operator_counts(args.dataset, args.preset, norm), steps), flush=True)
        return
    print(profile_gan(args.dataset, args.preset, torch.device(args.device), args.iters, args.rows, args.compile),
          flush=True)


if __name__ == "__main__":
    main()
