"""The memory model: what one vLLM instance takes on a GPU, and the inverse.

It follows vLLM's own accounting (v1 engine; ../shared/VLLM-MEMORY.md, vllm/v1/worker/gpu_worker.py
and vllm/v1/core/kv_cache_utils.py):

    requested   = ceil(cuda_total × gpu_memory_utilization)          (v1/worker/utils.py)
    kv_budget   = requested − weights − peak activation − non-torch  [− CUDA graphs, when the
                  profiler estimates them: VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS]
    num_blocks  = kv_budget // (page_bytes × layers per KV group)
    process     = context (outside the budget) + requested-in-use [+ CUDA graphs, when not in budget]

Pure: no I/O. Terms that vLLM measures rather than computes (peak activation, CUDA graphs,
non-torch, context) come from `Coefficients`, fitted on real runs and recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from gpushare.errors import DoesNotFitError, InputError, KvCacheTooSmallError
from gpushare.hfconfig import LayerKind, ModelArch, Quantization
from gpushare.units import GiB, KiB, MiB, cdiv, format_bytes
from gpushare.weights import load_rounding_bytes, machete_extra_bytes, weight_bytes_from_config

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
KV_CACHE_DTYPES = ("auto", "bfloat16", "float16", "fp8", "fp8_e4m3", "fp8_e5m2")
DEFAULT_VLLM_VERSION = "0.26.0"


def parse_version(text: str) -> tuple[int, int, int]:
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in text.split(".")[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class Coefficients:
    """Measured terms of vLLM's memory use (vLLM 0.26.0, CUDA 13, Hopper).

    vLLM measures these rather than computing them; the structure of each formula below comes from
    what vLLM does, the numbers from eight real runs on an H200 (bench/gpu/results/h200-vllm0.26.0,
    fitted in bench/gpu/fit.py and recorded in BENCHMARKS.md). `gpushare calibrate` replaces them
    per model and GPU.
    """

    # CUDA context and handles before vLLM's baseline snapshot, outside the budget:
    # "worker init memory snapshot: ... cuda_memory=0.51GiB" in every run.
    context_bytes: int = int(0.51 * GiB)
    # Non-torch growth during the profile run, inside the budget: 0.22 GiB in all eight runs.
    non_torch_bytes: int = int(0.22 * GiB)
    # Extra non-torch per GPU when tensor parallel (NCCL buffers, custom all-reduce). Not measured.
    tp_non_torch_bytes: int = 512 * MiB
    # Peak activation = max(one vocab × hidden matrix, the widest layer's tensors) + a per-token
    # term. Fits all six models within 0.03 GiB (e.g. Llama-3.1-8B: 0.98 + 0.12 = 1.10 GiB).
    activation_hidden_copies: int = 3
    activation_per_token_bytes: int = 13 * KiB
    # Sampler warm-up after the KV cache is allocated (gpu_worker.compile_or_warm_up_model): held
    # outside the budget, net of the activation pool freed after profiling.
    sampler_base_bytes: int = 29 * MiB
    sampler_bytes_per_logit: float = 11.38  # per row × vocab entry, rows = min(max_num_seqs, batched)
    # CUDA graphs (FULL_AND_PIECEWISE): a fixed part plus the full decode graphs, which grow with
    # hidden size × the sum of their batch sizes (0.39 GiB for Qwen2.5-0.5B .. 0.98 for Llama-8B).
    cudagraph_base_bytes: int = int(0.26 * GiB)
    cudagraph_bytes_per_token_hidden: float = 17.9


@dataclass(frozen=True)
class MeasuredTerms:
    """One model's measured terms on one GPU, from `gpushare calibrate` (vLLM's own accounting).

    They replace the computed weights, activation, non-torch and CUDA-graph terms, and the
    context + sampler warm-up outside the budget (`outside_bytes`, CUDA graphs excluded).
    """

    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    outside_bytes: int | None  # None: NVML gave no reading; the fitted context + sampler apply


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
    runner: Literal["generate", "pooling"] = "generate"  # pooling: embedding models, no lm_head/sampler


@dataclass(frozen=True)
class KvLayout:
    """How vLLM lays the KV cache out (v1 kv_cache_utils): groups of layers sharing blocks."""

    block_size: int
    kv_bytes_per_token: int  # all layers on one GPU
    page_bytes: int  # one block of one layer
    layers_per_group: int
    num_groups: int
    blocks_per_request: int  # at max_model_len, summed over groups (sliding groups hold fewer)

    @property
    def kv_block_bytes(self) -> int:
        """Bytes that one more block in the pool costs (a page in each layer of a group)."""
        return self.page_bytes * self.layers_per_group


@dataclass(frozen=True)
class Estimate:
    """One instance of one model on one GPU (per GPU when tensor parallel). All sizes in bytes."""

    model: str
    gpu: str
    vllm_version: str
    dtype: str
    kv_cache_dtype: str
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    tensor_parallel_size: int
    block_size: int
    weights_bytes: int
    weights_source: str
    kv_bytes_per_token: int
    kv_block_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    cuda_graph_in_budget: bool
    overhead_bytes: int  # context and handles outside vLLM's budget
    requested_bytes: int
    kv_cache_bytes: int
    kv_cache_tokens: int
    num_blocks: int
    max_concurrency: float
    gpu_memory_utilization: float
    kv_cache_memory_bytes: int | None
    process_bytes: int
    cuda_total_bytes: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        data = asdict(self)
        data["notes"] = list(self.notes)
        return data


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


def cudagraphs_in_budget(settings: ServeSettings, arch: ModelArch) -> bool:
    """Whether vLLM subtracts CUDA-graph memory from the KV budget (profiler estimate on).

    Seen on 0.26.0 (H100, H200): not subtracted for models on the V2 model runner (every dense
    model), whose profiler returns 0; subtracted for MoE models on the V1 runner, which estimates
    the graphs before sizing the KV cache ("Estimated CUDA graph memory: 0.74 GiB total" for
    Qwen3-30B-A3B-FP8). Later releases turn the estimate on for all; we take 0.30.0 as the first
    (the 0.33.0 source reads it as on), overridable per instance.
    """
    if settings.estimate_cudagraphs is not None:
        return settings.estimate_cudagraphs
    if moe_on_v1_runner(arch):
        return True
    return parse_version(settings.vllm_version) >= (0, 30, 0)


def model_dtype(arch: ModelArch, settings: ServeSettings) -> str:
    """vLLM's `--dtype auto`: the checkpoint's dtype, with float32 served as bfloat16 on GPUs."""
    if settings.dtype != "auto":
        if settings.dtype not in DTYPE_BYTES:
            raise InputError(f"dtype {settings.dtype!r} is not one of bfloat16, float16, float32")
        return settings.dtype
    dtype = arch.torch_dtype
    if dtype in ("float32", "float"):
        return "bfloat16"
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


# ---------------------------------------------------------------------------------------------
# KV cache


def kv_bytes_per_token_per_layer(arch: ModelArch, dtype_bytes: int, tp: int) -> int:
    """K and V of one token in one layer, on one rank (MLA: one latent, replicated per rank)."""
    if arch.mla is not None:
        return arch.kv_head_size * dtype_bytes
    heads_per_rank = max(1, arch.num_kv_heads // tp)
    return 2 * heads_per_rank * arch.kv_head_size * dtype_bytes


def kv_layout(
    arch: ModelArch, settings: ServeSettings, gpu: GpuTarget, max_model_len: int, batched: int
) -> KvLayout:
    """Groups as vLLM's hybrid KV cache manager forms them (kv_cache_utils.get_kv_cache_groups).

    Layers of one kind form a group; with several kinds, every group has as many layers as the
    smallest kind, and the pool's blocks are shared by all groups. A sliding-window group needs at
    most cdiv(min(window − 1 + max_num_batched_tokens, max_model_len), block_size) + 1 blocks per
    request (SlidingWindowSpec.max_memory_usage_bytes).
    """
    block = settings.block_size or default_block_size(arch, gpu)
    per_layer = kv_bytes_per_token_per_layer(
        arch, kv_dtype_bytes(arch, settings), settings.tensor_parallel_size
    )
    counts: dict[LayerKind, int] = {}
    for kind in arch.layer_kinds:
        counts[kind] = counts.get(kind, 0) + 1
    group_size = min(counts.values())
    full_blocks = cdiv(max_model_len, block)
    blocks_per_request = 0
    num_groups = 0
    for kind, count in counts.items():
        groups = cdiv(count, group_size)
        num_groups += groups
        if kind == "sliding" and arch.sliding_window:
            need = cdiv(min(arch.sliding_window - 1 + batched, max_model_len), block) + 1
        else:
            need = full_blocks
        blocks_per_request += groups * need
    return KvLayout(
        block_size=block,
        kv_bytes_per_token=per_layer * arch.num_layers,
        page_bytes=per_layer * block,
        layers_per_group=group_size,
        num_groups=num_groups,
        blocks_per_request=blocks_per_request,
    )


def tokens_for_blocks(layout: KvLayout, num_blocks: int, max_model_len: int) -> int:
    """The "GPU KV cache size: N tokens" vLLM logs: max concurrency × max_model_len
    (v1/core/kv_cache_utils.py). For full attention with max_model_len a multiple of the block size
    that is blocks × block size; sliding-window groups hold fewer blocks per request (Gemma-2-9B on
    the H200: 19,754 blocks, 1,025 per 8192-token request, 157,877 tokens logged)."""
    return int(num_blocks / layout.blocks_per_request * max_model_len)


# ---------------------------------------------------------------------------------------------
# Measured terms


def _mlp_width(arch: ModelArch, tp: int) -> int:
    """Columns of the widest MLP tensors live at once per token: gate_up (2I) and its product (I)."""
    if arch.moe is not None:
        inter = cdiv(arch.moe.moe_intermediate_size * arch.moe.experts_per_token, tp)
    else:
        inter = cdiv(arch.intermediate_size, tp)
    return (3 if arch.gated_mlp else 2) * inter


def activation_bytes(arch: ModelArch, dtype_bytes: int, batched: int, tp: int, coeff: Coefficients) -> int:
    """Peak activation of vLLM's profile run, as it logs it ("torch peak memory increase").

    One forward pass of `max_num_batched_tokens` tokens: the larger of a vocab × hidden matrix
    (the logits projection) and the widest layer's tensors, plus a per-token term. Measured on the
    H200: it barely moves with the batch (Llama-3.1-8B 1.10 GiB at 8192 tokens, 1.01 at 2048).
    """
    h = arch.hidden_size
    qkv_width = cdiv((arch.num_attention_heads + 2 * arch.num_kv_heads) * arch.head_dim, tp)
    widest = max(_mlp_width(arch, tp), qkv_width) + coeff.activation_hidden_copies * h
    forward = batched * widest * dtype_bytes
    vocab_matrix = cdiv(arch.vocab_size, tp) * h * dtype_bytes
    return max(forward, vocab_matrix) + batched * coeff.activation_per_token_bytes


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
    "were checked on one model only (Qwen3-30B-A3B-FP8 on an H100: KV tokens +1.2%, footprint not "
    "measured); `gpushare calibrate` measures it"
)
# vLLM's MLA chunked-prefill workspace is capped at this many rows (MLACommonMetadataBuilder).
MLA_WORKSPACE_MAX_ROWS = 64 * 1024


# SMs whose rows the V1 sampler's Triton top-k/top-p buffer holds (H100/H200 SXM: 132).
SAMPLER_BUFFER_SMS = 132
# torch's cuBLAS workspace on sm90, allocated through the caching allocator on the first GEMM.
CUBLAS_WORKSPACE_BYTES = 32 * MiB


def moe_on_v1_runner(arch: ModelArch) -> bool:
    """A MoE model that vLLM 0.26 runs on its older (V1) model runner (every dense model and the
    MoE architectures of V2_RUNNER_MOE_ARCHITECTURES use V2; config/vllm.py)."""
    return arch.moe is not None and not set(arch.architectures) & V2_RUNNER_MOE_ARCHITECTURES


def v1_runner_sampler_bytes(arch: ModelArch, dtype_bytes: int, batched: int, num_seqs: int) -> int:
    """The V1 runner's profile run ends with a dummy sampler run on min(batched, max_num_seqs)
    rows of full-vocab logits (gpu_model_runner.py profile_run): the logits in the model dtype,
    an fp32 copy, fp32 probabilities and fp32 noise live at once (14 B per row × vocab entry),
    the Triton top-k/top-p buffer (one fp32 row per SM), the hidden states and cuBLAS's
    workspace. Qwen3-30B-A3B-FP8, 1024 rows × 151,936: 2.15 GiB + the MoE workspace 0.50 GiB
    = 2.65 (2.68 logged on an H100)."""
    rows = min(batched, num_seqs)
    vocab, h = arch.vocab_size, arch.hidden_size
    logits = rows * vocab * (dtype_bytes + 3 * 4) + min(SAMPLER_BUFFER_SMS, rows) * vocab * 4
    return logits + (batched + 2 * rows) * h * dtype_bytes + CUBLAS_WORKSPACE_BYTES


def moe_workspace_bytes(arch: ModelArch, dtype_bytes: int, batched: int, tp: int) -> int:
    """The fused-MoE workspace (Triton experts): one buffer for the whole batch, kept across
    layers and steps (v1/worker/workspace.py; experts/triton_moe.py workspace_shapes:
    (T, topk, max(I, H)) + (T, topk, max(2I, H)), no chunking in 0.26)."""
    if arch.moe is None:
        return 0
    h = arch.hidden_size
    inter = cdiv(arch.moe.moe_intermediate_size, tp)
    return batched * arch.moe.experts_per_token * (max(inter, h) + max(2 * inter, h)) * dtype_bytes


def mla_dummy_bytes(
    arch: ModelArch, dtype_bytes: int, max_len: int, num_seqs: int, block_size: int, tp: int
) -> int:
    """The tensor each MLA layer allocates when it runs without attention metadata (the profile
    run and the piecewise CUDA-graph captures): the worst-case kv_b_proj output of chunked
    prefill, rows = vLLM's chunked-prefill workspace (mla_attention.py)."""
    if arch.mla is None:
        return 0
    m = arch.mla
    rows = min(max(8 * max_len, 4 * num_seqs * block_size), MLA_WORKSPACE_MAX_ROWS)
    rows = max(rows, num_seqs * block_size)
    return rows * cdiv(arch.num_attention_heads, tp) * (m.qk_nope_head_dim + m.v_head_dim) * dtype_bytes


