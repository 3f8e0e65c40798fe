#!/usr/bin/env bash
# Everything one short GPU lease is for, in one call (issues 4 and 5). Each stage runs under its own time limit,
# so a slow stage cannot cost the next one its figures; STAGES picks them (default: all three, in this order):
#   profile  scripts/profile_gan.py: where a thesis lung GAN iteration's time goes, eager (PROFILE_S, 60 s) and
#            with the compiled critic step (PROFILE_COMPILED_S, 240 s)
#   bench    scripts/gpu_check.sh: the benchmarks at the thesis presets vs their plain references (BENCH_S, 210 s)
#   thesis   scripts/reproduce_thesis_one_fold_h100.sh: table 5.2 on SCR fold 1 at thesis scale   (THESIS_S, 300 s)
#            (if it fails, e.g. in GAN training, the two real-only rows are still run), then segbench report
#            over whatever finished and the generator's sample sheet
# Measured on one H200 (2026-11-27): the bench's GAN and export workloads alone took the 200 s given to them, and
# the GAN of the thesis stage ran at ~6 it/s (2000 iterations: 5.3 min). So one call of a 15-minute lease (at most
# 600 s) fits `STAGES="profile bench"` (≤ 510 s) or `STAGES=thesis` (the one-fold run needs ~11 min of its own:
# give it THESIS_S=560 and expect the last U-Nets to be cut), not all three.
# Results go to $OUT (the device tool's output folder; default ./gpu-out): profile.txt, gpu_bench.json, bench.log,
# thesis.log, report.txt, runs.tgz (configs, logs, summaries, per-image CSVs, report; no weights, no images),
# gan-scr-fold1-thesis.png. Needs SCR_ROOT (the SCR lung tree; default ../shared/data/scr-lung) for `thesis`.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
export COLUMNS=160 PYTHONUNBUFFERED=1 PAIRGEN_WORKSPACE="${PAIRGEN_WORKSPACE:-/tmp/pairgen-ws}" JOBS="${JOBS:-2}"
export SCR_ROOT="${SCR_ROOT:-../shared/data/scr-lung}"
STAGES="${STAGES:-profile bench thesis}"
WS="$PAIRGEN_WORKSPACE"
PY=.venv/bin/python; [ -x "$PY" ] || PY=python3   # the GPU image's python3 holds torch, h5py, typer, rich
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

if [[ " $STAGES " == *" profile "* ]]; then
  timeout "${PROFILE_S:-60}" "$PY" scripts/profile_gan.py --preset thesis > "$OUT/profile.txt" 2>&1
  stamp "profile rc=$?"
  head -n 40 "$OUT/profile.txt"
  # the same with the compiled critic step (compiling takes a minute or two, untimed)
  timeout "${PROFILE_COMPILED_S:-240}" "$PY" scripts/profile_gan.py --preset thesis --compile \
    > "$OUT/profile-compiled.txt" 2>&1
  stamp "profile (compiled) rc=$?"
  head -n 40 "$OUT/profile-compiled.txt"
fi

if [[ " $STAGES " == *" bench "* ]]; then
  timeout "${BENCH_S:-210}" bash scripts/gpu_check.sh "$OUT/gpu_bench.json" > "$OUT/bench.log" 2>&1
  stamp "bench rc=$?"
  grep -v '^\s*$' "$OUT/bench.log" | tail -n 25
fi

if [[ " $STAGES " == *" thesis "* ]]; then
  timeout "${THESIS_S:-300}" bash scripts/reproduce_thesis_one_fold_h100.sh > "$OUT/thesis.log" 2>&1
  rc=$?
  stamp "thesis rc=$rc"
  if [ "$rc" != 0 ] && [ "$rc" != 124 ]; then
    timeout "${FALLBACK_S:-120}" "$PY" -m segbench sweep manifests/experiments/gpu/table5_2-scr-fold1-h100.toml \
      --root "$SCR_ROOT" --only '16-0-' --jobs "$JOBS" >> "$OUT/thesis.log" 2>&1
    stamp "real-only fallback rc=$?"
  fi
  tr '\r' '\n' < "$OUT/thesis.log" | grep -v '^\s*$' | grep -v 'it/s' | tail -n 30
  runs="$WS/scr-lung/fold1/seg/sweep-table5_2-scr-fold1-h100"
  [ -d "$runs" ] && "$PY" -m segbench report "$runs" --out "$WS/reports/gpu-fold1" > "$OUT/report.txt" 2>&1
  [ -f "$OUT/report.txt" ] && cat "$OUT/report.txt"
  ckpt=$(ls "$WS"/scr-lung/fold1/gan/*/checkpoints/ckpt-*.pt 2>/dev/null | tail -n 1)
  [ -n "$ckpt" ] && "$PY" -m pairgen sample --checkpoint "$ckpt" --n 16 --seed 0 --out "$OUT/gan-scr-fold1-thesis.png"
  tar czf "$OUT/runs.tgz" -C "$WS" --exclude='*.h5' --exclude='*.pt' --exclude='*.npz' --exclude='*.png' \
    scr-lung reports 2>/dev/null
fi
stamp "done"
