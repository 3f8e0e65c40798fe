#!/usr/bin/env bash
# The prepared GPU run of issue 5 ("Performance and scale"): scripts/bench.py at the thesis presets on one CUDA GPU
# (lung GAN, lung export, lung and Cityscapes U-Nets, data pipeline), each against its plain reference.
# Budget: under 5 minutes on one H100 (hard stop at 290 s; on an H200: GAN 74 s, export 78 s, U-Nets 40 s, pipeline
# > 45 s). Writes the JSON records to $1, else $OUT/gpu_bench.json (the device tool's output folder), else
# ./gpu_bench.json; the table goes to stdout.
#   scripts/gpu_check.sh [JSON]            ABLATE=1 scripts/gpu_check.sh   (also each speed switch on vs off:
#                                          about twice as long; run it as a second command)
set -euo pipefail
cd "$(dirname "$0")/.."
json="${1:-${OUT:-.}/gpu_bench.json}"
py=.venv/bin/python
[ -x "$py" ] || py=python3          # the GPU image's python3 holds a CUDA PyTorch; the repo needs no install
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__)"
# the headline workloads (the GAN's CUDA graph is on by default, so gan-train measures it); the graph ablations
# (gan-graph, unet-graph: ~2.5 min more on an H200) run from scripts/gpu_session.sh
extra=(--workload gan-train --workload export --workload unet-train --workload pipeline)
[ "${ABLATE:-0}" = "1" ] && extra=(--ablate --workload gan-train --workload unet-train)
timeout 290 "$py" scripts/bench.py --device cuda --preset thesis --json "$json" "${extra[@]}"
