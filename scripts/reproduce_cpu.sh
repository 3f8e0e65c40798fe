#!/usr/bin/env bash
# Issue 4, CPU scale: thesis tables 5.2 (SCR lung, 3 folds x 6 configurations) and 5.4 (CamVid as the open
# stand-in for Cityscapes, 6 configurations), GAN training per fold included, then the low-data regime
# (10/25/50 % of SCR fold 1) and the augmentation searches of tables 5.1 / 5.3, then the reports.
# The scale (32x32 lung, 32x64 CamVid, 1000 GAN iterations, U-Net early stopping 300/300 capped at 1000) is
# defined in the checked-in manifests under manifests/experiments/cpu/ -- this script only calls the CLIs.
# Resumable: rerun it after an interruption; every sweep skips complete runs and resumes GAN training.
#
#   bash scripts/reproduce_cpu.sh              # everything (an estimated 3 h on 2 shared CPU cores)
#   bash scripts/reproduce_cpu.sh core         # tables 5.2 + 5.4 and the sample sheets (measured: 1 h 03 min)
#
# Environment: SCR_ROOT, CAMVID_ROOT (default ../shared/data/{scr-lung,camvid} relative to the repository),
# PAIRGEN_WORKSPACE (default ./workspace), JOBS (parallel U-Net runs, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
SCR_ROOT="${SCR_ROOT:-../shared/data/scr-lung}"
CAMVID_ROOT="${CAMVID_ROOT:-../shared/data/camvid}"
JOBS="${JOBS:-2}"
export PAIRGEN_WORKSPACE="${PAIRGEN_WORKSPACE:-workspace}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
WS="$PAIRGEN_WORKSPACE"
M=manifests/experiments/cpu
SB=.venv/bin/segbench

# 1. table 5.2 (three GANs, 18 U-Nets) and table 5.4 (one GAN, 6 U-Nets); each sweep ends with its report in
#    $WS/reports/<manifest stem>/
$SB sweep "$M/table5_2-scr.toml" --root "$SCR_ROOT" --jobs "$JOBS"
$SB sweep "$M/table5_4-camvid.toml" --root "$CAMVID_ROOT" --jobs "$JOBS"
# the thesis' central comparison (GAN-based vs standard augmentation) and Aug vs NoAug on synthetic-only
$SB report "$WS"/scr-lung/fold{1,2,3}/seg/sweep-table5_2-scr --compare 8-8-NoAug:16-0-Aug \
  --compare 0-16-Aug:0-16-NoAug --out "$WS/reports/table5_2-scr-gan-vs-aug"
# sample sheets of the trained generators for docs/img (generated pairs only: the JSRT terms forbid
# redistributing real radiographs, so no real image goes into docs/)
mkdir -p docs/img
for fold in 1 2 3; do
  .venv/bin/pairgen sample --checkpoint "$(ls "$WS"/scr-lung/fold$fold/gan/*-small/checkpoints/ckpt-0001000.pt | tail -n 1)" \
    --n 16 --seed 0 --out docs/img/gan-scr-fold$fold.png
done
.venv/bin/pairgen sample --checkpoint "$(ls "$WS"/camvid/fold1/gan/*-small/checkpoints/ckpt-0001000.pt | tail -n 1)" \
  --n 16 --seed 0 --out docs/img/gan-camvid-fold1.png
cp "$WS/reports/table5_4-camvid/per_category.png" docs/img/camvid-per-category-cpu.png   # a bar chart, no image
# the resolution ceilings (the ground truth at the training resolution scored as a prediction)
for fold in 1 2 3; do
  $SB ceiling "$WS/scr-lung/fold$fold/real/32x32/test" --out "$WS/reports/ceiling-scr-fold$fold"
done
$SB ceiling "$WS/camvid/fold1/real/32x64/test" --out "$WS/reports/ceiling-camvid-fold1"
[ "${1:-all}" = core ] && exit 0

# 2. low-data regime on SCR fold 1: the GAN and the U-Nets see only 10 / 25 / 50 % of the training fold
for fraction in 10 25 50; do
  $SB sweep "$M/lowdata-scr-frac$fraction.toml" --root "$SCR_ROOT" --jobs "$JOBS"
done
# one report over the three fractions plus the same four configurations at 100 % (fold 1 of table 5.2)
full="$WS/scr-lung/fold1/seg/sweep-table5_2-scr"
$SB report "$WS"/scr-lung/fold1-frac10/seg "$WS"/scr-lung/fold1-frac25/seg "$WS"/scr-lung/fold1-frac50/seg \
  "$full/16-0-NoAug-seed0" "$full/8-8-NoAug-seed0" "$full/16-0-Aug-seed0" "$full/8-8-Aug-seed0" \
  --out "$WS/reports/lowdata-scr"
for fraction in 10 50; do   # what the low-data GANs generate (docs/RESULTS.md)
  .venv/bin/pairgen sample --checkpoint "$(ls "$WS"/scr-lung/fold1-frac$fraction/gan/*-small/checkpoints/ckpt-0001000.pt | tail -n 1)" \
    --n 16 --seed 0 --out docs/img/gan-scr-fold1-frac$fraction.png
done

# 3. standard-augmentation searches (tables 5.1 and 5.3), real data only, fold 1
$SB sweep "$M/table5_1-scr-aug-search.toml" --root "$SCR_ROOT" --jobs "$JOBS"
$SB sweep "$M/table5_3-camvid-aug-search.toml" --root "$CAMVID_ROOT" --jobs "$JOBS"
