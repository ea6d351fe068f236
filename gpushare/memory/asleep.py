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

`pool extra` (Coefficients.sleep_pool_extra_bytes, 0.04 GiB) is what the logged copy held beyond
the weights and the sampler state on both models: allocator rounding and small buffers (rotary
caches) inside the pool, not itemised. The Llama residue is 0.66 GiB below the bound: there
`empty_cache` returned the warm-up blocks. Not measured: MoE models on the V1 runner (its sampler
is built outside the pool, so nothing but the weights is tagged), pooling models, multimodal
models with their vision tower (its weights are built in `load_model`, so they are counted in the
pool; what vLLM allocates for images while serving, and M-RoPE's pinned host buffer, are not in
these numbers), tensor parallelism, other GPUs and versions; `notes` says so.

Host RAM: vLLM allocates each pinned copy at sleep and drops it at wake, but torch's caching host
allocator keeps pinned blocks for reuse, which is why only the first sleep is slow (10–14 s
measured, 0.36 s after). So the copy is planned as held from the first sleep on, awake or asleep.
Level 2 keeps no copy of the weights (it clones the model's buffers, the rotary caches, to
ordinary host memory: tens of MiB, not counted) and reloads them on wake.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpushare.hfconfig import ModelArch
from gpushare.memory.coefficients import Coefficients
from gpushare.memory.estimate import Estimate
from gpushare.memory.multimodal import mrope_host_bytes
from gpushare.memory.settings import Runner, ServeSettings, moe_on_v1_runner, on_v1_runner
from gpushare.memory.vision import tower_is_built
from gpushare.units import GiB, cdiv
from gpushare.vllm.sleep import SleepLevel

INT32_BYTES = 4
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
    host_bytes: int
    """Pinned host RAM the level-1 copy takes (0 at level 2)."""
    notes: tuple[str, ...] = ()


def sampler_state_bytes(arch: ModelArch, max_num_seqs: int, runner: Runner) -> int:
    """The sampler's per-request state that the V2 runner allocates in `load_model`, inside the
    `weights` pool: output_bin_counts (rows × vocab), prompt_bin_mask and grammar_bitmask (rows ×
    ceil(vocab / 32) each), int32, rows = max_num_seqs (one sampled token per step: no
    speculative decoding). 0 on the V1 runner and for pooling models (no sampler in the pool)."""
    if runner == "pooling" or moe_on_v1_runner(arch):
        return 0
    vocab = arch.vocab_size
    return max_num_seqs * (vocab + 2 * cdiv(vocab, 32)) * INT32_BYTES


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
    return SleepFootprint(
        level=level,
        asleep_bytes=asleep,
        weights_pool_bytes=weights_pool,
        kv_pool_bytes=e.kv_cache_bytes,
        host_bytes=weights_pool * e.tensor_parallel_size if level == 1 else 0,
        notes=notes + ((multimodal,) if multimodal else ()),
    )
