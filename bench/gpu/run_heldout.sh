#!/bin/bash
# Held-out accuracy and calibration on the lent GPU (issue 6). Run on the GPU machine, from the repo
# root, after the six receive calls of ../shared/device-vllm/README.md (and the gpushare wheels in
# /tmp/gs-wheels, see setup below):
#
#   GS_DEADLINE=$(( $(date +%s) + 570 )) bash bench/gpu/run_heldout.sh TASK...
#
# Tasks (run in the order given; each is skipped when less time is left than it needs, and one that
# ran is not run again on the same warm machine, so a later call can pass the same list):
#   setup              wheels, imports, dummy model folders, GPU description, `vllm bench serve --help`
#   cal:NAME           gpushare calibrate bench/gpu/profiles/heldout.yaml --only NAME (the model alone,
#                      at the planned utilization), then `gpushare estimate` predictions in the background
#   util:NAME:U        `vllm serve` directly at --gpu-memory-utilization U: vLLM's log and NVML at ready
#   kv:NAME[+NAME...]  `vllm serve` directly with --kv-cache-memory-bytes 10 GiB (the models together:
#                      no profiling, so they may start at once; utilization 0.3 each for vLLM's free check)
#
# Results accumulate in /tmp/gs-bench/res/heldout and are packed, with the co-location results, into
# $OUT/gs-results.tar.gz on exit. Everything a task starts is stopped before the next one begins.
# With GS_LIB_ONLY=1 the file only defines the shared functions (run_colocate.sh sources it).

GS=/tmp/gs-bench
RES=$GS/res
KV_FIXED_BYTES=10737418240
export PYTHONUNBUFFERED=1 COLUMNS=200 GPUSHARE_STATE_DIR=/tmp/gs-state
mkdir -p "$GS/done" "$RES" "${OUT:=/tmp/gs-out}"
: "${GS_DEADLINE:=$(( $(date +%s) + 570 ))}"

log() { echo "[gs $(date +%H:%M:%S) left $(left)s] $*"; }
left() { echo $(( GS_DEADLINE - $(date +%s) )); }

# ---------------------------------------------------------------------------------- environment
gs_env() {
  # vLLM wheels (assembled and installed once per machine by env.sh), then gpushare's own
  # dependencies that the image lacks (only those whose import fails), then gpushare from the tree.
  source .vllm-wheels/bin/env.sh || { echo "env.sh failed (wheels not received on this machine?)"; return 3; }
  if [ ! -f /tmp/gpushare-site/.done ]; then
    local missing
    missing=$(python3 - <<'EOF'
import glob, importlib.util, os
need = {"highspy": "highspy", "platformdirs": "platformdirs", "yaml": "pyyaml", "psutil": "psutil",
        "aiohttp": "aiohttp", "multidict": "multidict", "yarl": "yarl", "frozenlist": "frozenlist",
        "aiosignal": "aiosignal", "aiohappyeyeballs": "aiohappyeyeballs", "propcache": "propcache",
        "attr": "attrs", "prometheus_client": "prometheus_client"}
out = []
for mod, dist in need.items():
    if importlib.util.find_spec(mod) is None:
        hits = [p for p in glob.glob("/tmp/gs-wheels/*.whl")
                if os.path.basename(p).lower().startswith(dist.lower().replace("-", "_") + "-")]
        out += hits or ["MISSING-WHEEL:" + dist]
print(" ".join(out))
EOF
)
    echo "gpushare deps to install: ${missing:-none}"
    if [ -n "$missing" ]; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpushare-site $missing \
        || return 3
    fi
    mkdir -p /tmp/gpushare-site && touch /tmp/gpushare-site/.done
  fi
  export PYTHONPATH=/tmp/vllm-site:/tmp/gpushare-site:$PWD
}

