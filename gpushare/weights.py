"""Weight bytes of a model as vLLM holds them on one GPU (one tensor-parallel rank).

Two sources, best first:
1. the checkpoint's safetensors headers (exact tensor shapes; `weights_from_header`);
2. the config alone (`model_tensors` lists every weight matrix the architecture has).

Quantized layouts follow vLLM's Marlin kernels, which it picks on CUDA for GPTQ and AWQ
(vllm/model_executor/layers/quantization/gptq_marlin.py, awq_marlin.py; ../shared/VLLM-MEMORY.md):
per quantized linear with K inputs, N outputs, b bits and group g (g = -1 means K):
  qweight K*N*b/8, scales (K/g)*N*2, zero points (K/g)*N*b/8 only when asymmetric,
  g_idx and its sort indices 2*K*4 only with desc_act.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gpushare.errors import ConfigError
from gpushare.hfconfig import ModelArch, Quantization
from gpushare.units import MiB, cdiv

# vLLM pads vocab-parallel embeddings and lm_head to a multiple of 64 rows
# (vllm/model_executor/layers/vocab_parallel_embedding.py, DEFAULT_VOCAB_PADDING_SIZE).
VOCAB_PADDING = 64

Parallel = Literal["column", "row", "replicated", "vocab"]


@dataclass(frozen=True)
class WeightTensor:
    """One weight tensor of the unsharded model. A linear is stored as (out=N, in=K)."""

    name: str
    out_features: int
    in_features: int
    parallel: Parallel
    quantizable: bool  # a linear inside a decoder layer, which quantized checkpoints quantize
    count: int = 1  # identical copies (MoE experts)
    fixed_bytes: int | None = None  # bytes per element when not the serving dtype (fp32 heads)

    @property
    def params(self) -> int:
        return self.out_features * self.in_features * self.count


def _vector(name: str, size: int, parallel: Parallel = "replicated") -> WeightTensor:
    return WeightTensor(name, size, 1, parallel, False)


def _linear(
    name: str, n_out: int, k_in: int, parallel: Parallel, quantizable: bool = True, count: int = 1
) -> WeightTensor:
    return WeightTensor(name, n_out, k_in, parallel, quantizable, count)


def _attention(arch: ModelArch, p: str) -> Iterator[WeightTensor]:
    h = arch.hidden_size
    heads = arch.num_attention_heads
    if arch.mla is not None:
        m = arch.mla
        q_head = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank:
            yield _linear(f"{p}.q_a_proj", m.q_lora_rank, h, "replicated")
            yield _vector(f"{p}.q_a_layernorm", m.q_lora_rank)
            yield _linear(f"{p}.q_b_proj", heads * q_head, m.q_lora_rank, "column")
        else:
            yield _linear(f"{p}.q_proj", heads * q_head, h, "column")
        yield _linear(f"{p}.kv_a_proj_with_mqa", m.kv_lora_rank + m.qk_rope_head_dim, h, "replicated")
        yield _vector(f"{p}.kv_a_layernorm", m.kv_lora_rank)
        yield _linear(f"{p}.kv_b_proj", heads * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank, "column")
        yield _linear(f"{p}.o_proj", h, heads * m.v_head_dim, "row")
        return
    hd = arch.head_dim
    q_out = heads * hd
    kv_out = arch.num_kv_heads * hd
    yield _linear(f"{p}.q_proj", q_out, h, "column")
    yield _linear(f"{p}.k_proj", kv_out, h, "column")
    yield _linear(f"{p}.v_proj", kv_out, h, "column")
    if arch.qkv_bias:
        yield _vector(f"{p}.qkv_bias", q_out + 2 * kv_out, "column")
    if arch.qk_norm:
        yield _vector(f"{p}.q_norm", hd)
        yield _vector(f"{p}.k_norm", hd)
    yield _linear(f"{p}.o_proj", h, q_out, "row")


def _mlp(arch: ModelArch, p: str, layer: int) -> Iterator[WeightTensor]:
    h = arch.hidden_size
    moe = arch.moe
    is_moe_layer = moe is not None and layer >= moe.first_dense_layers and (layer % moe.moe_layer_freq == 0)
    if moe is not None and is_moe_layer:
        mi = moe.moe_intermediate_size
        yield _linear(f"{p}.gate", moe.num_experts, h, "replicated", quantizable=False)
        yield _linear(f"{p}.experts.w13", 2 * mi, h, "column", count=moe.num_experts)
        yield _linear(f"{p}.experts.w2", h, mi, "row", count=moe.num_experts)
        shared = moe.shared_experts * mi or moe.shared_expert_intermediate_size
        if shared:
            yield _linear(f"{p}.shared_experts.gate_up_proj", 2 * shared, h, "column")
            yield _linear(f"{p}.shared_experts.down_proj", h, shared, "row")
        if moe.shared_expert_intermediate_size:
            yield _linear(f"{p}.shared_expert_gate", 1, h, "replicated", quantizable=False)
        return
    inter = arch.intermediate_size
    if arch.gated_mlp:
        yield _linear(f"{p}.gate_up_proj", 2 * inter, h, "column")
    else:
        yield _linear(f"{p}.up_proj", inter, h, "column")
    yield _linear(f"{p}.down_proj", h, inter, "row")


# A pooling runner's heads are fp32 (vLLM config/model.py _get_head_dtype: float32 for
# runner_type "pooling" unless hf_overrides set head_dtype).
HEAD_DTYPE_BYTES = 4


def model_tensors(arch: ModelArch, pooling: bool = False, classify: bool = False) -> list[WeightTensor]:
    """Every weight tensor the architecture holds, unsharded and unpadded.

    `pooling`: served by vLLM's pooling runner, which loads no lm_head (adapters.py builds it on
    the meta device); `classify`: converted with `--convert classify`, which adds the `score`
    head (hidden → num_labels, no bias, fp32; adapters.py as_seq_cls_model).
    """
    if arch.encoder is not None:
        return encoder_tensors(arch)
    h = arch.hidden_size
    tensors = [WeightTensor("embed_tokens", arch.vocab_size, h, "vocab", False)]
    for i in range(arch.num_layers):
        p = f"layers.{i}"
        tensors.extend(_vector(f"{p}.norm{j}", h) for j in range(arch.norms_per_layer))
        tensors.extend(_attention(arch, f"{p}.self_attn"))
        tensors.extend(_mlp(arch, f"{p}.mlp", i))
    tensors.append(_vector("norm", h))
    if not arch.tie_word_embeddings and not pooling:
        tensors.append(WeightTensor("lm_head", arch.vocab_size, h, "vocab", False))
    if pooling and classify:
        tensors.append(WeightTensor("score", arch.num_labels, h, "replicated", False, 1, HEAD_DTYPE_BYTES))
    return tensors


def encoder_tensors(arch: ModelArch) -> list[WeightTensor]:
    """A BERT/RoBERTa encoder as vLLM builds it (models/bert.py, models/roberta.py): word,
    position and token-type embeddings (each a VocabParallelEmbedding, so each padded to 64 rows),
    their LayerNorm (weight and bias), then per layer qkv_proj (bias), attention.output.dense
    (bias), LayerNorm, intermediate.dense (bias), output.dense (bias), LayerNorm. The HF pooler is
    not built (bert.py skip_prefixes=["pooler."]); a sequence classifier adds RoBERTa's
    classification head, dense (H → H) and out_proj (H → num_labels), both with bias, in fp32
    (roberta.py RobertaClassificationHead, nn.Linear(dtype=head_dtype))."""
    enc = arch.encoder
    assert enc is not None
    h, inter = arch.hidden_size, arch.intermediate_size
    tensors = [
        WeightTensor("embeddings.word_embeddings", arch.vocab_size, h, "vocab", False),
        WeightTensor("embeddings.position_embeddings", enc.position_rows, h, "vocab", False),
        WeightTensor("embeddings.token_type_embeddings", enc.type_vocab_size, h, "vocab", False),
        _vector("embeddings.LayerNorm.weight", h),
        _vector("embeddings.LayerNorm.bias", h),
        # the registered int64 buffer torch.arange(max_position_embeddings)
        WeightTensor("embeddings.position_ids", enc.position_rows, 1, "replicated", False, 1, 8),
    ]
    for i in range(arch.num_layers):
        p = f"encoder.layer.{i}"
        tensors.extend(_attention(arch, f"{p}.attention.self"))
        tensors.append(_vector(f"{p}.attention.output.bias", h))
        tensors.extend(_vector(f"{p}.attention.output.LayerNorm.{w}", h) for w in ("weight", "bias"))
        tensors.append(_linear(f"{p}.intermediate.dense", inter, h, "column"))
        tensors.append(_vector(f"{p}.intermediate.bias", inter, "column"))
        tensors.append(_linear(f"{p}.output.dense", h, inter, "row"))
        tensors.append(_vector(f"{p}.output.bias", h))
        tensors.extend(_vector(f"{p}.output.LayerNorm.{w}", h) for w in ("weight", "bias"))
    if enc.classifier_labels:
        labels = enc.classifier_labels
        tensors += [
            WeightTensor("classifier.dense", h, h, "replicated", False, 1, HEAD_DTYPE_BYTES),
            WeightTensor("classifier.dense.bias", h, 1, "replicated", False, 1, HEAD_DTYPE_BYTES),
            WeightTensor("classifier.out_proj", labels, h, "replicated", False, 1, HEAD_DTYPE_BYTES),
            WeightTensor("classifier.out_proj.bias", labels, 1, "replicated", False, 1, HEAD_DTYPE_BYTES),
        ]
    return tensors


def parameter_count(arch: ModelArch, pooling: bool = False, classify: bool = False) -> int:
    """Parameters of the unsharded model as vLLM builds it (unpadded; buffers left out)."""
    return sum(
        t.params for t in model_tensors(arch, pooling, classify) if not t.name.endswith("position_ids")
    )


def _shard(t: WeightTensor, tp: int, num_kv_heads: int) -> tuple[int, int]:
    """(out, in) of this tensor on one tensor-parallel rank."""
    if tp == 1 or t.parallel == "replicated":
        return t.out_features, t.in_features
    if t.parallel == "vocab":
        padded = cdiv(t.out_features, VOCAB_PADDING * tp) * VOCAB_PADDING * tp
        return padded // tp, t.in_features
    if t.parallel == "row":
        return t.out_features, cdiv(t.in_features, tp)
    # Column parallel. K/V heads are replicated when there are fewer of them than ranks
    # (vllm QKVParallelLinear: num_kv_head_replicas).
    if t.name.endswith(("k_proj", "v_proj")) and num_kv_heads < tp:
        head = t.out_features // num_kv_heads
        return head, t.in_features
    return cdiv(t.out_features, tp), t.in_features


def _is_not_converted(name: str, quant: Quantization) -> bool:
    return any(m and m in name for m in quant.modules_not_converted)


def _quant_of(t: WeightTensor, quant: Quantization | None) -> Quantization | None:
    """The quantization this tensor is stored with: None for float tensors."""
    if quant is None or not t.quantizable or _is_not_converted(t.name, quant):
        return None
    return quant


def _groups(k_in: int, quant: Quantization) -> int:
    """Quantization groups along K (one for per-channel, group size -1 or 0)."""
    return 1 if quant.group_size in (-1, 0) else cdiv(k_in, quant.group_size)


def quantized_linear_bytes(n_out: int, k_in: int, quant: Quantization, dtype_bytes: int) -> int:
    """Bytes of one quantized linear after vLLM has loaded and repacked it."""
    if quant.method == "fp8" or (quant.method == "compressed-tensors" and quant.weight_kind == "float"):
        weight = n_out * k_in  # one byte per weight
        if quant.block_size:
            scales = cdiv(n_out, quant.block_size[0]) * cdiv(k_in, quant.block_size[1]) * 4
        elif quant.method == "compressed-tensors" and quant.group_size == -1:
            scales = n_out * 4  # per-channel fp32 scales
        else:
            scales = 4 + 4  # per-tensor weight and input scale
        return weight + scales
    bits = quant.bits
    groups = _groups(k_in, quant)
    if quant.method == "compressed-tensors":
        # pack-quantized: int32 words along K (compressed_tensors_wNa16.py).
        weight = n_out * cdiv(k_in * bits, 32) * 4
        scales = n_out * groups * dtype_bytes
        zeros = n_out * groups * bits // 8 if quant.zero_point else 0
        return weight + scales + zeros
    weight = k_in * n_out * bits // 8
    scales = groups * n_out * dtype_bytes
    zeros = groups * n_out * bits // 8 if quant.zero_point else 0
    g_idx = 2 * k_in * 4 if quant.desc_act and quant.group_size not in (-1, 0) else 0
    return weight + scales + zeros + g_idx


def _vllm_tensors(
    arch: ModelArch, tp: int, pooling: bool = False, classify: bool = False
) -> Iterator[tuple[WeightTensor, int, int]]:
    """Each weight tensor as vLLM allocates it on one rank, with its (N, K): q, k and v merged into
    one qkv_proj (gate_up_proj is already merged here), vocab rows padded to 64, an MoE layer's
    experts as one stacked tensor (`count` copies)."""
    qkv: dict[str, list[int]] = {}
    for t in model_tensors(arch, pooling, classify):
        n_out, k_in = _shard(t, tp, arch.num_kv_heads)
        if t.parallel == "vocab":
            n_out = cdiv(n_out, VOCAB_PADDING) * VOCAB_PADDING
        prefix, _, leaf = t.name.rpartition(".")
        if leaf in ("q_proj", "k_proj", "v_proj") and arch.mla is None:
            qkv.setdefault(prefix, [0, k_in])[0] += n_out
            if leaf == "v_proj":
                n_qkv, k_qkv = qkv.pop(prefix)
                yield dataclasses.replace(t, name=f"{prefix}.qkv_proj", out_features=n_qkv), n_qkv, k_qkv
            continue
        yield t, n_out, k_in


def _vllm_linears(arch: ModelArch, tp: int, quant: Quantization) -> Iterator[tuple[int, int]]:
    """(N, K) on one rank of each quantized dense linear as vLLM builds it. MoE experts use the
    fused-MoE kernels and are left out."""
    for t, n_out, k_in in _vllm_tensors(arch, tp):
        if t.count == 1 and _quant_of(t, quant) is not None:
            yield n_out, k_in


# PyTorch's caching allocator while vLLM loads weights (gpu_worker.py: max_split_size_mb=20):
# a request of 10 MiB or more gets a segment of its own rounded up to 2 MiB, which is split only
# when it is under 20 MiB and more than 1 MiB would remain (CUDACachingAllocator should_split);
# a request over 1 MiB and under 10 MiB is carved from a shared 20 MiB segment, smaller ones from
# shared 2 MiB segments (CUDACachingAllocator get_allocation_size: kSmallSize, kMinLargeAlloc,
# kLargeBuffer, kRoundLarge).
_ROUND_LARGE = 2 * MiB
_MIN_LARGE_ALLOC = 10 * MiB
_LOAD_MAX_SPLIT = 20 * MiB
_LARGE_BUFFER = 20 * MiB
_ROUND_SMALL = 512  # kMinBlockSize


def allocator_segment_bytes(size: int) -> int:
    """The segment PyTorch's caching allocator maps for one request of `size` bytes when no cached
    block serves it: what vLLM's cumem pool records as one allocation (and copies whole at sleep
    level 1). Under 10 MiB the segment is shared with later requests."""
    if size <= MiB:
        return _ROUND_LARGE
    if size < _MIN_LARGE_ALLOC:
        return _LARGE_BUFFER
    return cdiv(size, _ROUND_LARGE) * _ROUND_LARGE


def allocator_segments(sizes: Iterable[int]) -> list[int]:
    """The segments the caching allocator maps for requests of `sizes` made one after another with
    nothing freed (a model's weights as vLLM loads them): one of its own for each of 10 MiB or
    more; the others packed, in 512-byte steps, into shared 20 MiB segments (over 1 MiB) and 2 MiB
    ones (the rest), counted as if each shared segment were filled before the next is mapped."""
    own, medium, small = [], 0, 0
    for size in sizes:
        if size >= _MIN_LARGE_ALLOC:
            own.append(allocator_segment_bytes(size))
        elif size > MiB:
            medium += cdiv(size, _ROUND_SMALL) * _ROUND_SMALL
        elif size > 0:
            small += cdiv(size, _ROUND_SMALL) * _ROUND_SMALL
    return own + [_LARGE_BUFFER] * cdiv(medium, _LARGE_BUFFER) + [_ROUND_LARGE] * cdiv(small, _ROUND_LARGE)


def _allocator_tail(size: int) -> int:
    pad = allocator_segment_bytes(size) - size
    if size >= _LOAD_MAX_SPLIT or (size >= _MIN_LARGE_ALLOC and pad <= MiB):
        return pad
    return 0


def _stored_parts(n_out: int, k_in: int, quant: Quantization | None, dtype_bytes: int) -> list[int]:
    """Bytes of the separate tensors vLLM allocates for one linear (the large ones)."""
    if quant is None:
        return [n_out * k_in * dtype_bytes]
    if quant.method in ("gptq", "awq"):
        return [k_in * n_out * quant.bits // 8, _groups(k_in, quant) * n_out * dtype_bytes]
    whole = quantized_linear_bytes(n_out, k_in, quant, dtype_bytes)
    if quant.method == "fp8" or quant.weight_kind == "float":
        return [n_out * k_in, whole - n_out * k_in]  # the fp8 matrix, then its scales
    return [whole]


def weight_allocations(
    arch: ModelArch,
    dtype_bytes: int,
    tp: int = 1,
    online_quant: Quantization | None = None,
    pooling: bool = False,
    classify: bool = False,
) -> list[int]:
    """Bytes of each matrix-sized tensor vLLM allocates for the weights on one rank (qkv and
    gate_up merged, MoE experts stacked, quantized linears in their stored parts); norms and
    biases are left out (they share small segments). `allocator_segment_bytes` maps each to its
    segment."""
    quant = arch.quantization or online_quant
    sizes = []
    for t, n_out, k_in in _vllm_tensors(arch, tp, pooling, classify):
        if t.in_features == 1:
            continue  # norms and biases: small
        parts = _stored_parts(n_out, k_in, _quant_of(t, quant), t.fixed_bytes or dtype_bytes)
        sizes += [size * t.count for size in parts]
    return sizes


def load_rounding_bytes(
    arch: ModelArch,
    dtype_bytes: int,
    tp: int = 1,
    online_quant: Quantization | None = None,
    pooling: bool = False,
    classify: bool = False,
) -> int:
    """What "Model loading took" counts beyond the tensors' bytes: the unused tails of the
    2 MiB-rounded blocks that vLLM's load-time allocator setting keeps whole. Zero for models whose
    matrices are 2 MiB multiples (Llama, Mistral, Qwen3); Qwen2.5-7B: 0.10 GiB, as logged
    (14.29 GiB against 14.19 of tensors, on an H100 and an H200)."""
    sizes = weight_allocations(arch, dtype_bytes, tp, online_quant, pooling, classify)
    return sum(_allocator_tail(size) for size in sizes)


def machete_extra_bytes(arch: ModelArch, dtype_bytes: int, tp: int = 1) -> int:
    """Bytes vLLM's Machete kernel holds beyond the Marlin layout, for GPTQ/AWQ on Hopper.

    vLLM 0.26 picks Machete before Marlin on compute capability 9.0 exactly (H100, H200, H20,
    GH200) for every linear it can take: K divisible by 64, N by 128, group size -1, 64 or 128,
    4 or 8 bits (kernels/linear/__init__.py _POSSIBLE_KERNELS, mixed_precision/machete.py).
    Unlike Marlin, Machete keeps the checkpoint's packed qzeros and g_idx for GPTQ (it never
    reads them), and stores AWQ zero points unpacked, pre-multiplied by the scales, in the
    scales' dtype. Measured: Qwen2.5-32B-Instruct-GPTQ-Int4 on an H100 loads 18.15 GiB, Marlin's
    layout is 17.90 GiB and this adds 0.12 GiB (bench/gpu/results/h100-vllm0.26.0).
    """
    quant = arch.quantization
    if quant is None or quant.method not in ("gptq", "awq") or quant.bits not in (4, 8):
        return 0
    if quant.group_size not in (-1, 0, 64, 128):
        return 0
    extra = 0
    for n_out, k_in in _vllm_linears(arch, tp, quant):
        if k_in % 64 or n_out % 128:
            continue  # this layer gets Marlin
        groups = _groups(k_in, quant)
        if quant.method == "gptq":
            if not quant.zero_point:
                extra += groups * n_out * quant.bits // 8  # qzeros, which Marlin frees
            if not quant.desc_act:
                extra += k_in * 4  # g_idx, which Marlin frees
        elif quant.zero_point:
            # AWQ zero points unpacked: scales' dtype instead of `bits` each
            extra += groups * n_out * dtype_bytes - groups * n_out * quant.bits // 8
    return extra


def weight_bytes_from_config(
    arch: ModelArch,
    dtype_bytes: int,
    tp: int = 1,
    online_quant: Quantization | None = None,
    pooling: bool = False,
    classify: bool = False,
) -> int:
    """Bytes of weights on one rank, from the config (exact for dense models up to norms/biases)."""
    quant = arch.quantization or online_quant
    total = 0
    for t in model_tensors(arch, pooling, classify):
        n_out, k_in = _shard(t, tp, arch.num_kv_heads)
        if t.parallel == "vocab":
            n_out = cdiv(n_out, VOCAB_PADDING) * VOCAB_PADDING  # each rank's rows, padded to 64
        q = _quant_of(t, quant)
        if q is not None:
            total += quantized_linear_bytes(n_out, k_in, q, dtype_bytes) * t.count
        else:
            total += n_out * k_in * (t.fixed_bytes or dtype_bytes) * t.count
    return total


# ---------------------------------------------------------------------------------------------
# From safetensors headers

SAFETENSORS_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


@dataclass(frozen=True)
class HeaderTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def parse_header(header: Mapping[str, Any], source: str) -> list[HeaderTensor]:
    """Tensors of a safetensors header dict (the JSON at the start of the file)."""
    tensors = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, Mapping) or "dtype" not in info or "shape" not in info:
            raise ConfigError(f"{source}: safetensors header entry {name!r} has no dtype/shape")
        dtype = str(info["dtype"])
        if dtype not in SAFETENSORS_DTYPE_BYTES:
            raise ConfigError(f"{source}: safetensors tensor {name!r} has unknown dtype {dtype!r}")
        tensors.append(HeaderTensor(name, dtype, tuple(int(d) for d in info["shape"])))
    return tensors


def _dropped_after_load(name: str, quant: Quantization | None) -> bool:
    """Tensors a checkpoint stores that vLLM frees after loading (Marlin conversion)."""
    if quant is None or quant.method not in ("gptq", "awq"):
        return False
    if name.endswith(".qzeros") and not quant.zero_point:
        return True  # symmetric: zero points are implicit
    return name.endswith(".g_idx") and not quant.desc_act


def weights_from_header(tensors: list[HeaderTensor], arch: ModelArch, dtype_bytes: int) -> int:
    """Weight bytes on one GPU (tp=1) from exact tensor shapes.

    Floating tensors are cast to the serving dtype; packed integer and fp8 tensors keep theirs.
    vLLM's vocab padding (to 64 rows) is added to the embedding and lm_head; the rotary cache is
    not a checkpoint tensor and is added by the memory model.
    """
    if arch.encoder is not None:
        return _encoder_from_header(tensors, arch, dtype_bytes)
    quant = arch.quantization
    total = 0
    for t in tensors:
        if _dropped_after_load(t.name, quant) or t.name.endswith("rotary_emb.inv_freq"):
            continue
        if t.dtype in _FLOAT_DTYPES:
            total += t.numel * dtype_bytes
        else:
            total += t.numel * SAFETENSORS_DTYPE_BYTES[t.dtype]
    padded = cdiv(arch.vocab_size, VOCAB_PADDING) * VOCAB_PADDING
    pad_rows = padded - arch.vocab_size
    heads = 1 if arch.tie_word_embeddings else 2
    if any(t.name.endswith("g_idx") for t in tensors) and quant is not None and quant.desc_act:
        # gptq_marlin keeps g_idx plus its sort indices (same size).
        total += sum(t.numel * 4 for t in tensors if t.name.endswith(".g_idx"))
    return total + pad_rows * arch.hidden_size * dtype_bytes * heads


def _encoder_from_header(tensors: list[HeaderTensor], arch: ModelArch, dtype_bytes: int) -> int:
    """An encoder's bytes from its headers, as `encoder_tensors` lays it out: the HF pooler is
    dropped, the classifier head kept in fp32, each embedding padded to 64 rows, and the
    position_ids buffer counted whether or not the checkpoint stores it."""
    enc = arch.encoder
    assert enc is not None
    total = 0
    for t in tensors:
        name = t.name.removeprefix("roberta.").removeprefix("bert.")
        if name.startswith("pooler.") or name.endswith("position_ids") or name.startswith("lm_head."):
            continue
        if name.startswith("classifier."):
            total += t.numel * HEAD_DTYPE_BYTES
        elif t.dtype in _FLOAT_DTYPES:
            total += t.numel * dtype_bytes
        else:
            total += t.numel * SAFETENSORS_DTYPE_BYTES[t.dtype]
    rows = (arch.vocab_size, enc.position_rows, enc.type_vocab_size)
    pad_rows = sum(cdiv(n, VOCAB_PADDING) * VOCAB_PADDING - n for n in rows)
    return total + pad_rows * arch.hidden_size * dtype_bytes + enc.position_rows * 8
