"""vLLM's memory budget: what it holds besides the KV cache, what the process holds beside it, and
the utilization that asks for a given number of bytes. One object answers all of these, so the
planner, the renderer and calibration never recompute them.

vLLM's accounting (v1 engine; ../shared/VLLM-MEMORY.md, vllm/v1/worker/gpu_worker.py,
v1/worker/utils.py::request_memory):

    requested   = ceil(cuda_total × gpu_memory_utilization)
    kv_budget   = requested − weights − peak activation − non-torch  [− CUDA graphs, when the
                  profiler estimates them: memory/cudagraphs.py::cudagraphs_in_budget]
    process     = context + TP buffers (outside the budget) + requested-in-use
                  [+ CUDA graphs, when not in budget]

Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# vLLM rounds nothing; gpushare writes a utilization with 4 decimals, so a budget may exceed the
# exact need by up to total / 10_000 bytes (8 MiB on 80 GiB).
UTILIZATION_STEPS = 10_000


def utilization_for(budget_bytes: int, cuda_total_bytes: int) -> float:
    """The least utilization, to 4 decimals, with ceil(total × u) ≥ `budget_bytes`
    (v1/worker/utils.py: vLLM requests ceil(total × utilization))."""
    util = math.ceil(budget_bytes / cuda_total_bytes * UTILIZATION_STEPS) / UTILIZATION_STEPS
    while math.ceil(cuda_total_bytes * util) < budget_bytes:
        util = round(util + 1 / UTILIZATION_STEPS, 4)
    return util


def utilization_slack_bytes(cuda_total_bytes: int) -> int:
    """The most a 4-decimal utilization can ask beyond the bytes it was chosen for."""
    return math.ceil(cuda_total_bytes / UTILIZATION_STEPS)


def requested_bytes(utilization: float, cuda_total_bytes: int) -> int:
    """What vLLM requests for a utilization: ceil(total × utilization)."""
    return math.ceil(cuda_total_bytes * utilization)


@dataclass(frozen=True)
class Budget:
    """One instance's memory around its KV cache, per GPU, in bytes."""

    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    cuda_graph_in_budget: bool
    """Whether vLLM subtracts the CUDA graphs from its budget (memory/cudagraphs.py)."""
    context_bytes: int
    """Outside the budget and held when the instance's own start check runs: the CUDA context and
    handles, plus the sampler warm-up beyond the activation pool freed after profiling."""
    parallel_bytes: int = 0
    """Outside the budget too, when tensor parallel: NCCL's, the custom all-reduce's and symmetric
    memory's buffers, allocated before vLLM's snapshot (memory/parallel.py)."""
    cuda_graph_estimate_bytes: int | None = None
    """What vLLM subtracts for CUDA graphs when it counts them (its profiler's estimate, which
    the V1 runner makes from two captures per mode); None: the graphs' own size."""

    @property
    def graphs_reserved_bytes(self) -> int:
        """The CUDA-graph bytes inside the budget."""
        if not self.cuda_graph_in_budget:
            return 0
        if self.cuda_graph_estimate_bytes is None:
            return self.cuda_graph_bytes
        return self.cuda_graph_estimate_bytes

    @property
    def overhead_bytes(self) -> int:
        """What the budget holds besides the KV cache."""
        return self.weights_bytes + self.activation_bytes + self.non_torch_bytes + self.graphs_reserved_bytes

    @property
    def outside_bytes(self) -> int:
        """The process's memory beyond what it uses of its budget: the context, the TP buffers and
        the CUDA graphs beyond what vLLM reserved for them (all of them where it reserves nothing)."""
        return self.context_bytes + self.parallel_bytes + self.cuda_graph_bytes - self.graphs_reserved_bytes

    def kv_budget_bytes(self, utilization: float, cuda_total_bytes: int) -> int:
        """The KV budget vLLM measures from a utilization (before whole blocks)."""
        return requested_bytes(utilization, cuda_total_bytes) - self.overhead_bytes

    def utilization_for(self, kv_bytes: int, cuda_total_bytes: int) -> float:
        """The least 4-decimal utilization whose budget holds `kv_bytes` of KV cache."""
        return utilization_for(self.overhead_bytes + kv_bytes, cuda_total_bytes)

    def start_deficit_bytes(self, utilization: float, cuda_total_bytes: int, free_bytes: int) -> int:
        """By how much vLLM's start check misses (≤ 0: it passes). The check runs once the
        process holds its context and, when tensor parallel, its NCCL and all-reduce buffers (the
        snapshot comes after init_worker_distributed_environment, v1/worker/gpu_worker.py::
        init_device): free − context − TP buffers ≥ ceil(total × utilization)
        (v1/worker/utils.py::request_memory). `cuda_total_bytes` is the device total the process
        sees, `free_bytes` what is free for it just before it starts (a device's total less what
        others hold; a HAMi limit; an MPS pinned limit, which a client sees as its free memory
        while the total stays the whole GPU's: bench/gpu/results/h200-i15/k8s-facts.txt)."""
        held = self.context_bytes + self.parallel_bytes
        return requested_bytes(utilization, cuda_total_bytes) - (free_bytes - held)

    def device_total_for(self, kv_bytes: int, at_least_bytes: int, step_bytes: int) -> int:
        """The smallest device total, a whole number of `step_bytes` and at least `at_least_bytes`,
        on which this instance alone starts with `kv_bytes` of KV cache: its utilization there is
        `utilization_for(kv_bytes, total)` and the start check passes with the whole total free.
        (A memory limit that a container sees as its device total, e.g. HAMi's gpumem in MiB.)"""
        if step_bytes <= 0 or at_least_bytes <= 0:
            raise ValueError("step and lower bound must be positive")
        total = -(-at_least_bytes // step_bytes) * step_bytes
        for _ in range(1000):
            deficit = self.start_deficit_bytes(self.utilization_for(kv_bytes, total), total, total)
            if deficit <= 0:
                return total
            total += -(-deficit // step_bytes) * step_bytes
        raise ValueError(f"no device total holds {kv_bytes} bytes of KV cache")  # pragma: no cover
