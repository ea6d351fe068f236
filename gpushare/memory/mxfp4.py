"""gpt-oss (GptOssForCausalLM) as vLLM 0.26.0 holds it on one GPU: MXFP4 experts in the layout of
the MoE backend it picks for the GPU, everything else in bf16, fp32 expert biases and rotary cache.

Sources (vLLM 0.26.0): model_executor/models/gpt_oss.py (layers), layers/quantization/mxfp4.py
(which layers are quantized: only the experts), layers/fused_moe/oracle/mxfp4.py (backend choice,
rounding of the expert sizes, conversion to the kernel layout), layers/quantization/utils/
mxfp4_utils.py and the bundled third_party/triton_kernels layouts (Hopper/Blackwell swizzles),
layers/quantization/utils/marlin_utils_fp4.py (Marlin). Checked on an H200: "Model loading took
13.03 GiB" for gpt-oss-20b with the TRITON backend (bench/gpu/results/h200-i11).

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gpushare.errors import InputError
from gpushare.hfconfig import ModelArch
from gpushare.units import cdiv
from gpushare.weights import VOCAB_PADDING, _allocator_tail

Mxfp4Backend = Literal["triton-hopper", "triton-blackwell", "marlin"]
"""The MoE backends vLLM 0.26.0 picks for gpt-oss on a CUDA GPU with the default wheel."""

GPT_OSS = "GptOssForCausalLM"
MXFP4_BLOCK = 32  # weights per e8m0 scale
BF16, FP32 = 2, 4


def is_gpt_oss(arch: ModelArch) -> bool:
    return GPT_OSS in arch.architectures


def mxfp4_backend(compute_capability: tuple[int, int]) -> Mxfp4Backend:
    """vLLM 0.26.0's choice for gpt-oss when none is requested (oracle/mxfp4.py:307-327, 442-563:
    the first of FLASHINFER_TRTLLM, AITER, TRITON, FLASHINFER_CUTLASS, MARLIN whose kernel accepts
    the GPU). FlashInfer is an optional extra of the wheel (`vllm[flashinfer]`), so on
    Blackwell the TRTLLM kernel is not there and TRITON takes it; TRITON needs
    9.0 ≤ cc < 11.0 (experts/gpt_oss_triton_kernels_moe.py:36-57); MARLIN takes the rest down to
    8.0, `Mxfp4Config.get_min_capability` (quantization/mxfp4.py:55-57)."""
    if compute_capability < (8, 0):
        raise InputError(
            f"gpt-oss's MXFP4 weights need compute capability 8.0 or more in vLLM 0.26.0; "
            f"this GPU has {compute_capability[0]}.{compute_capability[1]}",
            hint="use an A100, L4, L40S, H100/H200 or a newer GPU",
        )
    if (9, 0) <= compute_capability < (10, 0):
        return "triton-hopper"
    if (10, 0) <= compute_capability < (11, 0):
        return "triton-blackwell"
    return "marlin"


def rounded_expert_sizes(backend: Mxfp4Backend, hidden: int, inter_per_rank: int) -> tuple[int, int]:
    """(hidden, intermediate per rank) after `mxfp4_round_up_hidden_size_and_intermediate_size`
    (oracle/mxfp4.py:635-673), applied before the experts' weights are made
    (fused_moe/routed_experts.py:124-137): Marlin rounds I to 128 and H to 256, TRITON I to 64."""
    if backend == "marlin":
        return cdiv(hidden, 256) * 256, cdiv(inter_per_rank, 128) * 128
    return hidden, cdiv(inter_per_rank, 64) * 64


@dataclass(frozen=True)
class GptOssTensors:
    """Bytes of every tensor vLLM keeps for gpt-oss on one rank, as separate allocations (their
    2 MiB block tails count: memory/weights.py)."""

    dense: tuple[int, ...]  # embedding, lm_head, attention, router, norms, sinks, rotary cache
    experts: tuple[int, ...]  # per layer: values, scales, biases of w13 and w2

    @property
    def tensor_bytes(self) -> int:
        return sum(self.dense) + sum(self.experts)

    @property
    def loaded_bytes(self) -> int:
        """What "Model loading took" counts: the tensors and their allocation tails."""
        return sum(size + _allocator_tail(size) for size in (*self.dense, *self.experts))


def _ru(x: int, m: int) -> int:
    return cdiv(x, m) * m


def _expert_parts(backend: Mxfp4Backend, e: int, h: int, i: int) -> list[int]:
    """One layer's experts: [w13 values, w2 values, w13 scales, w2 scales, w13 bias, w2 bias],
    with h, i the rounded hidden and per-rank intermediate sizes. Checkpoint-shaped tensors
    (E, 2I, H/2) + (E, H, I/2) uint8 values and (E, 2I, H/32) + (E, H, I/32) e8m0 scales
    (quantization/mxfp4.py:184-275) are converted and the originals freed."""
    if backend == "triton-hopper":
        # HopperMXValueLayout(mx_axis=1) pads the N dim to 16 and the packed K bytes to 32;
        # scales: K (32-blocks) padded to 4 ("Patches #47303", mxfp4_utils.py:90-95), then
        # HopperMXScaleLayout(num_warps=8) pads N to 256 and K to even; biases become fp32
        # (oracle/mxfp4.py:1135-1171).
        values = [e * _ru(2 * i, 16) * _ru(h // 2, 32), e * _ru(h, 16) * _ru(i // 2, 32)]
        scales = [
            e * _ru(2 * i, 256) * _ru(_ru(h // MXFP4_BLOCK, 4), 2),
            e * _ru(h, 256) * _ru(_ru(i // MXFP4_BLOCK, 4), 2),
        ]
        biases = [e * 2 * i * FP32, e * h * FP32]
    elif backend == "triton-blackwell":
        # BlackwellMXValueLayout pads the packed K bytes to 128; its scale layout pads K to 8
        # and N to 128 (layout_details/blackwell_value.py, blackwell_scale.py); biases fp32.
        values = [e * 2 * i * _ru(h // 2, 128), e * h * _ru(i // 2, 128)]
        scales = [
            e * _ru(2 * i, 128) * _ru(h // MXFP4_BLOCK, 8),
            e * _ru(h, 128) * _ru(i // MXFP4_BLOCK, 8),
        ]
        biases = [e * 2 * i * FP32, e * h * FP32]
    else:
        # Marlin repacks the 4-bit values (same bytes), permutes the scales and keeps them as
        # float8_e8m0 (1 B per 32 weights), biases in the model dtype
        # (marlin_utils_fp4.py:576-675).
        values = [e * 2 * i * h // 2, e * h * i // 2]
        scales = [e * 2 * i * (h // MXFP4_BLOCK), e * h * (i // MXFP4_BLOCK)]
        biases = [e * 2 * i * BF16, e * h * BF16]
    return [*values, *scales, *biases]


def gpt_oss_tensors(arch: ModelArch, tp: int, backend: Mxfp4Backend) -> GptOssTensors:
    """gpt-oss's tensors on one of `tp` ranks (gpt_oss.py): bf16 embedding and a separate lm_head
    (vocab padded to 64 per rank), per layer two RMSNorms, qkv_proj and o_proj with biases, one
    sink per attention head, the replicated router (bias), the experts (`_expert_parts`); the
    final norm; one shared yarn rotary cache in fp32 (gpt_oss.py:91-107: original max position ×
    factor rows, rotary_embedding/yarn_scaling_rope.py:75-84)."""
    if arch.moe is None:
        raise InputError(f"{arch.name}: gpt-oss without experts is not a gpt-oss config")
    h, hd = arch.hidden_size, arch.head_dim
    if arch.intermediate_size % tp:  # gpt_oss.py:213 asserts it
        raise InputError(
            f"{arch.name}: intermediate_size {arch.intermediate_size} does not split over "
            f"tensor_parallel_size {tp}",
            hint="pick a tensor_parallel_size that divides it (1, 2, 4 or 8 for gpt-oss)",
        )
    heads = arch.num_attention_heads // tp
    kv = max(1, arch.num_kv_heads // tp)
    vocab = _ru(arch.vocab_size, VOCAB_PADDING * tp) // tp
    e = arch.moe.num_experts
    hr, ir = rounded_expert_sizes(backend, h, arch.moe.moe_intermediate_size // tp)
    dense = [vocab * h * BF16, vocab * h * BF16, h * BF16]
    experts: list[int] = []
    qkv_out = (heads + 2 * kv) * hd
    for _ in range(arch.num_layers):
        dense += [
            h * BF16,  # input_layernorm
            h * BF16,  # post_attention_layernorm
            qkv_out * h * BF16,
            qkv_out * BF16,
            h * heads * hd * BF16,  # o_proj (row parallel)
            h * BF16,  # o_proj bias
            heads * BF16,  # sinks
            e * h * BF16,  # router
            e * BF16,
        ]
        experts += _expert_parts(backend, e, hr, ir)
    dense.append(rope_cache_bytes(arch))
    return GptOssTensors(dense=tuple(dense), experts=tuple(experts))


def rope_cache_bytes(arch: ModelArch) -> int:
    """gpt-oss's yarn cos/sin cache: 4096 × 32 rows (original max position × factor, the
    published rope_scaling; the max_position_embeddings of 131,072 when absent) × head_dim, fp32."""
    return arch.max_position_embeddings * arch.head_dim * FP32


def gpt_oss_workspace_bytes(arch: ModelArch, tp: int, backend: Mxfp4Backend, batched: int) -> int:
    """The MoE workspace vLLM keeps across steps for gpt-oss. The TRITON backends run monolithic
    experts that allocate per call and keep nothing (fused_moe/modular_kernel.py:1104-1107,
    experts/gpt_oss_triton_kernels_moe.py:554-740); Marlin is a modular kernel whose workspaces,
    (M, topk, max(N, K)) and (M, topk, max(2N, K)) in bf16 with N, K the rounded sizes and M the
    batch's tokens, stay with the workspace manager (experts/marlin_moe.py:682-750)."""
    if backend != "marlin" or arch.moe is None:
        return 0
    k, n = rounded_expert_sizes(backend, arch.hidden_size, arch.moe.moe_intermediate_size // tp)
    topk = arch.moe.experts_per_token
    return batched * topk * (max(n, k) + max(2 * n, k)) * BF16
