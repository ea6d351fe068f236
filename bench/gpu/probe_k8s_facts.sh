#!/usr/bin/env bash
# Issue 15: NVML telemetry (temperature, slowdown threshold, power, GPM SM utilization) and what a
# CUDA client sees under an MPS daemon with a default pinned device-memory limit (as the NVIDIA device
# plugin sets in MPS mode). Run on the lent H200 in one call; output in results/h200-i15/k8s-facts.txt.
# Its own MPS daemon on its own pipe directory, quit at the end; the card is left as found.
set -u
cat >/tmp/c.py <<'P'
import json,sys,time,torch
f0,t0=torch.cuda.mem_get_info();e=None
try:x=torch.empty(int(sys.argv[1]),dtype=torch.uint8,device="cuda")
except Exception as x_:e=str(x_)[:80]
f1,t1=torch.cuda.mem_get_info();print(json.dumps([f0,t0,f1,t1,e]),flush=True);time.sleep(float(sys.argv[2]))
P
cat >/tmp/n.py <<'P'
import pynvml as n,time,subprocess,sys
n.nvmlInit();h=n.nvmlDeviceGetHandleByIndex(0);T=n.nvmlDeviceGetTemperatureThreshold
print("temp",n.nvmlDeviceGetTemperature(h,0),"slow",T(h,n.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN))
print("power_mw",n.nvmlDeviceGetPowerUsage(h),"limit_mw",n.nvmlDeviceGetEnforcedPowerLimit(h),"gpm",n.nvmlGpmQueryDeviceSupport(h).isSupportedDevice)
b=subprocess.Popen([sys.executable,"-c","import torch,time\na=torch.randn(8192,8192,device='cuda');t=time.time()\nwhile time.time()-t<5:a=a@a;a=a/a.norm()\ntorch.cuda.synchronize()"])
time.sleep(2.5);s1=n.nvmlGpmSampleAlloc();s2=n.nvmlGpmSampleAlloc();n.nvmlGpmSampleGet(h,s1);time.sleep(0.5);n.nvmlGpmSampleGet(h,s2)
g=n.c_nvmlGpmMetricsGet_t();g.version=n.NVML_GPM_METRICS_GET_VERSION;g.numMetrics=1;g.sample1=s1;g.sample2=s2;g.metrics[0].metricId=n.NVML_GPM_METRIC_SM_UTIL
n.nvmlGpmMetricsGet(g);print("busy sm_util",g.metrics[0].value,"util.gpu",n.nvmlDeviceGetUtilizationRates(h).gpu,"power_mw",n.nvmlDeviceGetPowerUsage(h),"temp",n.nvmlDeviceGetTemperature(h,0))
b.wait();n.nvmlGpmSampleFree(s1);n.nvmlGpmSampleFree(s2)
P
python3 /tmp/n.py
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mp CUDA_MPS_LOG_DIRECTORY=/tmp/ml;mkdir -p /tmp/mp /tmp/ml
echo nomps $(python3 /tmp/c.py 1073741824 0)
nvidia-cuda-mps-control -d;sleep 1;echo "set_default_device_pinned_mem_limit 0 20000M"|nvidia-cuda-mps-control
echo alone $(python3 /tmp/c.py 1073741824 0)
python3 /tmp/c.py 5368709120 12 >/tmp/h.txt & sleep 8
echo holder $(cat /tmp/h.txt); echo second $(python3 /tmp/c.py 1073741824 0); wait
echo over $(python3 /tmp/c.py 22020096000 0)
echo quit|nvidia-cuda-mps-control;sleep 1
