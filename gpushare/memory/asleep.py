"""What an instance holds asleep (vLLM's sleep mode): the GPU memory that stays, and the host RAM
its weights take at sleep level 1.

From vLLM 0.26.0's source (paths relative to `vllm/`):
- With `--enable-sleep-mode` the worker allocates inside the cumem pool only under two tags:
  `weights`, everything `load_model` allocates (v1/worker/gpu_worker.py:424-431), and `kv_cache`,
  the KV cache (gpu_worker.py:731-732). On the V2 model runner `load_model` also builds the
  sampler (v1/worker/gpu/model_runner.py:326-355), so its per-request state is tagged `weights`:
  `PenaltiesState.output_bin_counts` (max_num_seqs × vocab int32) and `prompt_bin_mask`
  (v1/worker/gpu/sample/penalties.py:31-42), `StructuredOutputsWorker.grammar_bitmask`
  (v1/worker/gpu/structured_outputs.py:13-19), each max_num_seqs × ceil(vocab / 32) int32.
- Sleep (device_allocator/cumem.py:229-281 `CuMemAllocator.sleep`, called by
  device_allocator/sleep_mode_backend.py:109-131 `CuMemBackend.suspend`) copies the `weights` allocations
  to pinned host memory at level 1 (none at level 2) and unmaps every allocation of the pool; then
  `torch.cuda.empty_cache()` returns the caching allocator's free blocks.
- Everything allocated outside the pool stays on the GPU: the CUDA context and handles
  (`Budget.context_bytes`), non-torch memory such as NCCL and cuBLAS workspaces (`non_torch_bytes`;
  sleep_mode_backend.py: "NCCL buffers left untouched"), the CUDA graphs' private pool
  (`cuda_graph_bytes`: captured in `compile_or_warm_up_model`, after the pool's contexts), and
  the activation and warm-up blocks the caching allocator holds. `empty_cache` returns those only
  where no live tensor shares their segment, which the source cannot say; this model counts them
  as staying (`activation_bytes` and the sampler warm-up in `context_bytes`), an upper bound.

Fitted on two measurements only (../shared/VLLM-SLEEP.md: one H200, vLLM 0.26.0, dummy weights,
max_model_len 8192, utilization 0.6; GPU terms from the fitted `Coefficients`):

    asleep  = context + activation + non-torch + CUDA graphs − sampler state − pool extra
              Llama-3.1-8B shape: 2.57 GiB planned, 1.91 measured (NVML, alone on the GPU)
              Qwen2.5-7B shape:   2.64 GiB planned, 2.64 measured (another instance asleep beside)
    level-1 host copy = weights + sampler state + pool extra   (per GPU; × tensor_parallel_size)
              Llama: 15.55 GiB planned, 15.55 logged ("backed up in CPU")
              Qwen:  14.95 GiB planned, 14.94 logged
    host RAM = Σ pinned blocks of the copy + the processes' base   (the instance's RSS)
              Llama: 20.60 GiB planned, 20.65 and 20.59 measured (two instances)
              Qwen:  30.87 GiB planned, 30.85 measured

`pool extra` (Coefficients.sleep_pool_extra_bytes, 0.04 GiB) is what the logged copy held beyond
the weights and the sampler state on both models: allocator rounding and small buffers (rotary
caches) inside the pool, not itemised. The Llama residue is 0.66 GiB below the bound: there
`empty_cache` returned the warm-up blocks. Not measured: MoE models on the V1 runner (its sampler
is built outside the pool, so nothing but the weights is tagged), pooling models, multimodal
models with their vision tower (its weights are built in `load_model`, so they are counted in the
pool; what vLLM allocates for images while serving, and M-RoPE's pinned host buffer, are not in
these numbers), tensor parallelism, other GPUs and versions; `notes` says so.

Host RAM at level 1. The copy is one `torch.empty(size, dtype=uint8, device="cpu",
pin_memory=True)` per allocation of the `weights` tag (cumem.py `CuMemAllocator.sleep`, sizes
from the allocation handles), and an allocation is one segment of PyTorch's caching allocator
(`gpushare.weights.allocator_segment_bytes`: a matrix of 10 MiB or more gets its own, rounded to
2 MiB). Torch's caching host allocator rounds every pinned request up to the next power of two
(aten/src/ATen/core/CachingHostAllocator.h, `allocate`: `PowerOf2Ceil(size)` below
`pinned_max_round_threshold`, unlimited by default) and keeps freed blocks for reuse. So the
pinned RAM is Σ next_power_of_two(segment), not the weights: Qwen2.5-7B's gate_up_proj (2 ×
18944 × 3584 bf16, 259 MiB) takes 512 MiB, its down_proj (129.5 MiB) 256 MiB, its embeddings
(1,039.5 MiB) 2 GiB each, nearly twice its weights in all; Llama-3.1-8B's matrices round less.
vLLM drops its copy at wake, but the host allocator keeps the blocks, which is why only the
first sleep is slow (10–14 s measured, 0.36 s after) and why the RSS is the same awake as asleep
from the first sleep on: the copy is planned as held from then, awake or asleep.
`host_bytes` adds the vLLM processes' own resident memory (API server and EngineCore: Python,
torch, the CUDA libraries, the tokenizer), `VLLM_PROCESS_HOST_BYTES`, measured. Level 2 keeps no
copy of the weights (it clones the model's buffers, the rotary caches, to ordinary host memory:
tens of MiB, not counted) and reloads them on wake; its processes stay.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpushare.hfconfig import ModelArch
from gpushare.memory.coefficients import Coefficients
from gpushare.memory.estimate import Estimate
from gpushare.memory.multimodal import mrope_host_bytes
from gpushare.memory.settings import (
    DTYPE_BYTES,
    Runner,
    ServeSettings,
    model_dtype,
    moe_on_v1_runner,
    on_v1_runner,
    online_quantization,
)
from gpushare.memory.vision import tower_is_built
from gpushare.memory.weights import rotary_cache_bytes
from gpushare.units import GiB, cdiv
from gpushare.vllm.sleep import SleepLevel
from gpushare.weights import allocator_segments, weight_allocations

INT32_BYTES = 4

VLLM_PROCESS_HOST_BYTES = 3 * GiB
"""Host RAM a vLLM 0.26.0 instance's processes hold beyond the pinned copy of its weights (API
server + EngineCore: Python, torch, CUDA libraries, tokenizer). Measured on the lent H200
(bench/gpu/results/h200-i13/on-demand.jsonl, "all-asleep" records, VmRSS summed over each
instance's session): RSS − the modelled pinned blocks = 3.05 GiB (Llama-3.1-8B, 22,172,270,592
B), 2.99 (the second Llama, 22,113,234,944 B) and 2.98 (Qwen2.5-7B, 33,123,401,728 B); the same
awake. Three dense models of one vLLM version; other versions, multimodal processors and tensor
parallelism (one EngineCore worker per rank) are not measured."""
ASLEEP_NOTE = (
    "asleep footprint fitted on two dense models on an H200 (vLLM 0.26.0); not measured for this model's kind"
)


@dataclass(frozen=True)
class SleepFootprint:
    """One instance asleep, in bytes. `asleep_bytes` and the pools are per GPU; `host_bytes` is
    the host RAM of all its ranks together."""

    level: SleepLevel
    asleep_bytes: int
    """GPU memory that stays while it sleeps (an upper bound: see the module docstring)."""
    weights_pool_bytes: int
    """What vLLM tags `weights`: copied to host at level 1, discarded at level 2."""
    kv_pool_bytes: int
    """The KV cache, discarded at either level."""
    pinned_bytes: int
    """Pinned host RAM the level-1 copy takes, all ranks (0 at level 2): `pinned_copy_bytes`."""
    host_bytes: int
    """Host RAM the instance holds from its first sleep on, awake or asleep: `pinned_bytes` +
    `VLLM_PROCESS_HOST_BYTES`. What the host RAM check counts."""
    notes: tuple[str, ...] = ()


def sampler_state_bytes(arch: ModelArch, max_num_seqs: int, runner: Runner) -> int:
    """The sampler's per-request state that the V2 runner allocates in `load_model`, inside the
    `weights` pool: output_bin_counts (rows × vocab), prompt_bin_mask and grammar_bitmask (rows ×
    ceil(vocab / 32) each), int32, rows = max_num_seqs (one sampled token per step: no
    speculative decoding). 0 on the V1 runner and for pooling models (no sampler in the pool)."""
    return sum(sampler_state_allocations(arch, max_num_seqs, runner))


def pinned_block_bytes(size: int) -> int:
    """What torch's caching host allocator takes for one pinned request of `size` bytes: the next
    power of two (CachingHostAllocator.h, default `pinned_max_round_threshold`)."""
    return 1 << max(size - 1, 0).bit_length()


def sampler_state_allocations(arch: ModelArch, max_num_seqs: int, runner: Runner) -> list[int]:
    """The tensors `sampler_state_bytes` adds up, one by one (each an allocation of its own)."""
    if runner == "pooling" or moe_on_v1_runner(arch):
        return []
    vocab = arch.vocab_size
    return [max_num_seqs * n * INT32_BYTES for n in (vocab, cdiv(vocab, 32), cdiv(vocab, 32))]


def pinned_copy_bytes(arch: ModelArch, e: Estimate, settings: ServeSettings, weights_pool: int) -> int:
    """Pinned host RAM of one rank's level-1 copy: `weights_pool` (the allocations' bytes, as vLLM
    logs them) plus what the host allocator's power-of-two rounding adds to each of the segments
    (`gpushare.weights.allocator_segments`) that hold the config's tensor list
    (`gpushare.weights.weight_allocations`), the rotary cache and the sampler state. The shared
    2 MiB segments of the norms and biases round to themselves."""
    dtype_bytes = DTYPE_BYTES[model_dtype(arch, settings)]
    pooling = settings.runner == "pooling"
    sizes = weight_allocations(
        arch,
        dtype_bytes,
        e.tensor_parallel_size,
        online_quantization(settings),
        pooling=pooling,
        classify=pooling and settings.task == "classify",
    )
    sizes += [rotary_cache_bytes(arch, dtype_bytes)]
    sizes += sampler_state_allocations(arch, e.max_num_seqs, settings.runner)
    segments = allocator_segments(sizes)
    return weights_pool + sum(pinned_block_bytes(seg) - seg for seg in segments)


def multimodal_asleep_note(arch: ModelArch, e: Estimate, settings: ServeSettings) -> str | None:
    """What the asleep numbers of a model with its vision tower built leave out, or None."""
    if not tower_is_built(arch, settings):
        return None
    note = (
        "asleep with its vision tower: not measured; the tower's weights are counted with the "
        "others (copied to host at sleep level 1), what vLLM allocates for images while it serves is not"
    )
    if arch.mrope and not on_v1_runner(arch, settings):
        host = mrope_host_bytes(e.max_num_seqs, e.max_model_len)
        note += (
            f"; M-RoPE's pinned host buffer ({host / GiB:.2f} GiB, awake or asleep) is not in the host "
            "RAM check"
        )
    return note


def sleep_footprint(
    arch: ModelArch,
    e: Estimate,
    settings: ServeSettings,
    level: SleepLevel,
    coeff: Coefficients | None = None,
) -> SleepFootprint:
    """The instance `e` describes (awake, served with `settings`) once asleep at `level` (see the
    module docstring)."""
    coeff = coeff or Coefficients()
    b = e.budget
    runner = settings.runner
    state = sampler_state_bytes(arch, e.max_num_seqs, runner)
    weights_pool = b.weights_bytes + state + coeff.sleep_pool_extra_bytes
    outside_pool = b.context_bytes + b.activation_bytes + b.non_torch_bytes + b.cuda_graph_bytes
    # the sampler state is inside the fitted terms of the awake footprint but leaves with the pool
    asleep = max(outside_pool - state - coeff.sleep_pool_extra_bytes, b.context_bytes)
    multimodal = multimodal_asleep_note(arch, e, settings)
    measured_kind = (
        runner == "generate"
        and not moe_on_v1_runner(arch)
        and e.tensor_parallel_size == 1
        and multimodal is None
    )
    notes = () if measured_kind else (ASLEEP_NOTE,)
    pinned = pinned_copy_bytes(arch, e, settings, weights_pool) * e.tensor_parallel_size if level == 1 else 0
    return SleepFootprint(
        level=level,
        asleep_bytes=asleep,
        weights_pool_bytes=weights_pool,
        kv_pool_bytes=e.kv_cache_bytes,
        pinned_bytes=pinned,
        host_bytes=pinned + VLLM_PROCESS_HOST_BYTES,
        notes=notes + ((multimodal,) if multimodal else ()),
    )
