#!/bin/bash
# Short re-check on the lent GPU of two gpushare changes (results: bench/gpu/results/h200-recheck):
#   1. `gpushare calibrate` measures a model a second time when its first start compiled from
#      scratch, and stores the warm-cache measurement ("compile_cache": "warm");
#   2. `gpushare up`'s pre-flight reads vLLM's version through the `vllm` script's interpreter
#      instead of running `vllm --version` (which took ~70 s before the first instance started).
# The profile (bench/gpu/results/h200-recheck/recheck.yaml) starts Llama-3.2-3B (dummy weights)
# through the default `vllm serve` console script, so both calibrate and up go through change 2.
#
# On the GPU machine, from the repo root, in one lease (../shared/device-vllm/README.md):
#   receive calls p0..p4:  bash .vllm-wheels/bin/receive.sh          (carry .vllm-wheels/pN, bin)
#   last receive call:     bash bench/gpu/run_recheck.sh prep        (carry p5, bin, .gpushare-wheels)
#       = receive.sh, the vLLM wheels and gpushare's missing deps installed, the dummy model folder,
#         the pre-flight's version check timed on its own; nothing starts vLLM, so the
#         torch.compile cache stays cold
#   experiment call:       GS_DEADLINE=$(( $(date +%s) + 310 )) bash bench/gpu/run_recheck.sh run
#       = calibrate (cold cache: expected to measure twice), then, if >= 100 s are left,
#         up --no-gateway (warm cache), status --json, down. Everything is stopped at the end.
# Results: /tmp/gs-bench/res/recheck, copied to $OUT (at most 8 files; a tarball holds the rest).

MODE=${1:-run}
GS_LIB_ONLY=1 source bench/gpu/run_heldout.sh   # gs_env, write_tool/tool, gs_clean, log/left
export PYTHONUNBUFFERED=1 COLUMNS=200 GPUSHARE_STATE_DIR=/tmp/gs-state
D=$RES/recheck
PROF=bench/gpu/results/h200-recheck/recheck.yaml
NAME=recheck
MODEL=llama3.2-3b
mkdir -p $D

prep() {
  bash .vllm-wheels/bin/receive.sh
  mkdir -p /tmp/gs-wheels && cp .gpushare-wheels/*.whl /tmp/gs-wheels/ 2>/dev/null
  local t0=$(date +%s)
  gs_env || return 3
  echo "gs_env took $(( $(date +%s) - t0 )) s"
  [ -f /tmp/models/$MODEL/config.json ] || python3 .vllm-wheels/bin/make_dummy_model.py \
    gpushare/catalog/hf_configs/meta-llama--Llama-3.2-3B-Instruct.json /tmp/models/$MODEL
  python3 -c "import gpushare.cli, scipy, yaml, psutil, aiohttp, prometheus_client, platformdirs, pynvml; print('imports ok')"
  echo "vllm script: $(command -v vllm) shebang: $(head -1 "$(command -v vllm)")"
  echo "torch.compile cache before any start: $(ls -d ~/.cache/vllm/torch_compile_cache 2>/dev/null || echo none)"
  # The pre-flight's command check alone, as `up` runs it (bounded: a fallback to `vllm --version`
  # would take over a minute).
  timeout 45 python3 - <<'EOF' 2>&1 | tee $D/preflight-check.txt
import time
from gpushare.runtime.preflight import check_command, script_interpreter
from gpushare.runtime.processes import SubprocessRunner
import shutil
print("interpreter from the vllm script:", script_interpreter(shutil.which("vllm")))
t = time.time()
print(check_command(["vllm", "serve"], SubprocessRunner()), f"{time.time() - t:.2f} s")
EOF
  echo "check rc=${PIPESTATUS[0]}" | tee -a $D/preflight-check.txt
  python3 -m gpushare plan $PROF 2>&1 | tee $D/plan.txt | head -6
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
}

# Record when the instance's log file appears and when it gets its first byte (epoch seconds).
watch_log() {  # FILE OUTFILE
  local f=$1 o=$2 seen=""
  while true; do
    if [ -z "$seen" ] && [ -e "$f" ]; then seen=1; echo "log_created $(date +%s.%N)" >> $o; fi
    if [ -s "$f" ]; then echo "log_first_bytes $(date +%s.%N)" >> $o; return; fi
    sleep 0.1
  done
}

finish() {
  [ -n "$WATCHER" ] && kill $WATCHER 2>/dev/null
  python3 -m gpushare down $NAME > $D/down-final.log 2>&1
  gs_clean
  mkdir -p $D/state && cp -r "$GPUSHARE_STATE_DIR"/. $D/state/ 2>/dev/null
  rm -f $D/state/*/lock; find $D/state -type s -delete 2>/dev/null
  ls -la ~/.cache/vllm/torch_compile_cache 2>/dev/null | head -5 > $D/compile-cache-after.txt
  tar czf "$OUT/recheck-results.tar.gz" -C $RES recheck 2>/dev/null
  for f in calibrate.out up.out status.json; do [ -f $D/$f ] && cp $D/$f "$OUT/"; done
  ls -la "$OUT"
}

