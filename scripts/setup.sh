#!/usr/bin/env bash
# Create .venv and install the project (and with --test, the test tools).
# torch: an existing install is kept (a GPU user's CUDA build stays); with no torch, a machine with an NVIDIA
# driver gets the default (CUDA) build, any other machine torch==2.13.0 (a CPU build where one is on local disk).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
[ -x .venv/bin/python ] || python3 -m venv .venv
py=.venv/bin/python
quiet() {  # pip prints one harmless warning per missing local index folder on these machines; keep real output
  "$@" 2>&1 | { grep -v -E "^WARNING: Location .* is ignored" || true; }
  return "${PIPESTATUS[0]}"
}
if ! "$py" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    quiet "$py" -m pip install -q "torch>=2.6"
  else
    quiet "$py" -m pip install -q "torch==2.13.0"
  fi
fi
quiet "$py" -m pip install -q -e ".${extras}"
"$py" -c "import pairgen, segbench, torch; print('installed: torch', torch.__version__)"