def moe_mla_activation_bytes(
    arch: ModelArch, dtype_bytes: int, batched: int, tp: int, workspace: int, mla_dummy: int
) -> int:
    """Peak of the V2 runner's profile run for MoE and/or MLA models (vLLM 0.26, TP ranks):
    the persistent MoE workspace (`moe_workspace_bytes`), plus whichever is larger of an MLA
    layer's moment (its dummy tensor and the tensors live around it) and a MoE layer's (input,
    residual, output and the shared experts' output). DeepSeek-V2-Lite at 8192 tokens: 456 + 512
    + 161 MiB = 1.10 GiB, as logged on an H100."""
    h = arch.hidden_size
    moe_layer = batched * 4 * h * dtype_bytes if arch.moe is not None else 0
    mla_layer = 0
    if arch.mla is not None:
        m = arch.mla
        heads = cdiv(arch.num_attention_heads, tp)
        per_token = 2 * h + heads * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim)
        per_token += 2 * m.kv_lora_rank + m.qk_rope_head_dim
        mla_layer = mla_dummy + batched * per_token * dtype_bytes
    return workspace + max(moe_layer, mla_layer)


def sampler_warmup_bytes(
    arch: ModelArch, batched: int, num_seqs: int, tp: int, coeff: Coefficients, runner: str = "generate"
) -> int:
    """Memory the sampler warm-up holds after the KV cache exists (outside vLLM's budget).

    vLLM warms the sampler with min(max_num_seqs, max_num_batched_tokens) rows of logits after
    allocating the KV cache, so those buffers stay reserved: 29 MiB + 11.4 B per row × vocab entry
    (fitted on eight H200 runs; Gemma-2-9B: 3.0 GiB). Pooling models have no sampler.
    """
    if runner == "pooling":
        return 0
    rows = min(num_seqs, batched)
    return int(coeff.sampler_base_bytes + rows * cdiv(arch.vocab_size, tp) * coeff.sampler_bytes_per_logit)


