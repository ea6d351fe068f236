"""How a pod asks for GPU: the extended resources of each mode, node labels, device-plugin config.

Facts from NVIDIA/k8s-device-plugin v0.20.0 (commit 1b826ac) and Project-HAMi, gathered with their
sources in ../shared/K8S-MIG.md:
- whole GPUs: `nvidia.com/gpu: N`; extended resources are whole numbers (`0.5` is refused);
- MIG, mixed strategy: `nvidia.com/mig-<profile>: 1`, the profile's `+` written `.`
  (internal/rm/rm.go: `strings.ReplaceAll("mig-"+p.String(), "+", ".")`), and GPU feature
  discovery's `nvidia.com/mig-<profile>.product` label naming the parent GPU and the profile. The
  single strategy advertises slices as `nvidia.com/gpu` and only on a node whose GPUs all have MIG
  on with one profile (internal/lm/mig-strategy.go `newMigStrategySingleLabeler`): a pod cannot
  ask for a profile there, so the export writes the mixed strategy only;
- HAMi: `nvidia.com/gpu` (count), `nvidia.com/gpumem` (MiB per GPU), `nvidia.com/gpucores` (%);
- time-slicing / MPS: `nvidia.com/gpu: 1` (or `nvidia.com/gpu.shared` with renameByDefault), the
  replicas set in the plugin's `sharing:` config (api/config/v1/sharing.go, replicas.go).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gpushare.errors import InputError
from gpushare.export.k8s.meta import is_label_value
from gpushare.units import MiB

GPU_RESOURCE = "nvidia.com/gpu"
SHARED_GPU_RESOURCE = "nvidia.com/gpu.shared"
HAMI_MEMORY_RESOURCE = "nvidia.com/gpumem"
HAMI_CORES_RESOURCE = "nvidia.com/gpucores"

PRODUCT_LABEL = "nvidia.com/gpu.product"
MIG_CONFIG_LABEL = "nvidia.com/mig.config"
MIG_CONFIG_STATE_LABEL = "nvidia.com/mig.config.state"
DEVICE_PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"

SharingMethod = Literal["timeSlicing", "mps"]
MigStrategy = Literal["none", "single", "mixed"]

_MIG_PROFILE = re.compile(r"[1-9]g\.[0-9]+gb(\+me)?(\.all)?")


@dataclass(frozen=True)
class WholeGpus:
    """`count` whole GPUs (gpu-pod mode; a tensor-parallel group asks for all of its GPUs)."""

    count: int

    def resources(self) -> dict[str, str]:
        if self.count < 1:
            raise InputError(f"a pod needs at least one whole GPU, got {self.count}")
        return {GPU_RESOURCE: str(self.count)}


@dataclass(frozen=True)
class MigDevice:
    """One MIG slice of `profile` (e.g. `3g.40gb`), advertised by the mixed strategy."""

    profile: str

    def resources(self) -> dict[str, str]:
        if _MIG_PROFILE.fullmatch(self.profile) is None:
            raise InputError(
                f"MIG profile {self.profile!r} is not a profile name such as 3g.40gb or 1g.10gb+me"
            )
        return {mig_resource(self.profile): "1"}


@dataclass(frozen=True)
class HamiShare:
    """A HAMi share: `count` GPUs with `memory_bytes` of each (rounded up to whole MiB, HAMi's unit),
    and `cores_percent` of the SMs when the profile sets a share."""

    memory_bytes: int
    count: int = 1
    cores_percent: int | None = None

    @property
    def memory_mib(self) -> int:
        return -(-self.memory_bytes // MiB)

    def resources(self) -> dict[str, str]:
        if self.count < 1 or self.memory_bytes <= 0:
            raise InputError(f"a HAMi share needs a GPU count ≥ 1 and memory > 0, got {self}")
        resources = {GPU_RESOURCE: str(self.count), HAMI_MEMORY_RESOURCE: str(self.memory_mib)}
        if self.cores_percent is not None:
            if not 1 <= self.cores_percent <= 100:
                raise InputError(f"gpucores must be 1..100 (percent of the SMs), got {self.cores_percent}")
            resources[HAMI_CORES_RESOURCE] = str(self.cores_percent)
        return resources


@dataclass(frozen=True)
class SharedReplica:
    """One replica of a time-sliced or MPS-shared GPU; `renamed` when the plugin advertises
    `nvidia.com/gpu.shared` (renameByDefault: true)."""

    renamed: bool = False

    def resources(self) -> dict[str, str]:
        return {SHARED_GPU_RESOURCE if self.renamed else GPU_RESOURCE: "1"}


GpuRequest = WholeGpus | MigDevice | HamiShare | SharedReplica


def mig_resource(profile: str) -> str:
    """`nvidia.com/mig-<profile>` as the device plugin names it (`+` becomes `.`)."""
    return "nvidia.com/mig-" + profile.replace("+", ".")


def gpu_product_label(nvml_name: str, *, shared_unrenamed: bool = False) -> str:
    """The value GPU feature discovery puts in `nvidia.com/gpu.product` for a GPU NVML names so.

    internal/lm/resource.go `sanitise`: drop every character but letters, digits, `-_. ` and
    space, then join the words with `-` ("NVIDIA H100 80GB HBM3" → "NVIDIA-H100-80GB-HBM3").
    A time-sliced or MPS-shared GPU not renamed to `.shared` gets `-SHARED` appended
    (`getProductName`), so a nodeSelector must carry it too.
    """
    words = re.sub(r"[^A-Za-z0-9\-_. ]", "", nvml_name).split()
    value = "-".join(words)
    if shared_unrenamed:
        value += "-SHARED"
    if not value or not is_label_value(value):
        raise InputError(f"GPU name {nvml_name!r} gives no valid nvidia.com/gpu.product label value")
    return value


def device_plugin_config(
    method: SharingMethod,
    replicas: int,
    *,
    rename_by_default: bool = False,
    mig_strategy: MigStrategy = "none",
) -> dict[str, Any]:
    """The device plugin's config file (`version: v1`) sharing every GPU of a node in `replicas`.

    One method and one replica count per node (api/config/v1/sharing.go); at least 2 replicas
    (replicas.go: "number of replicas must be >= 2"); `failRequestsGreaterThanOne` so a pod asking
    for 2 replicas is refused instead of getting two slices of one GPU. MPS on MIG devices is
    refused by the plugin, so `mps` needs `mig_strategy: none`.
    """
    if replicas < 2:
        raise InputError(f"the device plugin shares a GPU in 2 or more replicas, got {replicas}")
    if method == "mps" and mig_strategy != "none":
        raise InputError("the device plugin does not run MPS on MIG devices; use migStrategy none")
    return {
        "version": "v1",
        "flags": {"migStrategy": mig_strategy},
        "sharing": {
            method: {
                "renameByDefault": rename_by_default,
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": GPU_RESOURCE, "replicas": replicas}],
            }
        },
    }


def mig_product_label(nvml_name: str, profile: str) -> tuple[str, str]:
    """The label GPU feature discovery puts on a node with MIG devices of `profile` under the mixed
    strategy, as (key, value): `nvidia.com/mig-3g.71gb.product: NVIDIA-H200-MIG-3g.71gb`.

    internal/lm/mig-strategy.go `newMigStrategyMixedLabeler` names the resource
    `nvidia.com/mig-<profile>` (`+` written `.`, internal/resource/nvml-mig-device.go), and
    internal/lm/resource.go `NewMIGResourceLabeler` labels `<resource>.product` with the parent's
    sanitised name, "MIG" and the profile joined by `-`. The parent's model matters: one profile
    name (3g.40gb) is an A100 80GB slice of 40192 MiB and an H100 slice of 40448 MiB.
    """
    key = mig_resource(profile) + ".product"
    value = f"{gpu_product_label(nvml_name)}-MIG-{profile.replace('+', '.')}"
    if not is_label_value(value):
        raise InputError(f"GPU {nvml_name!r} with MIG profile {profile!r} gives no valid label value")
    return key, value


def mig_device_plugin_config(mig_strategy: MigStrategy = "mixed") -> dict[str, Any]:
    """The device plugin's config file for MIG nodes: no sharing, only `flags.migStrategy`.

    The plugin takes a flag from its command line first, then its environment, then this file
    (api/config/v1/config.go `NewConfig`); the GPU Operator sets MIG_STRATEGY from its
    `mig.strategy` value (controllers/object_controls.go `applyMIGConfiguration`), which then wins.
    """
    return {"version": "v1", "flags": {"migStrategy": mig_strategy}}


MIG_MANAGER_DEFAULT_CONFIG = "all-disabled"
"""The config the GPU Operator labels a MIG-capable node with when it has none
(api/nvidia/v1/clusterpolicy_types.go `MIGPartedConfigSpec.Default`; nodelabeling_controller.go)."""


def mig_manager_config(mig_parted: Mapping[str, Any]) -> dict[str, Any]:
    """A mig-parted config for the GPU Operator's MIG manager: the plan's configs (a `version: v1`
    document, mig/emit.py) plus `all-disabled`, which the operator's default node label names and
    which a custom config (`migManager.config.name`) must therefore hold too."""
    configs = dict(mig_parted["mig-configs"])
    if not configs:
        raise InputError("a mig-parted config needs at least one entry in mig-configs")
    configs.setdefault(MIG_MANAGER_DEFAULT_CONFIG, [{"devices": "all", "mig-enabled": False}])
    return {"version": mig_parted["version"], "mig-configs": configs}