# A small helper for NVML snapshots, readiness and stopping process sessions (by id only).
write_tool() {
  cat > $GS/tool.py <<'EOF'
import json, os, signal, sys, time, urllib.request

def nvml():
    try:
        return _nvml()
    except Exception as e:  # no driver (a dry run elsewhere): say so, list nothing
        return {"time": time.time(), "error": repr(e), "procs": []}

def _nvml():
    import pynvml as nv
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(0)
    out = {"time": time.time()}
    try:
        m = nv.nvmlDeviceGetMemoryInfo(h, version=nv.nvmlMemory_v2)
        out.update(total=int(m.total), reserved=int(m.reserved), used=int(m.used), free=int(m.free))
    except Exception as e:
        m = nv.nvmlDeviceGetMemoryInfo(h)
        out.update(total=int(m.total), used=int(m.used), free=int(m.free), v2_error=repr(e))
    procs = []
    for p in nv.nvmlDeviceGetComputeRunningProcesses(h):
        d = {"pid": int(p.pid), "used": None if p.usedGpuMemory is None else int(p.usedGpuMemory)}
        for k, f in (("comm", "comm"), ("cmd", "cmdline")):
            try:
                d[k] = open(f"/proc/{p.pid}/{f}", "rb").read().replace(b"\0", b" ").decode().strip()[:200]
            except OSError:
                d[k] = None
        try:
            d["sid"] = os.getsid(p.pid)
        except OSError:
            d["sid"] = None
        procs.append(d)
    out["procs"] = procs
    nv.nvmlShutdown()
    return out

def session_pids(sid):
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getsid(int(d)) == sid:
                    pids.append(int(d))
            except OSError:
                pass
    return pids

def stop_session(sid, grace=15.0):
    """SIGTERM every process of session `sid`, SIGKILL what is left after `grace`, then wait
    until NVML no longer lists a process of it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in session_pids(sid):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        t = time.time()
        while session_pids(sid) and time.time() - t < wait:
            time.sleep(0.3)
    t = time.time()
    while time.time() - t < 20 and any(p["sid"] == sid for p in nvml()["procs"]):
        time.sleep(0.5)

def post(port, name):
    body = json.dumps({"model": name, "prompt": "the quick brown fox", "max_tokens": 1}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20) as r:
        return r.status

def wait_ready(port, name, pid, deadline):
    t0 = time.time()
    while time.time() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            print(f"exited after {time.time() - t0:.1f}s"); return 1
        try:
            if post(port, name) == 200:
                print(f"{time.time() - t0:.1f}"); return 0
        except Exception:
            pass
        time.sleep(0.5)
    print(f"timeout after {time.time() - t0:.1f}s"); return 2

cmd = sys.argv[1]
if cmd == "nvml":
    print(json.dumps(nvml()))
elif cmd == "wait-ready":
    sys.exit(wait_ready(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))
elif cmd == "stop-session":
    stop_session(int(sys.argv[2]))
elif cmd == "clean":
    # Stop the session of every process NVML lists (except an MPS server: quit its daemon instead).
    for p in nvml()["procs"]:
        if p["sid"] and "mps-server" not in (p["comm"] or "") + (p["cmd"] or ""):
            print("stopping leftover session", p["sid"], p["cmd"]); stop_session(p["sid"], 5.0)
elif cmd == "port-of":
    plan = json.load(open(sys.argv[2]))
    print([i["port"] for i in plan["instances"] if i["name"] == sys.argv[3]][0])
EOF
}
tool() { python3 $GS/tool.py "$@"; }

quit_mps() {  # quit an MPS daemon of ours still answering on one of gpushare's pipe directories
  local pipe
  for pipe in "$GPUSHARE_STATE_DIR"/*/mps/pipe; do
    [ -e "$pipe/control" ] || continue
    log "quitting MPS daemon on $pipe"
    # (gpushare's down normally quit it already; the control socket file stays behind, and the
    # control client then says "Cannot find MPS control daemon process")
    echo quit | CUDA_MPS_PIPE_DIRECTORY=$pipe CUDA_MPS_LOG_DIRECTORY=${pipe%/pipe}/log timeout 20 nvidia-cuda-mps-control
  done
}

gs_clean() { tool clean; }

pack() {
  # Copy gpushare's state (instance logs, state files, MPS logs) and pack everything into $OUT.
  mkdir -p $RES/state && cp -r "$GPUSHARE_STATE_DIR"/. $RES/state/ 2>/dev/null
  rm -f $RES/state/*/lock
  find $RES/state -type s -delete 2>/dev/null
  tar czf "$OUT/gs-results.tar.gz" -C $RES . 2>/dev/null
  ls -la "$OUT"
}

# Start `vllm serve` for /tmp/models/NAME in its own session; print its pid (= session id).
serve_start() {  # NAME PORT LOG ARGS...
  local name=$1 port=$2 logf=$3; shift 3
  setsid python3 -m vllm.entrypoints.cli.main serve /tmp/models/$name --served-model-name $name \
    --host 127.0.0.1 --port $port --load-format dummy "$@" > "$logf" 2>&1 < /dev/null &
  echo $!
}

# Wait until a started server answers a completion, then record NVML (per process) and /metrics.
serve_ready() {  # NAME PORT PID DIR LIMIT_S -> writes DIR/NAME.ready, DIR/NAME.nvml.json, DIR/NAME.metrics
  local name=$1 port=$2 pid=$3 dir=$4 limit=$5 rc
  tool wait-ready $port $name $pid $(( $(date +%s) + limit )) > $dir/$name.ready; rc=$?
  log "$name on :$port: ready rc=$rc ($(cat $dir/$name.ready))"
  if [ $rc = 0 ]; then
    sleep 1
    tool nvml > $dir/$name.nvml.json
    python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$port/metrics', timeout=10).read().decode())" \
      2>&1 | grep -E "cache_config_info|kv_cache_usage|num_gpu_blocks" > $dir/$name.metrics
  fi
  return $rc
}

# ---------------------------------------------------------------------------------- tasks
MODELS="qwen3-8b:Qwen--Qwen3-8B phi3-mini-4k:microsoft--Phi-3-mini-4k-instruct
  llama3.2-3b:meta-llama--Llama-3.2-3B-Instruct qwen2.5-1.5b:Qwen--Qwen2.5-1.5B-Instruct
  deepseek-v2-lite:deepseek-ai--DeepSeek-V2-Lite qwen2.5-7b:Qwen--Qwen2.5-7B-Instruct
  llama3.1-8b:meta-llama--Llama-3.1-8B-Instruct mistral-7b:mistralai--Mistral-7B-Instruct-v0.3"

make_models() {
  local pair name cfg pids=""
  for pair in $MODELS; do
    name=${pair%%:*}; cfg=gpushare/catalog/hf_configs/${pair#*:}.json
    [ -f /tmp/models/$name/config.json ] && continue
    python3 .vllm-wheels/bin/make_dummy_model.py $cfg /tmp/models/$name > /dev/null 2>&1 &
    pids="$pids $!"
  done
  wait $pids
  # The catalog's DeepSeek-V2-Lite config lacks "q_lora_rank": null; transformers would default it to
  # 1536 (another model). Add that one key to the dummy folder's copy.
  python3 - <<'EOF'
import json
p = "/tmp/models/deepseek-v2-lite/config.json"
c = json.load(open(p))
c.setdefault("q_lora_rank", None)
json.dump(c, open(p, "w"), indent=2)
EOF
  ls /tmp/models
}

task_setup() {
  local d=$RES/heldout; mkdir -p $d
  python3 -c "import gpushare.cli, scipy, yaml, psutil, aiohttp, prometheus_client, platformdirs, pynvml; print('imports ok')" \
    2>&1 | tee $d/imports.txt
  local bg=""
  ( python3 -m vllm.entrypoints.cli.main bench serve --help > $d/vllm-bench-serve-help.txt 2>&1 ) & bg="$bg $!"
  ( python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.version.cuda)" \
      > $d/versions.txt 2>&1 ) & bg="$bg $!"
  ( { nvidia-smi; nvidia-smi -q -d MEMORY; nvidia-smi --query-gpu=name,driver_version,memory.total,memory.reserved,compute_mode,mig.mode.current --format=csv; } \
      > $d/nvidia-smi.txt 2>&1 ) & bg="$bg $!"
  make_models > $d/models.txt 2>&1
  python3 -m gpushare gpus --json > $d/gpus.json 2>&1
  python3 -m gpushare plan bench/gpu/profiles/heldout.yaml > $d/plan.txt 2>&1
  python3 -m gpushare plan bench/gpu/profiles/heldout.yaml --json > $d/plan.json 2>&1
  head -12 $d/plan.txt
  wait $bg
  cat $d/versions.txt; tail -3 $d/nvidia-smi.txt
}

# gpushare estimate, uncalibrated (no calibration file) and calibrated (the file calibrate wrote),
# at utilization 0.3 and with the fixed KV size; in the background while the GPU runs.
estimates() {  # NAME MAX_LEN
  local name=$1 len=$2 d=$RES/heldout/estimates; mkdir -p $d
  local gpu; gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  local a="python3 -m gpushare estimate /tmp/models/$name --gpu ${gpu:-H200} --max-model-len $len --json"
  (
    GPUSHARE_CALIBRATION_FILE=$GS/none.json $a --gpu-memory-utilization 0.3 > $d/$name.u0.3.uncal.json 2>&1
    GPUSHARE_CALIBRATION_FILE=$RES/heldout/calibration.json $a --gpu-memory-utilization 0.3 > $d/$name.u0.3.cal.json 2>&1
    GPUSHARE_CALIBRATION_FILE=$GS/none.json $a --kv-cache-memory-bytes $KV_FIXED_BYTES > $d/$name.kv10g.uncal.json 2>&1
    GPUSHARE_CALIBRATION_FILE=$RES/heldout/calibration.json $a --kv-cache-memory-bytes $KV_FIXED_BYTES > $d/$name.kv10g.cal.json 2>&1
    # the flag, where this gpushare has it
    GPUSHARE_CALIBRATION_FILE=$RES/heldout/calibration.json $a --gpu-memory-utilization 0.3 --no-calibration \
      > $d/$name.u0.3.nocalflag.json 2>&1
  ) &
}

task_cal() {  # NAME
  local name=$1 d=$RES/heldout; mkdir -p $d/calibrate
  local t=$(( $(left) - 25 )); [ $t -gt 200 ] && t=200
  log "calibrate $name (--timeout $t)"
  local t0=$(date +%s.%N)
  GPUSHARE_CALIBRATION_FILE=$d/calibration.json timeout $(( t + 20 )) \
    python3 -m gpushare calibrate bench/gpu/profiles/heldout.yaml --only $name --timeout $t \
    > $d/calibrate/$name.out 2>&1
  local rc=$?
  echo "rc=$rc seconds=$(python3 -c "import time; print(round(time.time()-$t0,1))")" >> $d/calibrate/$name.out
  cat $d/calibrate/$name.out
  gs_clean
  local len=8192; [ $name = phi3-mini-4k ] && len=4096
  [ $rc = 0 ] && estimates $name $len
  return $rc
}

task_util() {  # NAME U
  local name=$1 u=$2 d=$RES/heldout/direct/util$2; mkdir -p $d
  local len=8192; [ $name = phi3-mini-4k ] && len=4096
  local limit=$(( $(left) - 25 )); [ $limit -gt 200 ] && limit=200
  tool nvml > $d/$name.before.json
  local pid; pid=$(VLLM_LOGGING_LEVEL=DEBUG serve_start $name 8101 $d/$name.log --max-model-len $len --gpu-memory-utilization $u)
  serve_ready $name 8101 $pid $d $limit; local rc=$?
  tool stop-session $pid
  grep -E "GPU KV cache size|Available KV cache|Actual usage is|Model loading took|Maximum concurrency|init engine|Error" $d/$name.log | cut -c1-400
  return $rc
}

task_kv() {  # NAME+NAME...
  local names=${1//+/ } d=$RES/heldout/direct/kv10g; mkdir -p $d
  local limit=$(( $(left) - 25 )); [ $limit -gt 200 ] && limit=200
  local port=8110 name pids="" rc=0 len
  tool nvml > $d/before.json
  for name in $names; do
    len=8192; [ $name = phi3-mini-4k ] && len=4096
    pids="$pids $name:$port:$(VLLM_LOGGING_LEVEL=DEBUG serve_start $name $port $d/$name.log --max-model-len $len \
      --gpu-memory-utilization 0.3 --kv-cache-memory-bytes $KV_FIXED_BYTES)"
    port=$((port + 1))
  done
  local p
  for p in $pids; do
    set -- ${p//:/ }
    serve_ready $1 $2 $3 $d $limit || rc=1
  done
  tool nvml > $d/all-ready.nvml.json
  local stoppers=""
  for p in $pids; do set -- ${p//:/ }; tool stop-session $3 & stoppers="$stoppers $!"; done
  wait $stoppers
  for name in $names; do
    grep -E "GPU KV cache size|reserved .* for KV|Model loading took|Maximum concurrency|init engine|Error" $d/$name.log | cut -c1-400
  done
  return $rc
}

# Seconds a task needs at least before it is started (H200, vLLM 0.26.0: calibrate took 92-140 s
# per model with a cold compile cache, a direct start 70-95 s, the kv pair 71 s).
cost() {
  case $1 in
    setup) echo 0 ;;
    cal:deepseek*) echo 180 ;;
    cal:*) echo 145 ;;
    util:*) echo 100 ;;
    kv:*) echo 85 ;;
    *) echo 60 ;;
  esac
}

run_tasks() {  # TASK...
  local t
  for t in "$@"; do
    if [ -f "$GS/done/$t" ]; then log "skip $t (done earlier: $(cat "$GS/done/$t"))"; continue; fi
    if [ "$(left)" -lt "$(cost $t)" ]; then log "NOT STARTED $t: $(left)s left, needs $(cost $t)s"; continue; fi
    log "=== $t"
    local t0=$(date +%s) rc
    case $t in
      setup) task_setup ;;
      cal:*) task_cal ${t#cal:} ;;
      util:*) IFS=: read -r _ n u <<< "$t"; task_util $n $u ;;
      kv:*) task_kv ${t#kv:} ;;
      # a script that sources this one may add tasks of its own (run_colocate.sh: shared:, alone:)
      *) if declare -F task_extra > /dev/null; then task_extra "$t"; else echo "unknown task $t"; false; fi ;;
    esac
    rc=$?
    echo "rc=$rc in $(( $(date +%s) - t0 ))s" > "$GS/done/$t"
    log "=== $t: rc=$rc in $(( $(date +%s) - t0 ))s"
    echo "$t rc=$rc $(( $(date +%s) - t0 ))s" >> $RES/tasks.txt
    pack > /dev/null
  done
}

[ -n "$GS_LIB_ONLY" ] && return 0

trap 'wait; gs_clean; quit_mps; pack' EXIT
write_tool
gs_env || exit 3
run_tasks "$@"
