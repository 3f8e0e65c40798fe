#!/usr/bin/env python
"""Profile one GAN training iteration (per-phase times + top operators): the "why" behind a GAN benchmark figure.

    .venv/bin/python scripts/profile_gan.py [--device cuda] [--preset thesis] [--dataset scr-lung] [--iters 4] [--compile]

All logic lives in pairgen.profiling.profile_gan.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing


def main() -> None:
    import torch

    from pairgen.profiling import profile_gan

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="thesis")
    parser.add_argument("--dataset", default="scr-lung")
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--compile", action="store_true", help="the torch.compile'd critic step (pairgen.compiled)")
    args = parser.parse_args()
    print(profile_gan(args.dataset, args.preset, torch.device(args.device), args.iters, args.rows, args.compile),
          flush=True)


if __name__ == "__main__":
    main()
