"""The start order: which instances form a start group, and in which order a group starts.

One rule, used by the planner (to number `start_group` and `start_order`) and by the launcher
(to start a plan): instances that share a GPU, directly or through a tensor-parallel instance,
form one group; groups are numbered by their smallest GPU index, and instances without a GPU (the
CPU backend) form one group of their own, numbered first. A group whose members all fix their KV
size may start at once; otherwise one at a time, in start order, since vLLM measures free memory
while a neighbour allocates and would charge it to the wrong instance.

On-demand instances (residency on-demand) start after every resident instance of their group, one
at a time, and each is put to sleep as soon as it serves, before the next one starts: their
awake footprints together may exceed the GPU, and vLLM's start-up check (free ≥ utilization ×
total) passes for each only with the others asleep (memory/budget.py `Budget.start_deficit_bytes`;
planning/build.py counts who holds what). The slow first sleep (weights copied to pinned host
memory: 10–14 s measured) so happens during `up`, never on a user's request.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from gpushare.planning.plan import PlannedInstance

T = TypeVar("T")
_CPU = -1  # the key of instances without a GPU


def group_numbers(gpu_sets: Sequence[Sequence[int]]) -> list[int]:
    """The start group of each entry, given the GPUs each one uses (see the module docstring)."""
    parent: dict[int, int] = {}

    def find(key: int) -> int:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for gpus in gpu_sets:
        keys = list(gpus) or [_CPU]
        for key in keys[1:]:
            a, b = find(key), find(keys[0])
            parent[max(a, b)] = min(a, b)  # the root is the group's smallest key
    roots = [find(min(gpus, default=_CPU)) for gpus in gpu_sets]
    number = {root: n for n, root in enumerate(sorted(set(roots)))}
    return [number[root] for root in roots]


def start_order(
    entries: Sequence[T],
    gpus_of: Callable[[T], Sequence[int]],
    first: Callable[[T], Any],
    on_demand: Callable[[T], bool] = lambda entry: False,
) -> list[tuple[T, int, int]]:
    """(entry, start group, position in its group) for each entry; within a group, resident
    entries first, then on-demand ones, each in the order of the key `first` (the planner: higher
    priority, then tensor-parallel ones, then larger needs)."""
    numbers = group_numbers([gpus_of(e) for e in entries])
    counters: dict[int, int] = {}
    out: list[tuple[T, int, int]] = []
    for i in sorted(range(len(entries)), key=lambda i: (on_demand(entries[i]), first(entries[i]))):
        group = numbers[i]
        out.append((entries[i], group, counters.get(group, 0)))
        counters[group] = counters.get(group, 0) + 1
    return out


def start_groups(instances: Sequence[PlannedInstance]) -> list[list[PlannedInstance]]:
    """A plan's instances as its start groups (`PlannedInstance.start_group`, as the planner
    numbered them), in group order, each in start order."""
    groups: dict[int, list[PlannedInstance]] = {}
    for inst in instances:
        groups.setdefault(inst.start_group, []).append(inst)
    return [sorted(groups[n], key=lambda i: (i.start_order, i.name)) for n in sorted(groups)]


def starts_together(group: Sequence[PlannedInstance]) -> bool:
    """Whether a start group may start all at once: every member fixes its KV size and none is
    on-demand."""
    return all(inst.kv_fixed and not inst.on_demand for inst in group)


def next_to_start(
    groups: Sequence[Sequence[PlannedInstance]], waiting: Collection[str], settled: Collection[str]
) -> list[str]:
    """Which instances may start now. `waiting`: not started yet; `settled`: done starting, either
    way (serving or given up on). A group that starts together starts every waiting member; any
    other group starts its first member in start order that is not settled, once it waits."""
    chosen: list[str] = []
    for group in groups:
        if starts_together(group):
            chosen.extend(i.name for i in group if i.name in waiting)
            continue
        current = next((i for i in group if i.name not in settled), None)
        if current is not None and current.name in waiting:
            chosen.append(current.name)
    return chosen


def sleeps_after_start(inst: PlannedInstance) -> bool:
    """Whether the launcher puts the instance to sleep once it serves, before starting the next."""
    return inst.on_demand
