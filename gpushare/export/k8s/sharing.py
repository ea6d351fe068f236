"""Can a plan be expressed as the device plugin's equal replicas? The check, with its numbers.

Time-slicing and MPS in NVIDIA's device plugin split every GPU of a node into `replicas` equal
slots, and the scheduler may put ANY `replicas` of the profile's pods on one GPU: the plan's
placement is not kept. So the question is not "does the plan fit" but "does every choice fit":

- both methods: the `replicas` largest instances together fit in the GPU's usable memory;
- MPS also pins each client to total/replicas: cmd/mps-control-daemon/mps/daemon.go sets
  `set_default_device_pinned_mem_limit <index> <TotalMemory/replicas/1024/1024>M` (whole MiB,
  rounded down) and `set_default_active_thread_percentage <100/replicas>`, so every instance must
  fit in that limit, and gets that share of the SMs;
- the node's GPUs times `replicas` must offer a slot to every instance;
- an instance over several GPUs cannot be expressed (failRequestsGreaterThanOne refuses a pod that
  asks for two replicas, and two replicas may be slices of one GPU anyway).

When the answer is no, `DoesNotFitError` says which instance, by how much, and which mode would
hold the plan instead (exit 1, like `check`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpushare.errors import DoesNotFitError, InputError
from gpushare.export.k8s.gpu import SharingMethod
from gpushare.units import MiB, format_bytes

ALTERNATIVES = "use --mode gpu-pod (keeps each instance's own memory) or hami"
"""What a refusal suggests: the modes that keep each instance's own memory (mig joins them once
export k8s has a mig mode; plans on MIG slices are refused by every mode until then)."""


@dataclass(frozen=True)
class SharedInstance:
    """One planned instance: its name, the GPU memory it holds (what NVML will show, per GPU) and
    how many GPUs it spans."""

    name: str
    planned_bytes: int
    gpus: int = 1


@dataclass(frozen=True)
class NodeGpus:
    """The GPUs of the node(s) the instances go to, all of one model: NVML's total per GPU, the
    part the plan lets instances use (total less reserve and the driver's share), and how many."""

    product: str
    total_bytes: int
    usable_bytes: int
    count: int


@dataclass(frozen=True)
class EqualSplit:
    """The device-plugin setting that holds the plan. `pinned_limit_bytes` and
    `thread_percentage` are MPS's per-client limits (None under time-slicing)."""

    method: SharingMethod
    replicas: int
    pinned_limit_bytes: int | None
    thread_percentage: int | None
    worst_case_bytes: int


def mps_pinned_limit_bytes(total_bytes: int, replicas: int) -> int:
    """The device plugin's per-client limit: TotalMemory/replicas in whole MiB, rounded down."""
    return (total_bytes // replicas // MiB) * MiB


def equal_split(
    method: SharingMethod,
    instances: Sequence[SharedInstance],
    gpus: NodeGpus,
    replicas: int | None = None,
) -> EqualSplit:
    """The replicas setting under which every placement the scheduler may choose fits, or refuse.

    `replicas` unset: the fewest that give every instance a slot (at least 2, the plugin's floor);
    fewer replicas mean a larger MPS limit and fewer co-tenants in the worst case.
    """
    label = "time-slicing" if method == "timeSlicing" else "MPS"
    if not instances:
        raise InputError(f"{label}: no instance to place")
    if gpus.count < 1 or gpus.total_bytes <= 0 or gpus.usable_bytes <= 0:
        raise InputError(f"{label}: the node needs at least one GPU with memory, got {gpus}")
    for inst in instances:
        if inst.gpus != 1:
            raise DoesNotFitError(
                f"{label} cannot hold {inst.name!r}: it spans {inst.gpus} GPUs (tensor parallel), and a "
                "shared GPU is handed out one replica at a time",
                hint=ALTERNATIVES,
            )
    needed = max(2, -(-len(instances) // gpus.count))
    if replicas is None:
        replicas = needed
    elif replicas < 2:
        raise InputError(f"{label}: replicas must be at least 2, got {replicas}")
    elif replicas < needed:
        raise DoesNotFitError(
            f"{label} with {replicas} replicas on {gpus.count} GPU(s) offers {replicas * gpus.count} slots "
            f"for {len(instances)} instances; it needs at least {needed} replicas",
            hint=f"set the replicas to {needed} or more",
        )
    largest = sorted(instances, key=lambda i: (-i.planned_bytes, i.name))
    together = largest[:replicas]
    worst = sum(i.planned_bytes for i in together)
    pinned: int | None = None
    threads: int | None = None
    if method == "mps":
        pinned = mps_pinned_limit_bytes(gpus.total_bytes, replicas)
        threads = 100 // replicas
        over = [i for i in largest if i.planned_bytes > pinned]
        if over:
            first = over[0]
            raise DoesNotFitError(
                f"MPS with {replicas} replicas limits each instance to {format_bytes(pinned)} "
                f"({format_bytes(gpus.total_bytes)} / {replicas} on {gpus.product}); {first.name!r} plans "
                f"{format_bytes(first.planned_bytes)}, {format_bytes(first.planned_bytes - pinned)} over"
                + (f" ({len(over)} instances are over)" if len(over) > 1 else ""),
                hint=ALTERNATIVES,
            )
    if worst > gpus.usable_bytes:
        names = ", ".join(f"{i.name} {format_bytes(i.planned_bytes)}" for i in together)
        short = format_bytes(worst - gpus.usable_bytes)
        raise DoesNotFitError(
            f"{label} with {replicas} replicas lets any {replicas} instances share one {gpus.product}; the "
            f"largest {replicas} ({names}) need {format_bytes(worst)}, "
            f"{short} more than the {format_bytes(gpus.usable_bytes)} usable",
            hint=ALTERNATIVES,
        )
    return EqualSplit(method, replicas, pinned, threads, worst)
