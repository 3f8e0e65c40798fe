#!/usr/bin/env bash
# Issue 12, "Making synthetic pairs help" (docs/RESULTS.md): GAN variants (thesis / + weight average / + DiffAugment
# as first run (collapses) / + DiffAugment colour,cutout at p 0.5 [/ + one-hot masks on CamVid]) scored by `pairgen score` and by a synthetic-only U-Net, then
# real / real + standard augmentation / real + synthetic / real + filtered synthetic with three seeds, and the
# reports. Everything that defines an experiment is in manifests/experiments/cpu/synth-help-*.toml; this script
# only orders the CLI calls. Resumable: every sweep skips complete runs, GANs and exports are reused, a score is
# skipped when its JSON exists.
#
#   bash scripts/reproduce_synth_help.sh                 # the three cells: scr10 (the target), camvid, scr100
#   bash scripts/reproduce_synth_help.sh scr10 camvid    # some of them (two shells may run different cells)
#   STAGE=gans bash scripts/reproduce_synth_help.sh scr10    # only the GAN variants (no 3-seed comparison)
#
# Environment: PAIRGEN_WORKSPACE (default ./workspace), JOBS (parallel U-Nets, default 2), PY (python with the
# project installed; default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
export PAIRGEN_WORKSPACE="${PAIRGEN_WORKSPACE:-workspace}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
PY="${PY:-.venv/bin/python}"
JOBS="${JOBS:-2}"
STAGE="${STAGE:-all}"
WS="$PAIRGEN_WORKSPACE"
M=manifests/experiments/cpu

