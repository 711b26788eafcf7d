#!/usr/bin/env bash
# GPU check (benchmarks/README.md, "GPU check"): at most 8 minutes on one CUDA GPU.
#
# Trains the cloud configuration for GPU_CHECK_TRAIN_SECONDS (default 150) on simulated
# patches, then predicts a 300x1920x1920 uint16 study file to file (bf16, inference_mode,
# pinned host memory, asynchronous copies, batch size from the free device memory), and
# prints time per volume, tiles per second and peak host and device memory.
#
#   bash benchmarks/gpu_check.sh                  # on the GPU machine, from anywhere
#   GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh  # tiny sizes on any machine: checks the script only
#
# The whole run is bounded by GPU_CHECK_LIMIT_SECONDS (default 480 = 8 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
export KEDRO_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
limit="${GPU_CHECK_LIMIT_SECONDS:-480}"
args=(--train-seconds "${GPU_CHECK_TRAIN_SECONDS:-150}" --depth "${GPU_CHECK_DEPTH:-300}")
if [[ "${GPU_CHECK_SMOKE:-0}" == "1" ]]; then
  args+=(--smoke)
else
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
  python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to torch: nothing to check (GPU_CHECK_SMOKE=1 runs the script on the CPU)")'
fi
# further arguments go to gpu_check.py (e.g. --out "$OUT/gpu-check.json", --note "...")
exec timeout --signal=INT --kill-after=20 "$limit" python benchmarks/gpu_check.py "${args[@]}" "$@"
