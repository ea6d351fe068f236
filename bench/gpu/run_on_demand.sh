#!/bin/bash
# On-demand models on the lent H200 (issue 13): three models whose awake footprints add up to more
# than the GPU (profiles/on-demand-h200.yaml: two Llama-3.1-8B "fine-tunes" under different names
# and Qwen2.5-7B, max_model_len 8192, mps off, dummy weights), brought up with `gpushare up`, then
# driven through gpushare's gateway by on_demand_load.py. One call of at most 600 s, on the GPU
# machine, from the repo root, after the six receive calls (../shared/device-vllm/README.md); the
# gpushare wheels (.gpushare-wheels/, carried with the last receive call) go to /tmp/gs-wheels:
#
#   source .vllm-wheels/bin/env.sh && GS_DEADLINE=$(( $(date +%s) + 570 )) bash bench/gpu/run_on_demand.sh
#
# Phases, each started only when GS_DEADLINE leaves it the time it needs (the rest is noted in
# summary.md as not run):
#   setup      wheels, dummy folders (make_dummy_model.py), gpushare gpus/plan/check
#   up         gpushare up (gateway on :8000), timed; each instance's start-to-ready and first sleep
#              come from the state file
#   alone      each model woken and given a burst with no swap (tokens/s alone); NVML + host RSS of
#              every instance with that one awake
#   asleep     all put to sleep: NVML + host RSS asleep, against the plan's asleep_bytes/host_bytes
#   alternate  rounds of bursts, each model in turn: swap seconds, request wait for the wake
#              (p50/p99), tokens/s under alternation
#   restart    llama-swap's way: stop one instance, start the same `vllm serve` again, time to the
#              first completion
#   snapshots  gpushare status --json and /metrics after up and after the load
# $OUT gets summary.md, results.jsonl, run.log-like files and gs-results.tar.gz (everything else:
# logs, state, plan, snapshots), rewritten after every phase.
# GS_OD_DRY=1: a local dry run against fake servers (tests/bench/test_on_demand_load.py sets up
# the state and the gateway and calls the phases through GS_OD_PHASES).

GS_LIB_ONLY=1 source bench/gpu/run_heldout.sh   # gs_env, tool, log/left, gs_clean, pack
PROFILE=on-demand-h200
PROF=bench/gpu/profiles/$PROFILE.yaml
D=$RES/on-demand
GW=http://127.0.0.1:${GS_OD_PORT:-8000}
BURST=${GS_OD_BURST:-16}
MAX_TOKENS=${GS_OD_MAX_TOKENS:-128}
ROUNDS=${GS_OD_ROUNDS:-4}
mkdir -p $D "$OUT"
UP_S=""

drive() {  # PHASE ARGS...: the load driver, bounded by the deadline
  local phase=$1; shift
  timeout $(( $(left) > 5 ? $(left) - 3 : 2 )) python3 bench/gpu/on_demand_load.py $phase --gateway $GW \
    --plan $D/plan.json --state-dir "$GPUSHARE_STATE_DIR" --profile $PROFILE --out $D \
    --deadline $GS_DEADLINE --burst $BURST --max-tokens $MAX_TOKENS --rounds $ROUNDS \
    ${UP_S:+--up-seconds $UP_S} "$@" > $D/driver-$phase.txt 2>&1
  local rc=$?
  echo "driver $phase rc=$rc" | tee -a $D/phases.txt
  return $rc
}

snap() {  # LABEL: status --json and /metrics
  python3 -m gpushare status $PROFILE --json > $D/status-$1.json 2>&1
  python3 -c "import urllib.request as u; print(u.urlopen('$GW/metrics', timeout=10).read().decode())" \
    > $D/metrics-$1.txt 2>&1
  grep -E "^gpushare_(swaps_total|swap_duration_seconds_(sum|count)|wake_wait_seconds_(sum|count)|instance_awake)" \
    $D/metrics-$1.txt | head -20
}