def capture_sizes(max_num_seqs: int, max_num_batched_tokens: int) -> list[int]:
    """vLLM's default CUDA-graph capture sizes (config/compilation.py): 1, 2, 4, then steps of 8
    up to 256, then steps of 16, capped at min(2 × max_num_seqs, 512, max_num_batched_tokens)."""
    cap = min(2 * max_num_seqs, 512, max_num_batched_tokens)
    sizes = [1, 2, 4, *range(8, 256, 8), *range(256, cap + 1, 16)]
    return [s for s in sizes if s <= cap]


def cuda_graph_bytes(
    arch: ModelArch, settings: ServeSettings, num_seqs: int, batched: int, coeff: Coefficients
) -> int:
    """Memory of captured CUDA graphs (FULL_AND_PIECEWISE): piecewise graphs for every capture
    size, full decode graphs for the sizes up to max_num_seqs. Llama-3.1-8B: 0.98 GiB with 1024
    sequences, 0.59 GiB with 256 (H200, vLLM 0.26.0)."""
    if settings.enforce_eager:
        return 0
    full_tokens = sum(s for s in capture_sizes(num_seqs, batched) if s <= num_seqs)
    per_token = coeff.cudagraph_bytes_per_token_hidden * arch.hidden_size
    return int(coeff.cudagraph_base_bytes + full_tokens * per_token)


