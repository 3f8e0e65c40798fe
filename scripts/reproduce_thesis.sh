#!/usr/bin/env bash
# Issue 4, thesis scale (for a CUDA machine): tables 5.1-5.4 with the thesis presets -- 256x256 lung /
# 128x256 road scenes, the networks of tables 4.1-4.4, 10000 GAN iterations per fold, U-Net early stopping
# 3000/3000 -- on SCR lung (3 folds) and CamVid (the open stand-in for Cityscapes). Everything is defined in the
# checked-in manifests under manifests/experiments/; this script only calls the CLIs. Resumable.
#
#   bash scripts/reproduce_thesis.sh           # tables 5.2 and 5.4, then the searches 5.1 and 5.3
#   bash scripts/reproduce_thesis.sh core      # only tables 5.2 and 5.4
#
# Environment: SCR_ROOT, CAMVID_ROOT (default ../shared/data/{scr-lung,camvid} relative to the repository),
# PAIRGEN_WORKSPACE (default ./workspace), JOBS (parallel U-Net runs, one per GPU; default: the GPU count).
set -euo pipefail
cd "$(dirname "$0")/.."
SCR_ROOT="${SCR_ROOT:-../shared/data/scr-lung}"
CAMVID_ROOT="${CAMVID_ROOT:-../shared/data/camvid}"
JOBS="${JOBS:-$(nvidia-smi -L 2>/dev/null | grep -c GPU || true)}"
[ "${JOBS:-0}" -ge 1 ] || JOBS=1
export PAIRGEN_WORKSPACE="${PAIRGEN_WORKSPACE:-workspace}"
M=manifests/experiments
SB=.venv/bin/segbench

$SB sweep "$M/table5_2-scr.toml" --root "$SCR_ROOT" --jobs "$JOBS"
$SB sweep "$M/table5_4-camvid.toml" --root "$CAMVID_ROOT" --jobs "$JOBS"
[ "${1:-all}" = core ] && exit 0
$SB sweep "$M/table5_1-scr-aug-search.toml" --root "$SCR_ROOT" --jobs "$JOBS"
$SB sweep "$M/table5_3-camvid-aug-search.toml" --root "$CAMVID_ROOT" --jobs "$JOBS"