publish() {  # the few files $OUT keeps, then everything else packed
  cp $D/summary.md $D/results.jsonl "$OUT"/ 2>/dev/null
  cp $D/phases.txt "$OUT"/phases.txt 2>/dev/null
  pack > /dev/null
}

need() {  # SECONDS LABEL: enough time left?
  if [ "$(left)" -lt "$1" ]; then
    echo "NOT RUN $2: $(left) s left, needs $1 s" | tee -a $D/phases.txt
    return 1
  fi
}

phase_setup() {
  mkdir -p /tmp/gs-wheels && cp .gpushare-wheels/*.whl /tmp/gs-wheels/ 2>/dev/null
  gs_env || { echo "gs_env failed" | tee -a $D/phases.txt; return 3; }
  python3 -c "import gpushare.cli, yaml, psutil, aiohttp, prometheus_client, platformdirs; print('imports ok')" \
    2>&1 | tee $D/imports.txt
  local pids=""
  [ -f /tmp/models/llama3.1-8b/config.json ] || { python3 .vllm-wheels/bin/make_dummy_model.py \
    gpushare/catalog/hf_configs/meta-llama--Llama-3.1-8B-Instruct.json /tmp/models/llama3.1-8b > $D/models.txt 2>&1 & pids="$pids $!"; }
  [ -f /tmp/models/qwen2.5-7b/config.json ] || { python3 .vllm-wheels/bin/make_dummy_model.py \
    gpushare/catalog/hf_configs/Qwen--Qwen2.5-7B-Instruct.json /tmp/models/qwen2.5-7b >> $D/models.txt 2>&1 & pids="$pids $!"; }
  ( python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" > $D/versions.txt 2>&1 ) &
  pids="$pids $!"
  wait $pids
  python3 -m gpushare gpus --json > $D/gpus.json 2>&1
  python3 -m gpushare plan $PROF --json > $D/plan.json 2> $D/plan.err
  python3 -m gpushare plan $PROF > $D/plan.txt 2>&1
  python3 -m gpushare check $PROF > $D/check.txt 2>&1; echo "check rc=$?" >> $D/check.txt
  cat $D/versions.txt $D/check.txt; sed -n 1,14p $D/plan.txt
  free -b > $D/free.txt 2>&1
}

phase_up() {
  tool nvml > $D/nvml-before-up.json
  local limit=$(( $(left) - 60 )); [ $limit -gt 240 ] && limit=240
  log "up $PROF (--timeout $limit per instance)"
  local t0=$(date +%s.%N)
  timeout $(( $(left) - 20 )) python3 -m gpushare up $PROF --timeout $limit --gateway-port ${GW##*:} > $D/up.log 2>&1
  local rc=$?
  UP_S=$(python3 -c "import time; print(round(time.time()-$t0,1))")
  echo "up rc=$rc seconds=$UP_S" | tee -a $D/phases.txt $D/up.log
  tail -8 $D/up.log
  tool nvml > $D/nvml-after-up.json
  return $rc
}

main() {
  log "=== on-demand: setup"
  phase_setup || { publish; return 3; }
  need 200 up || { publish; return 1; }
  log "=== up"
  if ! phase_up; then
    drive summary; publish; return 1
  fi
  snap after-up; drive summary; publish
  log "=== alone"
  need 45 alone && { drive alone; publish; }
  log "=== asleep"
  need 20 asleep && { drive asleep; publish; }
  log "=== alternate"
  need 40 alternate && { drive alternate; publish; }
  snap after-load
  log "=== restart (llama-swap's way)"
  need ${GS_OD_RESTART_NEEDS:-100} restart && { drive restart --restart ${GS_OD_RESTART:-llama-b}; publish; }
  drive summary
  cat $D/summary.md
}

[ -n "$GS_OD_DRY" ] && return 0 2>/dev/null

trap 'python3 -m gpushare down --all --timeout 10 > $D/down.log 2>&1; wait; gs_clean; publish' EXIT
write_tool
main