def rotary_cache_bytes(arch: ModelArch, dtype_bytes: int) -> int:
    """vLLM's rotary cos/sin cache: max_position × rotary_dim, in the model dtype (one shared copy)."""
    rot = arch.mla.qk_rope_head_dim if arch.mla else arch.head_dim
    return arch.max_position_embeddings * rot * dtype_bytes


def online_quantization(settings: ServeSettings) -> Quantization | None:
    if settings.quantization is None:
        return None
    if settings.quantization != "fp8":
        raise InputError(
            f"--quantization {settings.quantization!r}: only fp8 online quantization is modelled",
            hint="for GPTQ/AWQ use a quantized checkpoint; its config.json carries quantization_config",
        )
    return Quantization(method="fp8", bits=8, group_size=-1, zero_point=False, weight_kind="float")


# ---------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class _Fixed:
    """Everything that does not depend on the KV size."""

    dtype: str
    max_model_len: int
    num_seqs: int
    batched: int
    layout: KvLayout
    weights: int
    weights_source: str
    activation: int
    non_torch: int
    graphs: int
    graphs_in_budget: bool
    context: int
    sampler: int
    kept_activation: int = 0  # part of the activation vLLM keeps after profiling (MoE workspace)

    @property
    def budget_overhead(self) -> int:
        """Memory inside the budget that is not KV cache."""
        return self.weights + self.activation + self.non_torch + (self.graphs if self.graphs_in_budget else 0)

    @property
    def outside_budget(self) -> int:
        """The process's memory beyond what it uses of its budget: the CUDA context, CUDA graphs
        where vLLM does not count them, and the sampler warm-up beyond the freed activation pool
        (what the profile run allocated, less the buffers it keeps)."""
        graphs = 0 if self.graphs_in_budget else self.graphs
        return self.context + graphs + max(0, self.sampler - (self.activation - self.kept_activation))