run() {
  write_tool
  gs_env || return 3
  echo "torch.compile cache at start: $(ls ~/.cache/vllm/torch_compile_cache 2>/dev/null | wc -l) entries"
  tool nvml > $D/nvml-before.json

  # 1. calibrate with a cold compile cache
  local t=$(( $(left) - 20 ))
  log "calibrate (outer limit ${t}s)"
  local t0=$(date +%s.%N)
  { time GPUSHARE_CALIBRATION_FILE=$OUT/calibration.json timeout $t \
      python3 -m gpushare calibrate $PROF --timeout 200 ; } > $D/calibrate.out 2>&1
  local rc=$?
  echo "rc=$rc wall_s=$(python3 -c "import time; print(round(time.time()-$t0,1))")" >> $D/calibrate.out
  cat $D/calibrate.out
  gs_clean
  [ -f $OUT/calibration.json ] && cp $OUT/calibration.json $D/ && cat $OUT/calibration.json
  for f in "$GPUSHARE_STATE_DIR"/$NAME-calibrate/logs/*.log*; do
    echo "== $f"
    grep -E "Actual usage|KV cache size|compile|Compiling|Directly load|init engine|Error" "$f" | cut -c1-300
  done | tee $D/calibrate-logs-memory.txt

  # 2. up with a warm compile cache
  if [ "$(left)" -lt 100 ]; then log "NOT STARTED up: $(left)s left, needs 100s"; return $rc; fi
  local lim=$(( $(left) - 35 )); [ $lim -gt 200 ] && lim=200
  local logf=$GPUSHARE_STATE_DIR/$NAME/logs/$MODEL.log
  local up0=$(date +%s.%N)
  echo "up_started $up0" > $D/up-times.txt
  watch_log $logf $D/up-times.txt & WATCHER=$!
  log "up --timeout $lim"
  { time GPUSHARE_CALIBRATION_FILE=$OUT/calibration.json timeout $(( lim + 25 )) \
      python3 -m gpushare up $PROF --no-gateway --timeout $lim ; } > $D/up.out 2>&1
  local urc=$?
  echo "up_finished $(date +%s.%N) rc=$urc" >> $D/up-times.txt
  kill $WATCHER 2>/dev/null; WATCHER=""
  echo "rc=$urc wall_s=$(python3 -c "import time; print(round(time.time()-$up0,1))")" >> $D/up.out
  cat $D/up.out
  python3 -m gpushare status --json > $D/status.json 2>&1
  tool nvml > $D/nvml-ready.json
  python3 -m gpushare down $NAME > $D/down.log 2>&1; echo "down rc=$?" >> $D/down.log; cat $D/down.log
  # the instance log's first vLLM timestamp and first line, against up's start
  head -3 $logf > $D/up-log-head.txt 2>/dev/null
  python3 - $D/up-times.txt $logf <<'EOF' | tee -a $D/up-times.txt
import re, sys, datetime
times = dict(l.split()[:2] for l in open(sys.argv[1]) if len(l.split()) >= 2)
up0 = float(times["up_started"])
for k in ("log_created", "log_first_bytes", "up_finished"):
    if k in times:
        print(f"{k} - up_started = {float(times[k]) - up0:.2f} s")
try:
    for line in open(sys.argv[2], errors="replace"):
        m = re.search(r"(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)", line)
        if m:
            d = datetime.datetime.fromtimestamp(up0)
            first = d.replace(hour=int(m[3]), minute=int(m[4]), second=int(m[5]), microsecond=0)
            print(f"first vLLM timestamp {m[0]} - up_started = {first.timestamp() - up0:.0f} s (1 s resolution)")
            break
except OSError as e:
    print("no instance log:", e)
EOF
  grep -E "Actual usage|KV cache size|compile|Directly load|init engine|Error" $logf 2>/dev/null | cut -c1-300 > $D/up-log-memory.txt
  return $rc
}

case $MODE in
  prep) prep 2>&1 | tee -a $D/prep.log ;;
  run) trap 'finish' EXIT; run 2>&1 | tee -a $D/run.log; cp $D/run.log "$OUT/" 2>/dev/null ;;
  *) echo "usage: $0 prep|run"; exit 2 ;;
esac
