#!/bin/bash
# Issue 11's real-GPU check in one device call. On the GPU machine, from the repo root, after the
# receive.sh calls of ../shared/device-vllm/README.md (one per part; bench/gpu/resplit_wheels.sh
# makes the parts small enough to travel with today's tree):
#
#   bash bench/gpu/run_i11.sh [SECONDS]
#
# SECONDS (default 500) after this script starts, no new vLLM start begins; a running one is cut at
# that moment less 15 s, and stopping it plus packing takes well under a minute more, so the call
# ends by about 9 minutes (run it with timeout_s=600). A second call on the same warm machine
# goes on with what the first did not reach.
#
# Steps: (1) read-only GPU queries for issue 14's MIG table (never -mig, -cgi or a setting);
# (2) the dummy model folders, in the background while (3) env.sh installs vLLM 0.26.0 once;
# (4) bench/gpu/i11_suite.py: six models started together with a fixed KV size, then one at a
# time at a utilization.
#
# $OUT receives 8 files: mig-lgip.txt, mig-lgipp.txt, nvidia-smi-q.txt, results.jsonl (what
# bench/gpu/compare.py reads), gpuinfo.json, logs.tar.gz (every vLLM log, whole), folders.tar.gz
# (the dummy folders less their tokenizer.json) and run_i11.log (this script's output).
start=$(date +%s)
budget=${1:-500}
deadline=$((start + budget))
export PYTHONUNBUFFERED=1
mkdir -p "${OUT:=/tmp/i11-out}"
exec > >(tee -a "$OUT/run_i11.log") 2>&1
log() { echo "[i11 $(date +%H:%M:%S) +$(( $(date +%s) - start ))s] $*"; }

# (1) Read-only queries. With MIG mode off the two mig listings may print an error: kept as printed.
log "nvidia-smi queries"
query() {  # FILE ARGS...
  local file=$1; shift
  { echo "\$ nvidia-smi $*"; timeout 60 nvidia-smi "$@" 2>&1; echo "[exit code $?]"; } > "$OUT/$file"
}
query mig-lgip.txt mig -lgip
query mig-lgipp.txt mig -lgipp
query nvidia-smi-q.txt -q
head -c 400 "$OUT/mig-lgip.txt"; echo

# (2) Folders need tokenizers and transformers only (on the machine), not vLLM.
log "dummy folders (background)"
python3 bench/gpu/i11_suite.py --folders-only > /tmp/i11-folders.log 2>&1 &
folders_pid=$!

# (3) vLLM 0.26.0 from the carried wheels (about 30 s the first time on a machine).
log "env.sh"
source .vllm-wheels/bin/env.sh || { log "env.sh failed (wheels not received on this machine?)"; exit 3; }
python3 -c "import pynvml" 2>/dev/null || log "warning: pynvml missing"
wait $folders_pid; rc=$?
log "folders rc=$rc: $(tail -c 600 /tmp/i11-folders.log)"

# (4) The measurements.
log "i11_suite (deadline +${budget}s)"
python3 bench/gpu/i11_suite.py --out "$OUT" --deadline-epoch $deadline

# The folders as served, less their tokenizer.json (several MB of filler tokens each).
tar czf "$OUT/folders.tar.gz" -C /tmp/models --exclude=tokenizer.json \
  $(python3 bench/gpu/i11_folders.py --list | cut -f1) 2>/dev/null
log "done"
ls -la "$OUT"
