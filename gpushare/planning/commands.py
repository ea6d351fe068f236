"""Each planned instance's command line and environment.

Pure: builds values (`vllm.command.VllmCommand`), starts nothing.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import replace

from gpushare.memory import ServeSettings
from gpushare.planning.needs import Entry
from gpushare.planning.plan import PlannedInstance
from gpushare.profile import Profile
from gpushare.vllm.command import VllmCommand
from gpushare.vllm.sleep import DEV_MODE_ENV


def instance_command(profile: Profile, m: Entry, util: float | None, kv_bytes: int | None) -> VllmCommand:
    """The `vllm serve` command of an entry: the profile's settings as flags (the ones left at
    vLLM's defaults are not passed), the planned utilization (none on the CPU backend) and KV size
    (when fixed), then the entry's extra_args."""
    e, d = m.entry, profile.defaults
    return VllmCommand(
        program=tuple(d.command),
        model=e.model,
        served_name=(e.name,),
        host=d.host,
        port=m.port,
        max_model_len=m.settings.max_model_len,
        gpu_memory_utilization=util,
        kv_cache_memory_bytes=kv_bytes,
        tensor_parallel_size=e.tensor_parallel_size,
        dtype=e.dtype or d.dtype,
        kv_cache_dtype=e.kv_cache_dtype or d.kv_cache_dtype,
        block_size=d.block_size,
        max_num_seqs=e.max_num_seqs,
        max_num_batched_tokens=e.max_num_batched_tokens,
        quantization=e.quantization,
        runner=_runner_flag(m),
        convert=_convert_flag(m),
        enforce_eager=e.enforce_eager,
        enable_sleep_mode=e.residency == "on-demand",
        language_model_only=m.settings.language_model_only,
        limit_mm_per_prompt=m.settings.mm_limits,
        mm_encoder_tp_mode=e.mm_encoder_tp_mode,
        extra_args=tuple(e.extra_args),
    )


def slice_command(
    profile: Profile, m: Entry, util: float, kv_bytes: int | None, settings: ServeSettings
) -> VllmCommand:
    """The command of an entry on a MIG slice: always a fixed KV size (none for an encoder-only
    pooling model, which keeps no KV cache), and the batching limits written out (`settings`:
    the entry's, with vLLM's defaults for the slice filled in). vLLM picks its batching defaults
    from NVML's memory of the device, which on a MIG slice has been the parent GPU's (vLLM
    #41776, #50463: `get_device_total_memory` asks the index-based handle), so it would not pick
    what the plan counted."""
    return replace(
        instance_command(profile, m, util, kv_bytes),
        max_num_seqs=settings.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens,
    )


def profile_env(profile: Profile, m: Entry) -> dict[str, str]:
    """The variables the profile gives an entry: `defaults.env`, then the model's own `env` over it
    (the one rule for how they merge; gpushare's own variables go on top of both)."""
    return {**profile.defaults.env, **m.entry.env}


def slice_env(profile: Profile, m: Entry, device: str) -> dict[str, str]:
    """The environment of an entry on a MIG slice: `CUDA_VISIBLE_DEVICES=MIG-<uuid>` (the MIG
    user guide's way to pick one; a UUID needs no CUDA_DEVICE_ORDER). No MPS thread percentage:
    gpushare runs one instance per slice, without MPS."""
    env = profile_env(profile, m)
    env["CUDA_VISIBLE_DEVICES"] = device
    return env


def _runner_flag(m: Entry) -> str | None:
    """--runner: pooling whenever the plan sized a pooling model (explicit, so vLLM cannot pick
    otherwise); generate only where the profile asked for it; else vLLM's auto."""
    if m.settings.runner == "pooling":
        return "pooling"
    return "generate" if m.entry.runner == "generate" else None


def _convert_flag(m: Entry) -> str | None:
    """--convert: only where it converts a text generator (a pooling class keeps its own task;
    vLLM's adapters return it unchanged)."""
    row = m.facts.arch.row
    if m.settings.runner != "pooling" or (row is not None and row.runner == "pooling"):
        return None
    return m.settings.task


def instance_env(profile: Profile, m: Entry, gpus: Sequence[int]) -> dict[str, str]:
    env = profile_env(profile, m)
    if gpus:
        # NVML numbers GPUs in PCI bus order; CUDA's default order (fastest first) may differ.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    if m.entry.mps_thread_percentage is not None:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(m.entry.mps_thread_percentage)
    if m.entry.residency == "on-demand":
        # /sleep, /wake_up and /is_sleeping exist only in vLLM's development mode (vllm/sleep.py)
        env.update(DEV_MODE_ENV)
    return env


def command_line(instance: PlannedInstance) -> str:
    """The instance's command as one shell line, environment first."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(instance.env.items()))
    cmd = shlex.join(instance.argv)
    return f"{env} {cmd}" if env else cmd
