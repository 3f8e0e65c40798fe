#!/usr/bin/env python
"""Which part of the U-Net training step fails CUDA-graph capture? One process per phase (a failed capture can
leave a process's CUDA context unusable); prints one line per phase. Logic: segbench.perf.unet_bench.probe_unet_capture.

    python scripts/probe_capture.py [--dataset scr-lung] [--preset thesis] [--phase step ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a fresh clone without installing


def main() -> None:
    from segbench.perf.unet_bench import CAPTURE_PHASES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scr-lung")
    parser.add_argument("--preset", default="thesis")
    parser.add_argument("--phase", action="append", choices=CAPTURE_PHASES, help="repeatable; default: all")
    parser.add_argument("--one", help=argparse.SUPPRESS)   # the child process: probe this phase here
    args = parser.parse_args()
    if args.one:
        import torch

        from segbench.perf.unet_bench import probe_unet_capture
        print(probe_unet_capture(args.dataset, args.preset, torch.device("cuda"), args.one), flush=True)
        return
    for phase in args.phase or CAPTURE_PHASES:
        child = subprocess.run([sys.executable, __file__, "--dataset", args.dataset, "--preset", args.preset,
                                "--one", phase], capture_output=True, text=True, timeout=120)
        lines = (child.stdout + child.stderr).strip().splitlines()
        errors = [line for line in lines if "Error" in line or "error" in line]
        verdict = "ok" if child.returncode == 0 else "FAILED: " + " | ".join(errors[-3:] or lines[-2:])
        print(f"{args.dataset} {args.preset} capture {phase:10s} {verdict}", flush=True)
        if child.returncode:
            print("\n".join("    " + line for line in lines[-25:]), flush=True)


if __name__ == "__main__":
    main()
