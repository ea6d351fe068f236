#!/bin/bash
# Issue 11's pooling models alone (bench/gpu/i11_pooling.py) in one device call, after the
# receive.sh calls of ../shared/device-vllm/README.md:  bash bench/gpu/run_i11_pooling.sh [SECONDS]
# No new vLLM start begins SECONDS (default 480) after this script starts. $OUT receives
# results.jsonl, gpuinfo.json, logs.tar.gz (whole logs) and run.log.
start=$(date +%s)
deadline=$((start + ${1:-480}))
export PYTHONUNBUFFERED=1
mkdir -p "${OUT:=/tmp/i11-pooling-out}"
exec > >(tee -a "$OUT/run.log") 2>&1
source .vllm-wheels/bin/env.sh || { echo "env.sh failed (wheels not received?)"; exit 3; }
python3 bench/gpu/i11_pooling.py --out "$OUT" --deadline-epoch $deadline