def _fixed(
    arch: ModelArch,
    gpu: GpuTarget,
    settings: ServeSettings,
    coeff: Coefficients,
    weights_override: int | None,
    measured: MeasuredTerms | None = None,
) -> _Fixed:
    if settings.tensor_parallel_size < 1:
        raise InputError("tensor_parallel_size must be ≥ 1")
    if arch.num_attention_heads % settings.tensor_parallel_size:
        raise InputError(
            f"{arch.name}: {arch.num_attention_heads} attention heads do not split over "
            f"tensor_parallel_size {settings.tensor_parallel_size}",
            hint="pick a tensor_parallel_size that divides the number of attention heads",
        )
    dtype = model_dtype(arch, settings)
    dtype_bytes = DTYPE_BYTES[dtype]
    max_len = settings.max_model_len or arch.max_position_embeddings
    if max_len > arch.max_position_embeddings:
        raise InputError(
            f"{arch.name}: max_model_len {max_len} is above the model's limit "
            f"(max_position_embeddings {arch.max_position_embeddings})",
            hint=f"use --max-model-len {arch.max_position_embeddings} or less",
        )
    default_batched, default_seqs = default_batching(gpu, settings.vllm_version)
    num_seqs = settings.max_num_seqs or default_seqs
    batched = settings.max_num_batched_tokens or default_batched
    tp = settings.tensor_parallel_size
    layout = kv_layout(arch, settings, gpu, max_len, batched)
    if weights_override is not None:
        weights, source = weights_override, "safetensors headers"
    else:
        weights = weight_bytes_from_config(
            arch, dtype_bytes, tp, online_quantization(settings), pooling=settings.runner == "pooling"
        )
        source = "config"
    weights += rotary_cache_bytes(arch, dtype_bytes)
    if gpu.compute_capability == (9, 0) and settings.quantization is None:
        weights += machete_extra_bytes(arch, dtype_bytes, tp)
    weights += load_rounding_bytes(
        arch, dtype_bytes, tp, online_quantization(settings), pooling=settings.runner == "pooling"
    )
    non_torch = coeff.non_torch_bytes + (coeff.tp_non_torch_bytes if tp > 1 else 0)
    if measured is not None:
        return _Fixed(
            dtype=dtype,
            max_model_len=max_len,
            num_seqs=num_seqs,
            batched=batched,
            layout=layout,
            weights=measured.weights_bytes,
            weights_source="calibration",
            activation=measured.activation_bytes,
            non_torch=measured.non_torch_bytes,
            graphs=measured.cuda_graph_bytes,
            graphs_in_budget=cudagraphs_in_budget(settings, arch),
            context=coeff.context_bytes if measured.outside_bytes is None else measured.outside_bytes,
            sampler=(
                sampler_warmup_bytes(arch, batched, num_seqs, tp, coeff, settings.runner)
                if measured.outside_bytes is None
                else 0  # already inside outside_bytes
            ),
        )
    activation = activation_bytes(arch, dtype_bytes, batched, tp, coeff)
    graphs = cuda_graph_bytes(arch, settings, num_seqs, batched, coeff)
    kept = moe_workspace_bytes(arch, dtype_bytes, batched, tp)  # 0 without MoE
    if moe_on_v1_runner(arch) and settings.runner == "generate":
        activation = max(activation, kept + v1_runner_sampler_bytes(arch, dtype_bytes, batched, num_seqs))
    elif arch.moe is not None or arch.mla is not None:
        mla_dummy = mla_dummy_bytes(arch, dtype_bytes, max_len, num_seqs, layout.block_size, tp)
        moe_mla = moe_mla_activation_bytes(arch, dtype_bytes, batched, tp, kept, mla_dummy)
        activation = max(activation, moe_mla)
        if graphs:
            # piecewise captures run MLA without metadata too: the dummy's block stays reserved
            graphs += mla_dummy
    return _Fixed(
        dtype=dtype,
        max_model_len=max_len,
        num_seqs=num_seqs,
        batched=batched,
        layout=layout,
        weights=weights,
        weights_source=source,
        activation=activation,
        non_torch=non_torch,
        graphs=graphs,
        graphs_in_budget=cudagraphs_in_budget(settings, arch),
        context=coeff.context_bytes,
        sampler=sampler_warmup_bytes(arch, batched, num_seqs, tp, coeff, settings.runner),
        kept_activation=kept,
    )


