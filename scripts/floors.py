#!/usr/bin/env python
"""How far each measured GPU training figure lies above what its FLOPs and its eager memory traffic allow
(docs/PERFORMANCE.md). Reads a scripts/bench.py JSON list; counting the thesis GAN's bytes takes ~8 minutes on a
CPU (the real step under bf16 autocast at batches 1 and 2). Logic: segbench.perf.floors, pairgen.perf.traffic.

    .venv/bin/python scripts/floors.py [--json docs/bench-gpu-h200.json] [--lease "session 3"]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing


def main() -> None:
    from segbench.perf.floors import floors, format_floors

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=Path("docs/bench-gpu-h200.json"))
    parser.add_argument("--lease", help="only records whose extra.lease contains this text")
    args = parser.parse_args()
    records = json.loads(args.json.read_text())
    if args.lease:
        records = [r for r in records if args.lease in r.get("extra", {}).get("lease", "")]
    print(format_floors(floors(records)), flush=True)


if __name__ == "__main__":
    main()
