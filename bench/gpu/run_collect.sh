#!/bin/bash
# On the GPU machine, from the repo root, after the six receive.sh calls (../shared/device-vllm/README.md):
#   bash bench/gpu/run_collect.sh [SECONDS] [CASE,CASE...]
# Installs the carried vLLM wheels once (env.sh), then runs bench/gpu/collect.py until SECONDS
# (default 555) after this script started; a second call on the same warm machine resumes with the
# cases not yet done. Everything comes back under $OUT (results.jsonl, logs.tar.gz, gpuinfo.json).
start=$(date +%s)
budget=${1:-555}
only=${2:-}
export PYTHONUNBUFFERED=1
mkdir -p "${OUT:=/tmp/collect-out}"
source .vllm-wheels/bin/env.sh || { echo "env.sh failed (wheels not received on this machine?)"; exit 3; }
python3 -c "import pynvml" 2>/dev/null || echo "warning: pynvml missing"
python3 bench/gpu/collect.py --out "$OUT" --deadline-epoch $((start + budget)) ${only:+--only "$only"} 2>&1 \
  | tee -a "$OUT/collect_stdout.log"