def _finish(
    arch: ModelArch,
    gpu: GpuTarget,
    settings: ServeSettings,
    f: _Fixed,
    utilization: float,
    kv_budget: int,
    kv_fixed: int | None,
    notes: tuple[str, ...] = (),
) -> Estimate:
    layout = f.layout
    if moe_on_v1_runner(arch) and f.weights_source != "calibration":
        notes = (*notes, V1_MOE_NOTE)
    num_blocks = max(0, kv_budget // layout.kv_block_bytes)
    kv_bytes = num_blocks * layout.kv_block_bytes
    requested = math.ceil(gpu.cuda_total_bytes * utilization)
    # With a fixed KV size vLLM uses what it needs; otherwise the KV cache fills the request.
    in_use = f.budget_overhead + kv_bytes if kv_fixed is not None else requested
    return Estimate(
        model=arch.name,
        gpu=gpu.name,
        vllm_version=settings.vllm_version,
        dtype=f.dtype,
        kv_cache_dtype=settings.kv_cache_dtype,
        max_model_len=f.max_model_len,
        max_num_seqs=f.num_seqs,
        max_num_batched_tokens=f.batched,
        tensor_parallel_size=settings.tensor_parallel_size,
        block_size=layout.block_size,
        weights_bytes=f.weights,
        weights_source=f.weights_source,
        kv_bytes_per_token=layout.kv_bytes_per_token,
        kv_block_bytes=layout.kv_block_bytes,
        activation_bytes=f.activation,
        non_torch_bytes=f.non_torch,
        cuda_graph_bytes=f.graphs,
        cuda_graph_in_budget=f.graphs_in_budget,
        overhead_bytes=f.outside_budget,
        requested_bytes=requested,
        kv_cache_bytes=kv_bytes,
        kv_cache_tokens=tokens_for_blocks(layout, num_blocks, f.max_model_len),
        num_blocks=num_blocks,
        max_concurrency=round(num_blocks / layout.blocks_per_request, 2),
        gpu_memory_utilization=utilization,
        kv_cache_memory_bytes=kv_fixed,
        process_bytes=in_use + f.outside_budget,
        cuda_total_bytes=gpu.cuda_total_bytes,
        notes=notes,
    )


def _require_one_request(arch: ModelArch, e: Estimate, layout: KvLayout, what: str) -> None:
    """vLLM refuses to start when one request of max_model_len does not fit (kv_cache_utils)."""
    needed = layout.blocks_per_request // layout.num_groups * layout.kv_block_bytes
    if e.num_blocks < layout.blocks_per_request:
        short = max(0, needed - e.kv_cache_bytes)
        if e.kv_cache_bytes <= 0:
            detail = (
                f"weights {format_bytes(e.weights_bytes)} + activation {format_bytes(e.activation_bytes)} "
                f"leave no room for a KV cache in {format_bytes(e.requested_bytes)}"
            )
        else:
            detail = (
                f"its KV cache ({e.kv_cache_tokens} tokens) cannot hold one request of "
                f"max_model_len {e.max_model_len}, short by {format_bytes(short)}"
            )
        raise KvCacheTooSmallError(
            f"{arch.name} on {e.gpu} with {what}: {detail}",
            hint="raise --gpu-memory-utilization, lower --max-model-len, or use --kv-cache-dtype fp8",
        )


def estimate(
    arch: ModelArch,
    gpu: GpuTarget,
    settings: ServeSettings,
    *,
    gpu_memory_utilization: float | None = None,
    kv_cache_memory_bytes: int | None = None,
    weights_bytes: int | None = None,
    coeff: Coefficients | None = None,
    measured: MeasuredTerms | None = None,
) -> Estimate:
    """Forward: from a utilization (or a fixed KV size) to KV bytes, tokens and the footprint."""
    coeff = coeff or Coefficients()
    f = _fixed(arch, gpu, settings, coeff, weights_bytes, measured)
    util = (
        gpu_memory_utilization
        if gpu_memory_utilization is not None
        else default_utilization(settings.vllm_version)
    )
    if not 0 < util <= 1:
        raise InputError(f"gpu_memory_utilization must be in (0, 1], got {util}")
    requested = math.ceil(gpu.cuda_total_bytes * util)
    if kv_cache_memory_bytes is not None:
        budget = kv_cache_memory_bytes
        what = f"--kv-cache-memory-bytes {kv_cache_memory_bytes}"
    else:
        budget = requested - f.budget_overhead
        what = f"gpu_memory_utilization {util}"
    e = _finish(arch, gpu, settings, f, util, budget, kv_cache_memory_bytes)
    _require_one_request(arch, e, f.layout, what)
    return e


def minimum_for_target(
    arch: ModelArch,
    gpu: GpuTarget,
    settings: ServeSettings,
    *,
    concurrency: int | None = None,
    kv_tokens: int | None = None,
    weights_bytes: int | None = None,
    coeff: Coefficients | None = None,
    measured: MeasuredTerms | None = None,
) -> Estimate:
    """Inverse: the least gpu_memory_utilization (and matching --kv-cache-memory-bytes) that gives
    `concurrency` requests of max_model_len, or `kv_tokens` tokens of KV cache."""
    coeff = coeff or Coefficients()
    f = _fixed(arch, gpu, settings, coeff, weights_bytes, measured)
    layout = f.layout
    if (concurrency is None) == (kv_tokens is None):
        raise InputError("give exactly one target: concurrent requests or KV tokens")
    if concurrency is not None:
        if concurrency < 1:
            raise InputError(f"concurrency must be ≥ 1, got {concurrency}")
        blocks = concurrency * layout.blocks_per_request
    else:
        assert kv_tokens is not None
        if kv_tokens < 1:
            raise InputError(f"kv tokens must be ≥ 1, got {kv_tokens}")
        blocks = cdiv(kv_tokens, layout.block_size) * layout.num_groups
    blocks = max(blocks, layout.blocks_per_request)
    kv_bytes = blocks * layout.kv_block_bytes
    needed = f.budget_overhead + kv_bytes
    # The smallest utilization, to 4 decimals, whose ceil(total × u) covers what is needed.
    util = math.ceil(needed / gpu.cuda_total_bytes * 10_000) / 10_000
    while math.ceil(gpu.cuda_total_bytes * util) - f.budget_overhead < kv_bytes:
        util = round(util + 0.0001, 4)
    if util > 1:
        short = needed - gpu.cuda_total_bytes
        raise DoesNotFitError(
            f"{arch.name} on {gpu.name}: the target needs {format_bytes(needed)} inside vLLM's budget "
            f"but the GPU has {format_bytes(gpu.cuda_total_bytes)} (short by {format_bytes(short)})",
            hint="lower the target or max_model_len, use --kv-cache-dtype fp8, a quantized variant "
            "or a larger GPU",
        )
    e = _finish(arch, gpu, settings, f, util, kv_bytes, kv_bytes)
    return replace(e, kv_cache_memory_bytes=kv_bytes)
