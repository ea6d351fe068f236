"""The memory model: what one vLLM instance takes on a GPU, and the inverse. Pure: no I/O.

One module per term, each rule of vLLM's written once:
  settings.py      the serve settings, the GPU, vLLM's defaults (utilization, batching, dtypes,
                   block size, which model runner), version parsing
  kv.py            the KV-cache layout (bytes per token, pages, layer groups, blocks per request)
  activation.py    the profile run's peak activation and the sampler warm-up
  cudagraphs.py    the CUDA-graph term, and whether vLLM counts it inside its budget
  coefficients.py  the fitted terms and a calibration's measured ones
  weights.py       the weights vLLM loads on a GPU (computed once per model and settings)
  budget.py        the budget: its overhead, the context outside it, the utilization for N bytes,
                   and vLLM's start-up check
  estimate.py      forward and inverse estimates (`Estimate`)
  asleep.py        an instance asleep (sleep mode): the GPU residue and the host copy
"""

from gpushare.memory.activation import activation_bytes, sampler_warmup_bytes
from gpushare.memory.asleep import SleepFootprint, sleep_footprint
from gpushare.memory.budget import Budget, requested_bytes, utilization_for
from gpushare.memory.coefficients import Coefficients, MeasuredTerms
from gpushare.memory.cudagraphs import capture_sizes, cuda_graph_bytes, cudagraphs_in_budget
from gpushare.memory.estimate import Estimate, estimate, minimum_for_target
from gpushare.memory.kv import KvLayout, kv_layout, tokens_for_blocks
from gpushare.memory.settings import (
    DEFAULT_VLLM_VERSION,
    DTYPE_BYTES,
    KV_CACHE_DTYPES,
    V1_MOE_NOTE,
    GpuTarget,
    KvCacheDtype,
    ServeSettings,
    default_batching,
    default_utilization,
    model_dtype,
    moe_on_v1_runner,
    parse_version,
    with_batching_defaults,
)

__all__ = [
    "DEFAULT_VLLM_VERSION",
    "DTYPE_BYTES",
    "KV_CACHE_DTYPES",
    "V1_MOE_NOTE",
    "Budget",
    "Coefficients",
    "Estimate",
    "GpuTarget",
    "KvCacheDtype",
    "KvLayout",
    "MeasuredTerms",
    "ServeSettings",
    "SleepFootprint",
    "activation_bytes",
    "capture_sizes",
    "cuda_graph_bytes",
    "cudagraphs_in_budget",
    "default_batching",
    "default_utilization",
    "estimate",
    "kv_layout",
    "minimum_for_target",
    "model_dtype",
    "moe_on_v1_runner",
    "parse_version",
    "requested_bytes",
    "sampler_warmup_bytes",
    "sleep_footprint",
    "tokens_for_blocks",
    "utilization_for",
    "with_batching_defaults",
]