# the GAN run / export directory a manifest uses (both exist once its sweep has run)
gan_run() { "$PY" -c "import sys; from pathlib import Path; from segbench.sweep import load_manifest, ensure_generator
m = load_manifest(Path(sys.argv[1])); print(ensure_generator(m, 1, m.preset, Path(sys.argv[2]).resolve()).parent.parent)" "$1" "$WS"; }
export_dir() { "$PY" -c "import sys; from pathlib import Path; from segbench.sweep import load_manifest, ensure_generator, ensure_export
m = load_manifest(Path(sys.argv[1])); ws = Path(sys.argv[2]).resolve()
print(ensure_export(m, 1, ensure_generator(m, 1, m.preset, ws), ws))" "$1" "$WS"; }
sweep_dir() { echo "$WS/$1/$2/seg/sweep-$3"; }

cell() {
  # variants: in training order; derived: the variants taken as the live weights of their "-ema" run
  local c="$1" dataset fold real variants derived
  case "$c" in
    scr10)  dataset=scr-lung; fold=fold1-frac10; real=16-0-NoAug
            variants="thesis-ema thesis da-ema da tc-ema tc cc-ema cc thesis3k-ema thesis3k cc3k-ema cc3k"
            derived="thesis da tc cc thesis3k cc3k" ;;
    scr100) dataset=scr-lung; fold=fold1;        real=16-0-NoAug
            variants="thesis-ema thesis da-ema da cc-ema cc thesis3k-ema thesis3k cc3k-ema cc3k"
            derived="thesis da cc thesis3k cc3k" ;;
    camvid) dataset=camvid;   fold=fold1;        real=8-0-NoAug
            variants="thesis thesis-ema da-ema da onehot-ema onehot onehot-cc-ema onehot-cc onehot3k-ema onehot3k"
            variants="$variants onehot-cc3k-ema onehot-cc3k"; derived="da onehot onehot-cc onehot3k onehot-cc3k" ;;
    *) echo "error: unknown cell $c (scr10 | scr100 | camvid)" >&2; exit 2 ;;
  esac
  local out="$WS/reports/synth-help-$c"
  mkdir -p "$out"
  # 1. GAN variants: train, export 4000 pairs, synthetic-only U-Net; a variant V without the weight average is the
  #    live weights of the V-ema run when V is in $derived (scripts/live_weights.py), not a second GAN
  for v in $variants; do
    if [[ " $derived " == *" $v "* ]]; then
      "$PY" scripts/live_weights.py "$(gan_run "$M/synth-help-$c-gan-$v-ema.toml")"
    fi
    "$PY" -m segbench sweep "$M/synth-help-$c-gan-$v.toml"
  done
  # 2. the judge: the real-only seed-0 run of the cell's comparison (trained on the real training split only;
  #    the sweep trains its three seeds, which step 4 uses)
  "$PY" -m segbench sweep "$M/synth-help-$c-compare.toml" --only "$real" --jobs "$JOBS"
  local judge; judge="$(sweep_dir "$dataset" "$fold" "synth-help-$c-compare")/$real-seed0"
  # 3. pair quality of each variant's export (alignment by the judge, FD / KID / precision / recall)
  for v in $variants; do
    [ -f "$out/score-$v.json" ] || "$PY" -m pairgen score "$(export_dir "$M/synth-help-$c-gan-$v.toml")" \
      --judge "$judge" --out "$out/score-$v.json"
  done
  # one report per variant: the synthetic-only runs of different GANs are the same configuration to the report
  for v in $variants; do
    "$PY" -m segbench report "$(sweep_dir "$dataset" "$fold" "synth-help-$c-gan-$v")" --out "$out/gan-$v"
  done
  [ "$STAGE" = gans ] && return 0
  # 4. per-pair alignment into the comparison's export (what --synth-filter 'top=50%' reads), then three seeds
  [ -f "$out/score-compare.json" ] || "$PY" -m pairgen score "$(export_dir "$M/synth-help-$c-compare.toml")" \
    --judge "$judge" --write-quality --out "$out/score-compare.json"
  "$PY" -m segbench sweep "$M/synth-help-$c-compare.toml" --jobs "$JOBS"
  local base; base="$(sweep_dir "$dataset" "$fold" "synth-help-$c-compare")"
  # the paired tests that carry the conclusion, Holm over them; labels as the report prints them (the filtered
  # runs are another variant, so every label carries its variant: @small[-frac10][-top=50%])
  # labels as segbench report names them: K-M-Aug|NoAug, then the synthetic-use tag (SegConfig.synth_use)
  local real_l="$real" aug_l="${real/NoAug/Aug}" mixed; mixed="$( [ "$c" = camvid ] && echo 4-4 || echo 8-8 )"
  local mix_l="$mixed-NoAug" top_l="$mixed-NoAug-top50" augtop_l="$mixed-Aug-top50"
  "$PY" -m segbench report "$base" --out "$out/compare" --compare "$top_l:$aug_l" --compare "$augtop_l:$aug_l" \
    --compare "$mix_l:$aug_l" --compare "$top_l:$mix_l" --compare "$top_l:$real_l" --compare "$mix_l:$real_l" \
    --compare "$aug_l:$real_l" $( [ "$c" = scr10 ] && echo --compare "$top_l-w0.5:$real_l" \
      --compare "$top_l-w0.5:$top_l" --compare "$real_l-top50-pre500:$real_l" --compare "$real_l-top50-pre500:$top_l" )
  # the mixed rows again with other GANs, reported beside the same real-only and augmentation runs: CamVid's
  # one-hot GAN (the default encoding for multi-class datasets), and in each cell the GAN with the lowest FD once
  # the later variants were measured (SCR 100 %: CC + EMA; SCR 10 % and CamVid: CC + EMA trained 3000 iterations)
  local second manifest extra
  for second in $(case "$c" in camvid) echo onehot cc3k ;; scr100) echo cc thesis3k ;; scr10) echo cc3k ;; esac); do
    manifest="$M/synth-help-$c-compare-$second.toml"
    [ -f "$out/score-compare-$second.json" ] || "$PY" -m pairgen score "$(export_dir "$manifest")" \
      --judge "$judge" --write-quality --out "$out/score-compare-$second.json"
    "$PY" -m segbench sweep "$manifest" --jobs "$JOBS"
    extra=()   # the comparisons of the rows this manifest has beyond the unaugmented mixed ones
    grep -q "label = \"$augtop_l\"" "$manifest" && extra+=(--compare "$augtop_l:$aug_l")
    grep -q "label = \"$top_l-w0.5\"" "$manifest" && extra+=(--compare "$top_l-w0.5:$real_l" --compare "$top_l-w0.5:$aug_l")
    "$PY" -m segbench report "$base/$real_l"-seed* "$base/$aug_l"-seed* \
      "$(sweep_dir "$dataset" "$fold" "synth-help-$c-compare-$second")" --out "$out/compare-$second" \
      --compare "$top_l:$aug_l" --compare "$mix_l:$aug_l" --compare "$top_l:$mix_l" \
      --compare "$top_l:$real_l" --compare "$mix_l:$real_l" "${extra[@]}"
  done
}

cells=("$@")
[ ${#cells[@]} -gt 0 ] || cells=(scr10 camvid scr100)
for c in "${cells[@]}"; do
  cell "$c"
done
