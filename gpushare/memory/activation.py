"""The peak activation of vLLM's profile run, and the sampler warm-up held after it.

vLLM measures these ("torch peak memory increase"); the structure of each formula follows what vLLM
allocates (its files named next to each), the per-token and per-logit numbers are fitted
(`Coefficients`). Pure: no I/O.
"""

from __future__ import annotations

from gpushare.hfconfig import ModelArch
from gpushare.memory.coefficients import Coefficients
from gpushare.units import MiB, cdiv

# vLLM's MLA chunked-prefill workspace is capped at this many rows (MLACommonMetadataBuilder).
MLA_WORKSPACE_MAX_ROWS = 64 * 1024
# SMs whose rows the V1 sampler's Triton top-k/top-p buffer holds (H100/H200 SXM: 132).
SAMPLER_BUFFER_SMS = 132
# torch's cuBLAS workspace on sm90, allocated through the caching allocator on the first GEMM.
CUBLAS_WORKSPACE_BYTES = 32 * MiB
# The pooler's largest task output per token and hidden unit: fp32, the pooling runner's head
# dtype (config/model.py _get_head_dtype).
POOLER_OUTPUT_BYTES = 4


def _mlp_width(arch: ModelArch, tp: int) -> int:
    """Columns of the widest MLP tensors live at once per token: gate_up (2I) and its product (I)."""
    if arch.moe is not None:
        inter = cdiv(arch.moe.moe_intermediate_size * arch.moe.experts_per_token, tp)
    else:
        inter = cdiv(arch.intermediate_size, tp)
    return (3 if arch.gated_mlp else 2) * inter


def activation_bytes(
    arch: ModelArch, dtype_bytes: int, batched: int, tp: int, coeff: Coefficients, runner: str = "generate"
) -> int:
    """Peak activation of vLLM's profile run, as it logs it ("torch peak memory increase").

    One forward pass of `max_num_batched_tokens` tokens: the larger of a vocab × hidden matrix
    (the logits projection) and the widest layer's tensors, plus a per-token term. Measured on the
    H200: it barely moves with the batch (Llama-3.1-8B 1.10 GiB at 8192 tokens, 1.01 at 2048).

    Under the pooling runner there are no logits: the profile runs the pooler instead of the
    sampler (v1/worker/gpu_model_runner.py profile_run → _dummy_pooler_run), whose largest task
    (token_embed / token_classify) returns every token's hidden state in the fp32 head dtype.
    Qwen3-Embedding-0.6B at 8192 tokens: 0.19 + 0.10 + 0.03 = 0.32 GiB, as logged on the H200.
    """
    h = arch.hidden_size
    qkv_width = cdiv((arch.num_attention_heads + 2 * arch.num_kv_heads) * arch.head_dim, tp)
    widest = max(_mlp_width(arch, tp), qkv_width) + coeff.activation_hidden_copies * h
    forward = batched * widest * dtype_bytes
    per_token = batched * coeff.activation_per_token_bytes
    if runner == "pooling":
        return forward + per_token + batched * h * POOLER_OUTPUT_BYTES
    vocab_matrix = cdiv(arch.vocab_size, tp) * h * dtype_bytes
    return max(forward, vocab_matrix) + per_token


def encoder_warmup_bytes(
    arch: ModelArch, dtype_bytes: int, batched: int, num_seqs: int, coeff: Coefficients
) -> int:
    """What an encoder-only pooling model holds after start-up beyond its weights, the CUDA context
    and non-torch memory: vLLM profiles nothing for it (no KV cache: v1/engine/core.py
    _initialize_kv_caches skips determine_available_memory), so the only forward passes it keeps
    blocks of are the CUDA-graph captures and the final warm-up, `_dummy_run(min(max_num_seqs,
    max_num_batched_tokens))` then `_dummy_pooler_run` (gpu_worker.py compile_or_warm_up_model,
    after capture_model's empty_cache), plus cuBLAS's workspace. bge-m3 with --enforce-eager on
    the H200: 1.89 GiB by NVML, 0.51 + 1.06 + 0.22 + this 0.07 = 1.86 predicted."""
    tokens = min(num_seqs, batched)
    return activation_bytes(arch, dtype_bytes, tokens, 1, coeff, "pooling") + CUBLAS_WORKSPACE_BYTES


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
    arch: ModelArch, batched: int, num_seqs: int, coeff: Coefficients, runner: str = "generate"
) -> int:
    """Memory the sampler warm-up holds after the KV cache exists (outside vLLM's budget).

    vLLM warms the sampler with min(max_num_seqs, max_num_batched_tokens) rows of logits after
    allocating the KV cache, so those buffers stay reserved: 29 MiB + 11.4 B per row × vocab entry
    (fitted on eight H200 runs; Gemma-2-9B: 3.0 GiB). Pooling models have no sampler.

    The whole vocabulary on every GPU, tensor parallel or not: the logits processor all-gathers
    the vocab-parallel logits (model_executor/layers/logits_processor.py:87-93; use_all_gather()
    is True on CUDA, platforms/interface.py:1096) and every worker runs the sampler on them.
    """
    if runner == "pooling":
        return 0
    rows = min(num_seqs, batched)
    return int(coeff.sampler_base_bytes + rows * arch.vocab_size * coeff.sampler_bytes_per_logit)
