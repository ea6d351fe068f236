"""What creates a geometry: `nvidia-smi mig -cgi` commands and a mig-parted config. Pure: text out.

`nvidia-smi mig -cgi` takes profile tuples, `PROFILE[:START]` (its `--help`, driver 580.159.04):
with a start the driver puts the instance exactly there, without one it picks a free place
itself, and then the order decides what still fits (the MIG user guide's 3-2-1-1 example fails
unless the 3g profile comes first). The commands here give every instance its start, and list
the largest first anyway, as the guide advises and as mig-parted creates them (its
`MigConfig.Flatten` sorts by compute slices, largest first).

A mig-parted config (what the NVIDIA GPU Operator's MIG manager applies) holds only counts per
profile, not starts: mig-parted creates them with `nvmlDeviceCreateGpuInstance` (no placement)
and retries other orders until one works (pkg/mig/config/config.go). Slices of one profile are
interchangeable, so an instance is bound to a profile, and to a MIG device of that profile when
it starts. The field rules come from mig-parted's api/spec/v1/spec.go (`version: v1`,
`mig-configs` of non-empty lists of {devices, mig-enabled, mig-devices}).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from gpushare.errors import InputError
from gpushare.mig.geometry import Geometry, Slice

MIG_PARTED_VERSION = "v1"

# A Kubernetes label value (the GPU Operator selects a config with nvidia.com/mig.config=<name>).
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)$")


def creation_order(geometry: Geometry) -> tuple[Slice, ...]:
    """The instances in the order to create them: largest first, then by start."""
    return tuple(sorted(geometry.slices, key=lambda s: (-s.profile.slices, -s.profile.size, s.start)))


def cgi_command(gpu_index: int, geometry: Geometry) -> str:
    """`nvidia-smi mig -i 0 -cgi 9:4,14:0,19:2,19:3 -C`: create the instances (each at its start)
    and a default compute instance in each (`-C`). Assumes MIG mode is on and the GPU holds no
    instances yet."""
    if not geometry.slices:
        raise ValueError("an empty geometry creates nothing")
    tuples = ",".join(f"{s.profile.profile_id}:{s.start}" for s in creation_order(geometry))
    return f"nvidia-smi mig -i {gpu_index} -cgi {tuples} -C"


def cgi_commands(geometries: Mapping[int, Geometry]) -> list[str]:
    """One `cgi_command` per GPU with instances, by GPU index."""
    return [cgi_command(gpu, geometries[gpu]) for gpu in sorted(geometries) if geometries[gpu].slices]


def mig_parted_config(name: str, geometries: Mapping[int, Geometry | None]) -> dict[str, Any]:
    """A mig-parted `v1` config named `name`: per GPU index its geometry's profile counts, or MIG
    off where the geometry is None (a GPU that runs whole). GPUs with the same counts share one
    entry. `name` must be a Kubernetes label value, since the GPU Operator selects it by label."""
    return mig_parted_counts(name, {gpu: None if g is None else g.counts for gpu, g in geometries.items()})


def mig_parted_counts(name: str, counts: Mapping[int, Mapping[str, int] | None]) -> dict[str, Any]:
    """`mig_parted_config` from each GPU's profile counts (`geometry.profile_counts`: largest
    first), None for MIG off: for slices known by profile alone, such as MIG devices whose start
    NVML did not give (a mig-parted config holds counts only)."""
    if not _LABEL_VALUE.match(name):
        raise InputError(
            f"mig-parted config name {name!r} is not a Kubernetes label value",
            hint="use at most 63 letters, digits, '-', '_' or '.', with a letter or digit at both ends",
        )
    if not counts:
        raise ValueError("a mig-parted config needs at least one GPU")
    groups: dict[tuple[tuple[str, int], ...] | None, list[int]] = {}
    for gpu in sorted(counts):
        per_profile = counts[gpu]
        key = None if per_profile is None else tuple(per_profile.items())
        groups.setdefault(key, []).append(gpu)
    entries: list[dict[str, Any]] = []
    for listed, gpus in groups.items():
        if listed is None:
            entries.append({"devices": gpus, "mig-enabled": False})
        else:
            entries.append({"devices": gpus, "mig-enabled": True, "mig-devices": dict(listed)})
    return {"version": MIG_PARTED_VERSION, "mig-configs": {name: entries}}


def mig_parted_yaml(config: Mapping[str, Any]) -> str:
    """The config as YAML, keys in mig-parted's order."""
    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None)
