"""The KV cache as vLLM lays it out (v1/core/kv_cache_utils.py): bytes per token, pages, the
groups of layers that share blocks, and the blocks one request needs.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpushare.hfconfig import LayerKind, ModelArch
from gpushare.memory.settings import GpuTarget, ServeSettings, default_block_size, kv_dtype_bytes
from gpushare.units import cdiv


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

    def blocks_for_tokens(self, kv_tokens: int) -> int:
        """Blocks in the pool for `kv_tokens` tokens of KV cache (each group holds them all)."""
        return cdiv(kv_tokens, self.block_size) * self.num_groups

    def one_request_bytes(self) -> int:
        """The KV bytes of one request of max_model_len (what vLLM's start check asks for)."""
        return self.blocks_per_request // self.num_groups * self.kv_block_bytes


def kv_bytes_per_token_per_layer(arch: ModelArch, dtype_bytes: int, tp: int) -> int:
    """K and V of one token in one layer, on one rank (MLA: one latent, replicated per rank)."""
    if arch.mla is not None:
        return arch.kv_head_size * dtype_bytes
    heads_per_rank = max(1, arch.num_kv_heads // tp)
    return 2 * heads_per_rank * arch.kv_head_size * dtype_bytes


def sliding_in_flight_batches(settings: ServeSettings) -> int:
    """Batches whose tokens a sliding-window layer still holds KV for (vLLM's
    `VllmConfig.max_concurrent_batches`, config/vllm.py:511-533 in 0.26.0, the same in 0.32.0):
    2 with async scheduling, which vLLM turns on for generate models and off for pooling models
    (config/vllm.py:1059-1107); 1 without it (tensor parallel keeps pipeline parallel at 1)."""
    return 1 if settings.runner == "pooling" else 2


def kv_layout(
    arch: ModelArch, settings: ServeSettings, gpu: GpuTarget, max_model_len: int, batched: int
) -> KvLayout:
    """Groups as vLLM's hybrid KV cache manager forms them (kv_cache_utils.get_kv_cache_groups).

    Layers of one kind form a group; with several kinds, every group has as many layers as the
    smallest kind, unless the largest kind has fewer than 1.5 times as many, and then as many as the
    largest (padding layers fill the rest: 12 sliding + 13 full → 2 groups of 13;
    kv_cache_utils.py:1218-1227 in 0.26.0). The pool's blocks are shared by all groups.

    A sliding-window group needs cdiv(min(window − 1 + in-flight tokens, max_model_len),
    block_size) + 1 blocks per request (kv_cache_interface.py:567-598
    `max_admission_blocks_per_request`), where the in-flight tokens are max_num_batched_tokens
    times the batches in flight (`sliding_in_flight_batches`).
    """
    block = settings.block_size or default_block_size(arch, gpu)
    per_layer = kv_bytes_per_token_per_layer(
        arch, kv_dtype_bytes(arch, settings), settings.tensor_parallel_size
    )
    counts: dict[LayerKind, int] = {}
    for kind in arch.layer_kinds:
        counts[kind] = counts.get(kind, 0) + 1
    group_size = min(counts.values())
    if max(counts.values()) < 1.5 * group_size:
        group_size = max(counts.values())
    full_blocks = cdiv(max_model_len, block)
    in_flight = sliding_in_flight_batches(settings) * batched
    blocks_per_request = 0
    num_groups = 0
    for kind, count in counts.items():
        groups = cdiv(count, group_size)
        num_groups += groups
        if kind == "sliding" and arch.sliding_window:
            need = cdiv(min(arch.sliding_window - 1 + in_flight, max_model_len), block) + 1
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
