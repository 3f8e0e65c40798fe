#!/usr/bin/env bash
# Issue 4, one SCR fold of table 5.2 in about 10-12 minutes of a single H100/H200 (GAN stage measured on an H200:
# ~6 it/s; the U-Nets not yet run).
# Everything is defined in manifests/experiments/gpu/table5_2-scr-fold1-h100.toml; what it keeps and cuts:
#   kept: 256x256, the thesis networks (tables 4.1 GAN, 4.2 U-Net: depth 3, 64 filters), WGAN-GP settings,
#         batch 16, the six configurations, the thesis-lung augmentation, evaluation at 1024x1024.
#   cut:  fold 1 only (of 3); GAN 10000 -> 2000 generator iterations; 4000 exported pairs instead of 10000;
#         U-Net early stopping 3000/3000 -> 500/500 with a 2000-iteration cap (thesis: no cap).
# Environment: SCR_ROOT (default ../shared/data/scr-lung), PAIRGEN_WORKSPACE (default ./workspace).
set -euo pipefail
cd "$(dirname "$0")/.."
SCR_ROOT="${SCR_ROOT:-../shared/data/scr-lung}"
export PAIRGEN_WORKSPACE="${PAIRGEN_WORKSPACE:-workspace}"
SB=.venv/bin/segbench
[ -x "$SB" ] || SB="python3 -m segbench"   # a GPU image whose python3 already holds torch, h5py, typer, rich
$SB sweep manifests/experiments/gpu/table5_2-scr-fold1-h100.toml --root "$SCR_ROOT" --jobs "${JOBS:-1}"
