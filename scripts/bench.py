#!/usr/bin/env python
"""Benchmark pairgen/segbench against plain references (docs/PERFORMANCE.md); not part of the test suite.

    .venv/bin/python scripts/bench.py [--device cpu|cuda] [--preset tiny|small|thesis] [--json PATH] [--ablate]

Prints one line per workload (throughput, reference throughput, ratio, TFLOP/s, fraction of peak) and writes the
records as a JSON list. All logic lives in segbench.perf.benchsuite, pairgen.perf.gan_bench and segbench.perf.unet_bench.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone without installing


def main() -> None:
    import torch

    from segbench.perf.benchsuite import HEADER, WORKLOADS, run_suite, save_json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", action="append", help="tiny | small | thesis (repeatable; default: "
                        "thesis on CUDA, tiny and small on CPU)")
    parser.add_argument("--dataset", default="scr-lung", help="scr-lung (default) | cityscapes")
    parser.add_argument("--workload", action="append", choices=WORKLOADS, help="repeatable; default: all")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--ablate", action="store_true", help="also time each speed switch on vs off")
    parser.add_argument("--json", type=Path, default=Path("bench.json"), help="where to write the records")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    presets = args.preset or (["thesis"] if device.type == "cuda" else ["tiny", "small"])
    print(HEADER, flush=True)
    records = []
    for preset in presets:
        earlier = list(records)  # saved after every record: a timeout must not lose the figures measured so far
        records += run_suite(device, preset, args.dataset, tuple(args.workload or WORKLOADS), args.ablate,
                             echo=lambda line: print(line, flush=True),
                             on_record=lambda so_far, earlier=earlier: save_json(earlier + so_far, args.json))
    save_json(records, args.json)
    print(f"machine: {records[0].machine if records else '-'}\nrecords: {args.json}")


if __name__ == "__main__":
    main()
