#!/usr/bin/env bash
# The main job end to end on the embedded `shapes` dataset (no download), tiny preset, CPU-friendly:
# train the pair GAN, export synthetic pairs, check them, train + evaluate a U-Net on a real/synthetic mix, report.
set -euo pipefail
cd "$(dirname "$0")/.."
export PAIRGEN_WORKSPACE="${PAIRGEN_WORKSPACE:-workspace-demo}"
# tiny nets: a second intra-op thread only adds synchronisation, and on a busy 2-core machine it waits for a core
# (measured: the GAN ran 10x slower with 2 threads under load)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
.venv/bin/pairgen train --dataset shapes --preset tiny --iters 800
.venv/bin/pairgen export --n 2000
.venv/bin/pairgen verify "$(ls -d "$PAIRGEN_WORKSPACE"/shapes/fold1/synth/*/ | tail -n 1)"
.venv/bin/segbench run --real 4 --synth 4 --aug flip
.venv/bin/segbench run --real 8 --synth 0 --aug none
.venv/bin/segbench report "$PAIRGEN_WORKSPACE"/shapes/fold1/seg --out "$PAIRGEN_WORKSPACE"/report
