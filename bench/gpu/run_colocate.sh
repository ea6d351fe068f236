#!/bin/bash
# Co-location on the lent GPU (issue 6): three 7-8B models on one card through `gpushare up`, with or
# without CUDA MPS, then vLLM's benchmark client on two of them at the same time, against each of the
# two alone on the whole GPU. Run on the GPU machine, from the repo root, after the receive calls
# (../shared/device-vllm/README.md) and run_heldout.sh's setup task (wheels, dummy model folders):
#
#   GS_DEADLINE=$(( $(date +%s) + 570 )) bash bench/gpu/run_colocate.sh TASK...
#
# Tasks (skipped when less time is left than they need; not repeated on the same warm machine):
#   shared:off   profiles/colocate.yaml (mps: off): plan --json, up --no-gateway (timed), status --json,
#                `vllm bench serve` on qwen2.5-7b and llama3.1-8b at the same time, status, down
#   shared:on    the same with profiles/colocate-mps.yaml (mps: on: gpushare starts and stops its
#                own MPS daemon)
#   (GS_COLO_SUFFIX=-h100 uses profiles/colocate-h100.yaml and colocate-mps-h100.yaml instead)
#   alone:NAME   `vllm serve /tmp/models/NAME --load-format dummy --max-model-len 8192` (default
#                utilization, the whole GPU) and the same benchmark
#   heldout tasks (setup, cal:..., util:..., kv:...) are passed on to run_heldout.sh's runner.
# Results go to /tmp/gs-bench/res/colocation and are packed into $OUT/gs-results.tar.gz.

GS_LIB_ONLY=1 source bench/gpu/run_heldout.sh
BENCH_PROMPTS=${BENCH_PROMPTS:-300}
export GPUSHARE_CALIBRATION_FILE=$GS/none.json  # the plan's own (uncalibrated) numbers

bench() {  # NAME PORT DIR LABEL: vLLM's benchmark client, random dataset, 512 in / 128 out
  local name=$1 port=$2 dir=$3 label=$4
  local t0=$(date +%s.%N)
  timeout $(( $(left) - 10 )) python3 -m vllm.entrypoints.cli.main bench serve --backend openai \
    --base-url http://127.0.0.1:$port --model $name --tokenizer /tmp/models/$name \
    --dataset-name random --random-input-len 512 --random-output-len 128 \
    --num-prompts $BENCH_PROMPTS --max-concurrency 32 --ignore-eos --seed 0 \
    --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,99 \
    --save-result --result-dir $dir --result-filename $label.json > $dir/$label.log 2>&1
  local rc=$?
  echo "rc=$rc wall_s=$(python3 -c "import time; print(round(time.time()-$t0,2))") start=$t0" >> $dir/$label.log
  grep -E "Successful requests|Benchmark duration|Output token throughput|Median TTFT|P99 TTFT|Median ITL" $dir/$label.log \
    | sed "s/^/  [$label] /"
  return $rc
}

task_shared() {  # off|on
  # GS_COLO_SUFFIX picks another pair of profiles, e.g. -h100: colocate-h100.yaml / colocate-mps-h100.yaml
  local mode=$1 sfx=${GS_COLO_SUFFIX:-} name=colocate
  [ $mode = on ] && name=colocate-mps
  name=$name$sfx
  local prof=bench/gpu/profiles/$name.yaml
  local d=$RES/colocation/shared-mps-$mode$sfx; mkdir -p $d
  python3 -m gpushare plan $prof --json > $d/plan.json 2> $d/plan.err
  python3 -m gpushare plan $prof > $d/plan.txt 2>&1
  head -8 $d/plan.txt
  tool nvml > $d/nvml-before.json
  local limit=$(( $(left) - 110 )); [ $limit -gt 400 ] && limit=400
  log "up $prof --timeout $limit"
  local t0=$(date +%s.%N)
  timeout $(( limit + 60 )) python3 -m gpushare up $prof --no-gateway --timeout $limit > $d/up.log 2>&1
  local rc=$?
  local up_s=$(python3 -c "import time; print(round(time.time()-$t0,1))")
  echo "rc=$rc up_seconds=$up_s" | tee -a $d/up.log
  tail -15 $d/up.log
  python3 -m gpushare status --json > $d/status.json 2>&1
  python3 -m gpushare status > $d/status.txt 2>&1
  cat $d/status.txt
  tool nvml > $d/nvml-ready.json
  if [ $rc = 0 ]; then
    local pq pl
    pq=$(tool port-of $d/plan.json qwen2.5-7b); pl=$(tool port-of $d/plan.json llama3.1-8b)
    bench qwen2.5-7b $pq $d bench-qwen2.5-7b & local b1=$!
    bench llama3.1-8b $pl $d bench-llama3.1-8b & local b2=$!
    sleep 20; tool nvml > $d/nvml-during-bench.json
    wait $b1 $b2
    python3 -m gpushare status --json > $d/status-after-bench.json 2>&1
  fi
  python3 -m gpushare down $name > $d/down.log 2>&1
  echo "down rc=$?" >> $d/down.log; cat $d/down.log
  quit_mps
  gs_clean
  tool nvml > $d/nvml-after.json
  return $rc
}

task_alone() {  # NAME
  local name=$1 d=$RES/colocation/alone; mkdir -p $d
  local limit=$(( $(left) - 60 )); [ $limit -gt 200 ] && limit=200
  local pid; pid=$(serve_start $name 8201 $d/$name.log --max-model-len 8192)
  serve_ready $name 8201 $pid $d $limit; local rc=$?
  [ $rc = 0 ] && { bench $name 8201 $d bench-$name; rc=$?; }
  tool stop-session $pid
  grep -E "GPU KV cache size|Actual usage is|init engine" $d/$name.log | cut -c1-300
  return $rc
}

# Seconds a task needs at least (H200: shared 260 s with a cold compile cache, 187 s warm; alone
# 90-120 s; the heldout tasks as in run_heldout.sh).
cost() {
  case $1 in
    shared:*) echo 200 ;;
    alone:*) echo 110 ;;
    cal:deepseek*) echo 180 ;;
    cal:*) echo 145 ;;
    util:*) echo 100 ;;
    kv:*) echo 85 ;;
    *) echo 60 ;;
  esac
}

task_extra() {  # the tasks run_heldout.sh's run_tasks does not know
  case $1 in
    shared:*) task_shared ${1#shared:} ;;
    alone:*) task_alone ${1#alone:} ;;
    *) echo "unknown task $1"; false ;;
  esac
}

trap 'wait; gs_clean; quit_mps; pack' EXIT
write_tool
gs_env || exit 3
run_tasks "$@"
