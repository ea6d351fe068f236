"""In which order `up` starts a plan's instances (pure).

Instances that share a GPU form a group; a group starts one instance at a time unless every member
fixes its KV cache size, because vLLM measures free memory while it starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gpushare.planning.plan import PlannedInstance
from gpushare.runtime.phase import InstancePhase


def start_groups(instances: Sequence[PlannedInstance]) -> list[list[PlannedInstance]]:
    """Instances that share a GPU (directly or through a multi-GPU instance) form one group, in
    start_order. Instances without a GPU (the CPU backend) form one group of their own."""
    parent: dict[str, str] = {inst.name: inst.name for inst in instances}

    def find(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    owner: dict[str, str] = {}
    for inst in instances:
        keys = [f"gpu{g}" for g in inst.gpus] or ["cpu"]
        for key in keys:
            if key in owner:
                parent[find(inst.name)] = find(owner[key])
            else:
                owner[key] = inst.name
    groups: dict[str, list[PlannedInstance]] = {}
    for inst in instances:
        groups.setdefault(find(inst.name), []).append(inst)
    ordered = [sorted(g, key=lambda i: (i.start_order, i.name)) for g in groups.values()]
    return sorted(ordered, key=lambda g: (min(g[0].gpus, default=-1), g[0].name))


def together(group: Sequence[PlannedInstance]) -> bool:
    """A group may start all at once only when every member fixes its KV size: otherwise vLLM
    measures free memory while a neighbour allocates, and charges it to the wrong instance."""
    return all(inst.kv_fixed for inst in group)


def next_to_start(
    groups: Sequence[Sequence[PlannedInstance]], states: Mapping[str, InstancePhase]
) -> list[str]:
    """Which pending instances may start now."""
    chosen: list[str] = []
    for group in groups:
        if together(group):
            chosen.extend(i.name for i in group if states[i.name] == "pending")
            continue
        for inst in group:
            state = states[inst.name]
            if state in ("ready", "failed"):
                continue
            if state == "pending":
                chosen.append(inst.name)
            break  # one at a time: wait for this one before the next
    return chosen
