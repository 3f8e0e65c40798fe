#!/usr/bin/env bash
# Everything one short GPU lease is for, in one call (issues 4 and 5). Each stage runs under its own time limit and
# writes its own JSON, so a slow or failing stage cannot cost the next one its figures; STAGES picks them (default:
# every stage but compile and thesis, in this order; all of them take ~12 min: pick what one call of a lease
# fits; `thesis` is a lease of its own):
#   gan         scripts/bench.py gan-train at the thesis preset: the project's loop (CUDA graph on: the default)
#               vs the plain reference                                                          (GAN_S, 75 s)
#   gan-graph   the CUDA-graph ablation (graph vs eager iterations, paired) and the agreement check (GAN_GRAPH_S, 145 s)
#   unet        unet-train: lung (batch 16) and Cityscapes (batch 8) U-Nets vs the plain reference (UNET_S, 60 s)
#   probe       scripts/probe_capture.py: which part of the lung U-Net step fails CUDA-graph capture (PROBE_S, 70 s)
#   unet-graph  the U-Net CUDA-graph ablation and agreement check; skipped when the probe's full step failed
#                                                                                              (UNET_GRAPH_S, 45 s)
#   export      scripts/bench.py export: 20,000 thesis lung pairs through the threaded writer  (EXPORT_S, 110 s)
#   pipeline    scripts/bench.py pipeline                                                      (PIPELINE_S, 60 s)
#   profile     scripts/profile_gan.py: where an eager thesis GAN iteration's time goes, CPU vs GPU (PROFILE_S, 60 s)
#   compile     the same with the compiled critic step (compiling takes minutes)         (PROFILE_COMPILED_S, 240 s)
#   thesis      scripts/reproduce_thesis_one_fold_h100.sh: table 5.2 on SCR fold 1 at thesis scale (THESIS_S, 300 s)
#               (if it fails, e.g. in GAN training, the two real-only rows are still run), then segbench report
#               over whatever finished and the generator's sample sheet
# Measured on one H200 (2026-11-27, eager): the GAN of the thesis stage ran at ~6 it/s (2000 iterations: 5.3 min),
# so the one-fold run needs ~11 min of a lease of its own (THESIS_S=560; expect the last U-Nets to be cut).
# Results go to $OUT (the device tool's output folder; default ./gpu-out): bench-<stage>.json, bench.log,
# profile.txt, thesis.log, report.txt, runs.tgz (configs, logs, summaries, per-image CSVs, report; no weights, no
# images), gan-scr-fold1-thesis.png. Needs SCR_ROOT (the SCR lung tree; default ../shared/data/scr-lung) for thesis.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
export COLUMNS=160 PYTHONUNBUFFERED=1 PAIRGEN_WORKSPACE="${PAIRGEN_WORKSPACE:-/tmp/pairgen-ws}" JOBS="${JOBS:-2}"
export SCR_ROOT="${SCR_ROOT:-../shared/data/scr-lung}"
STAGES="${STAGES:-gan gan-graph unet probe unet-graph export pipeline profile}"
WS="$PAIRGEN_WORKSPACE"
PY=.venv/bin/python; [ -x "$PY" ] || PY=python3   # the GPU image's python3 holds torch, h5py, typer, rich
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

bench() {  # bench <stage> <seconds> <workload>: one workload of scripts/bench.py at the thesis preset
  local log="/tmp/gpu-session-$1.log"   # the device tool returns at most 8 files: one log for all stages
  timeout "$2" "$PY" scripts/bench.py --device cuda --preset thesis --workload "$3" --json "$OUT/bench-$1.json" \
    > "$log" 2>&1
  stamp "$1 rc=$?"
  { echo "=== $1 ($3)"; cat "$log"; } >> "$OUT/bench.log"
  grep -v '^\s*$' "$log" | tail -n 12
}
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" || true
[[ " $STAGES " == *" gan "* ]] && bench gan "${GAN_S:-75}" gan-train
[[ " $STAGES " == *" gan-graph "* ]] && bench gan-graph "${GAN_GRAPH_S:-145}" gan-graph
[[ " $STAGES " == *" unet "* ]] && bench unet "${UNET_S:-60}" unet-train
probe_ok=1
if [[ " $STAGES " == *" probe "* ]]; then
  timeout "${PROBE_S:-70}" "$PY" scripts/probe_capture.py > /tmp/gpu-session-probe.log 2>&1
  stamp "probe rc=$?"
  { echo "=== probe"; cat /tmp/gpu-session-probe.log; } >> "$OUT/bench.log"
  grep "capture" /tmp/gpu-session-probe.log
  grep -q "capture step .*ok" /tmp/gpu-session-probe.log || probe_ok=0
fi
[[ " $STAGES " == *" unet-graph "* ]] && [ "$probe_ok" = 1 ] && bench unet-graph "${UNET_GRAPH_S:-45}" unet-graph
[[ " $STAGES " == *" export "* ]] && bench export "${EXPORT_S:-110}" export
[[ " $STAGES " == *" pipeline "* ]] && bench pipeline "${PIPELINE_S:-60}" pipeline

if [[ " $STAGES " == *" profile "* ]]; then
  timeout "${PROFILE_S:-60}" "$PY" scripts/profile_gan.py --preset thesis > "$OUT/profile.txt" 2>&1
  stamp "profile rc=$?"
  head -n 30 "$OUT/profile.txt"
fi
if [[ " $STAGES " == *" compile "* ]]; then
  timeout "${PROFILE_COMPILED_S:-240}" "$PY" scripts/profile_gan.py --preset thesis --compile \
    > "$OUT/profile-compiled.txt" 2>&1
  stamp "profile (compiled) rc=$?"
  head -n 30 "$OUT/profile-compiled.txt"
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
