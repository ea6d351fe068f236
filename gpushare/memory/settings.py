"""The `vllm serve` settings that change memory use, the GPU as the memory model sees it, and the
defaults vLLM picks when a setting is left out (each rule here once; everything else asks).

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from gpushare.architectures import PoolingTask, Runner
from gpushare.errors import InputError
from gpushare.hfconfig import ModelArch, Quantization
from gpushare.units import GiB
from gpushare.versions import parse_version as parse_version  # re-exported: memory/ asks here

DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "float16": 2,
    "half": 2,
    "bfloat16": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
    "fp8_inc": 1,
    "int8": 1,
}
KvCacheDtype = Literal["auto", "bfloat16", "float16", "fp8", "fp8_e4m3", "fp8_e5m2"]
"""The KV-cache dtypes gpushare knows (vLLM's `--kv-cache-dtype`, config/cache.py CacheDType)."""
KV_CACHE_DTYPES: tuple[KvCacheDtype, ...] = ("auto", "bfloat16", "float16", "fp8", "fp8_e4m3", "fp8_e5m2")
DEFAULT_VLLM_VERSION = "0.26.0"
__all__ = ["PoolingTask", "Runner"]  # the runner vocabulary is gpushare/architectures.py's
MmEncoderTpMode = Literal["weights", "data"]
"""vLLM's `--mm-encoder-tp-mode` (config/multimodal.py MMEncoderTPMode)."""
# vLLM's limit for a modality `--limit-mm-per-prompt` does not name (config/multimodal.py:320-333).
DEFAULT_MM_LIMIT = 999


@dataclass(frozen=True)
class SettingRule:
    """The values vLLM 0.26 accepts for one whole-number setting, and the fix for one it refuses.
    The profile's schema takes its bounds from here (pydantic `Field(**rule.field_bounds())`) and
    words its errors with `problem`; `gpushare estimate` checks its options with `problem` too."""

    minimum: int = 1
    multiple_of: int | None = None
    maximum: int | None = None
    why: str = ""
    """Said with the fix, in brackets, e.g. which vLLM code refuses other values."""

    def problem(self, value: object) -> str | None:
        """What is wrong with `value` and what to write instead; None when vLLM takes it."""
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected a whole number, got {value!r}"
        why = f" ({self.why})" if self.why else ""
        if self.multiple_of is not None and (value < self.minimum or value % self.multiple_of):
            lower = max(value // self.multiple_of * self.multiple_of, self.minimum)
            upper = lower + self.multiple_of
            fix = str(lower) if value <= lower else f"{lower} or {upper}"
            return f"must be a multiple of {self.multiple_of}{why}, got {value}; use {fix}"
        if value < self.minimum:
            return f"must be {self.minimum} or more{why}, got {value}; set it to {self.minimum} or more"
        if self.maximum is not None and value > self.maximum:
            return f"must be {self.maximum} or less{why}, got {value}; set it to {self.maximum} or less"
        return None

    def field_bounds(self) -> dict[str, Any]:
        """The bounds as pydantic Field arguments, so the JSON Schema states them too."""
        bounds: dict[str, Any] = {"ge": self.minimum}
        if self.multiple_of is not None:
            bounds["multiple_of"] = self.multiple_of
        if self.maximum is not None:
            bounds["le"] = self.maximum
        return bounds


BLOCK_SIZE_MULTIPLE = 16
SETTING_RULES: dict[str, SettingRule] = {
    "max_model_len": SettingRule(),
    # vLLM 0.26 CacheConfig.block_size is only `gt=0` (config/cache.py), but the attention backend
    # must take it or the engine stops with "No valid attention backend found" (platforms/cuda.py):
    # FLASH_ATTN, TRITON_ATTN, FLEX_ATTENTION, FLASH_ATTN_MLA, TRITON_MLA and CPU_ATTN take multiples
    # of 16, FlashInfer 16/32/64 (v1/attention/backends/*: get_supported_kernel_block_sizes,
    # supports_block_size).
    "block_size": SettingRule(
        minimum=BLOCK_SIZE_MULTIPLE,
        multiple_of=BLOCK_SIZE_MULTIPLE,
        why="vLLM 0.26's attention backends take 16, 32, 48, ...",
    ),
    "max_num_seqs": SettingRule(),
    "max_num_batched_tokens": SettingRule(),
    "tensor_parallel_size": SettingRule(maximum=64),
    "concurrency": SettingRule(),
    "kv_tokens": SettingRule(),
}
"""Whole-number settings of an instance (vLLM's flags and gpushare's capacity targets), by field name."""

VLLM_VERSION_PATTERN = r"^\d+\.\d+(\.\d+)?([.+-]?[A-Za-z0-9.+-]*)$"
_VERSION = re.compile(VLLM_VERSION_PATTERN)


def vllm_version_problem(text: str) -> str | None:
    """What is wrong with a vLLM version string ('0.26.0', '0.30.0rc1', '0.26.0+cu128' are fine)."""
    if isinstance(text, str) and _VERSION.match(text):
        return None
    return f"{text!r} is not a vLLM version; write it as MAJOR.MINOR.PATCH, e.g. {DEFAULT_VLLM_VERSION}"


@dataclass(frozen=True)
class GpuTarget:
    """What the memory model needs to know of a GPU."""

    name: str
    cuda_total_bytes: int  # what torch.cuda.mem_get_info reports as total (vLLM's base)
    nvml_total_bytes: int
    is_a100: bool = False
    compute_capability: tuple[int, int] = (9, 0)


@dataclass(frozen=True)
class ServeSettings:
    """The `vllm serve` settings that change memory use. None means vLLM's default."""

    max_model_len: int | None = None
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    block_size: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    quantization: str | None = None  # online quantization, e.g. "fp8" of a bf16 checkpoint
    vllm_version: str = DEFAULT_VLLM_VERSION
    estimate_cudagraphs: bool | None = None  # VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS
    runner: Runner = "generate"  # pooling: embedders and classifiers, no lm_head/sampler
    task: PoolingTask | None = None  # under the pooling runner: --convert (None: the model's own)
    # Multimodal models (vLLM's MultiModalConfig): items per prompt by modality
    # (--limit-mm-per-prompt; a modality left out keeps vLLM's 999), every limit 0
    # (--language-model-only), and how the vision tower is split over TP ranks.
    mm_limits: tuple[tuple[str, int], ...] = ()
    language_model_only: bool = False
    mm_encoder_tp_mode: MmEncoderTpMode = "weights"


def modality_limit(settings: ServeSettings, modality: str) -> int:
    """Items of `modality` one prompt may carry, as vLLM reads it
    (MultiModalConfig.get_limit_per_prompt, config/multimodal.py:320-333): 0 for every modality
    with --language-model-only, else the --limit-mm-per-prompt count, else 999."""
    if settings.language_model_only:
        return 0
    return dict(settings.mm_limits).get(modality, DEFAULT_MM_LIMIT)


def with_modalities(
    settings: ServeSettings,
    modalities: object,
    encoder_tp_mode: str | None = None,
) -> ServeSettings:
    """`settings` with a profile's `modalities` (`off`, a mapping of modality to count, or None)
    and `mm_encoder_tp_mode` applied."""
    if modalities == "off":
        settings = replace(settings, language_model_only=True)
    elif isinstance(modalities, Mapping):
        limits = tuple(sorted((str(k), int(n)) for k, n in modalities.items()))
        settings = replace(settings, mm_limits=limits)
    if encoder_tp_mode is not None:
        if encoder_tp_mode not in ("weights", "data"):
            raise InputError(f"--mm-encoder-tp-mode {encoder_tp_mode!r}: use weights or data")
        settings = replace(settings, mm_encoder_tp_mode="data" if encoder_tp_mode == "data" else "weights")
    return settings


# ---------------------------------------------------------------------------------------------
# Defaults vLLM picks


def default_utilization(version: str) -> float:
    """vLLM's default gpu_memory_utilization: 0.92 from 0.20.0 on, 0.9 before (VLLM-MEMORY.md)."""
    return 0.92 if parse_version(version) >= (0, 20, 0) else 0.9


def default_batching(gpu: GpuTarget, vllm_version: str = DEFAULT_VLLM_VERSION) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) defaults of the OpenAI server (engine/arg_utils.py):
    8192 and 1024 when NVML's total is at least 70 GiB and the GPU is not an A100, else 2048 and
    256; from vLLM 0.28 on, 16384 and 1024 at 160 GiB and more.

    vLLM's "device_memory >= 70 * GiB_bytes and 'a100' not in device_name": the memory is
    NvmlCudaPlatform.get_device_total_memory (NVML's total, reserved included), the name NVML's,
    lower-cased (`GpuTarget.is_a100`)."""
    if gpu.nvml_total_bytes >= 160 * GiB and parse_version(vllm_version) >= (0, 28, 0):
        return 16384, 1024
    if gpu.nvml_total_bytes >= 70 * GiB and not gpu.is_a100:
        return 8192, 1024
    return 2048, 256


def with_batching_defaults(
    settings: ServeSettings, gpu: GpuTarget, arch: ModelArch | None = None
) -> ServeSettings:
    """`settings` with vLLM's batching defaults for `gpu` filled in where they were left out, so the
    numbers stay those of `gpu` when the settings are evaluated elsewhere (an unbounded target, a
    calibration key).

    As engine/arg_utils.py L2640-2716 fills them: a default batch is raised to max_model_len when
    chunked prefill is off (encoder-only models: config/model.py "Pooling models with
    bidirectional attn do not support chunked prefill") and capped at max_num_seqs ×
    max_model_len; a default max_num_seqs is capped at the batch. `arch` gives the model's
    defaults (context length, encoder-only); without it only the GPU's are filled in."""
    batched, seqs = default_batching(gpu, settings.vllm_version)
    seqs = settings.max_num_seqs or seqs
    if settings.max_num_batched_tokens is None:
        max_len = settings.max_model_len or (arch.max_position_embeddings if arch is not None else None)
        if max_len is not None:
            if arch is not None and arch.encoder_only:
                batched = max(max_len, batched)
            batched = min(seqs * max_len, batched)
    else:
        batched = settings.max_num_batched_tokens
    if settings.max_num_seqs is None:
        seqs = min(seqs, batched)
    return replace(settings, max_num_batched_tokens=batched, max_num_seqs=seqs)


def model_dtype(arch: ModelArch, settings: ServeSettings) -> str:
    """vLLM's `--dtype auto`: the checkpoint's dtype; float32 is served as bfloat16 on GPUs, or
    float16 under the pooling runner."""
    if settings.dtype != "auto":
        if settings.dtype not in DTYPE_BYTES:
            raise InputError(f"dtype {settings.dtype!r} is not one of bfloat16, float16, float32")
        return settings.dtype
    dtype = arch.torch_dtype
    if dtype in ("float32", "float"):
        # config/model.py _resolve_auto_dtype: a pooling model prefers float16 (bge-m3: "Downcasting
        # torch.float32 to torch.float16"), a generator the platform's first dtype, bfloat16.
        return "float16" if settings.runner == "pooling" else "bfloat16"
    if arch.quantization is not None and arch.quantization.method in ("gptq", "awq") and dtype == "bfloat16":
        return "float16"  # GPTQ/AWQ kernels run in half precision; vLLM casts bf16 to fp16
    return dtype if dtype in DTYPE_BYTES else "bfloat16"


def kv_dtype_bytes(arch: ModelArch, settings: ServeSettings) -> int:
    kv = settings.kv_cache_dtype
    if kv == "auto":
        return DTYPE_BYTES[model_dtype(arch, settings)]
    if kv not in KV_CACHE_DTYPES:
        raise InputError(
            f"kv cache dtype {kv!r} is not supported",
            hint=f"use one of {', '.join(KV_CACHE_DTYPES)}",
        )
    return DTYPE_BYTES[kv]


def default_block_size(arch: ModelArch, gpu: GpuTarget) -> int:
    """vLLM 0.26 takes the first attention backend of its priority list (platforms/cuda.py) and
    that backend's preferred block size: 16 for FlashAttention and, for MLA, FLASH_ATTN_MLA on
    Hopper (DeepSeek-V2-Lite on an H100: 36,345 blocks of 16) and Triton MLA before it; on
    Blackwell (10.x) MLA goes to FlashInfer MLA, whose smallest block is 32."""
    if arch.mla is not None and gpu.compute_capability[0] == 10:
        return 32
    return 16


def online_quantization(settings: ServeSettings) -> Quantization | None:
    if settings.quantization is None:
        return None
    if settings.quantization != "fp8":
        raise InputError(
            f"--quantization {settings.quantization!r}: only fp8 online quantization is modelled",
            hint="for GPTQ/AWQ use a quantized checkpoint; its config.json carries quantization_config",
        )
    return Quantization(method="fp8", bits=8, group_size=-1, zero_point=False, weight_kind="float")


# Architectures vLLM 0.26 serves with its V2 model runner even though they are MoE
# (config/vllm.py DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES); every dense model uses it too.
V2_RUNNER_MOE_ARCHITECTURES = frozenset(
    {
        "DeepseekV2ForCausalLM",
        "GraniteMoeForCausalLM",
        "InklingForCausalLM",
        "InklingForConditionalGeneration",
        "LongcatFlashNgramForCausalLM",
        "Qwen2MoeForCausalLM",
    }
)
V1_MOE_NOTE = (
    "MoE model on vLLM's V1 model runner: its activation and CUDA-graph terms follow vLLM's source and "
    "were checked on two models (Qwen3-30B-A3B-FP8 on an H100: KV tokens +1.0%, footprint not "
    "measured; gpt-oss-20b on an H200: KV tokens -0.1%, footprint +0.3%); `gpushare calibrate` "
    "measures it"
)


def moe_on_v1_runner(arch: ModelArch) -> bool:
    """A MoE model that vLLM 0.26 runs on its older (V1) model runner (every dense model and the
    MoE architectures of V2_RUNNER_MOE_ARCHITECTURES use V2; config/vllm.py)."""
    return arch.moe is not None and not set(arch.architectures) & V2_RUNNER_MOE_ARCHITECTURES


def on_v1_runner(arch: ModelArch, settings: ServeSettings) -> bool:
    """Whether vLLM 0.26 runs this instance on its V1 model runner (config/vllm.py L549-623
    use_v2_model_runner): every pooling model, and the MoE models of `moe_on_v1_runner`."""
    return settings.runner == "pooling" or moe_on_v1_runner(arch)
