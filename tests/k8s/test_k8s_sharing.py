"""Device-plugin configs and the equal-replica check (time-slicing, MPS): what they accept, and the
numbers they refuse with."""

from __future__ import annotations

import pytest
import yaml

from gpushare.errors import DoesNotFitError, InputError
from gpushare.export.k8s import gpu, sharing
from gpushare.units import GiB, MiB

A100 = sharing.NodeGpus(
    product="NVIDIA-A100-SXM4-80GB", total_bytes=81920 * MiB, usable_bytes=72 * GiB, count=1
)


def inst(name: str, gib: float, gpus: int = 1) -> sharing.SharedInstance:
    return sharing.SharedInstance(name, int(gib * GiB), gpus)


@pytest.mark.parametrize(
    ("case", "name", "shared", "label"),
    [
        ("h100", "NVIDIA H100 80GB HBM3", False, "NVIDIA-H100-80GB-HBM3"),
        ("a100", "NVIDIA A100-SXM4-80GB", False, "NVIDIA-A100-SXM4-80GB"),
        ("odd-chars", "NVIDIA RTX (tm) 6000 Ada", False, "NVIDIA-RTX-tm-6000-Ada"),
        ("shared-suffix", "NVIDIA L40S", True, "NVIDIA-L40S-SHARED"),
    ],
)
def test_gpu_product_label(case: str, name: str, shared: bool, label: str) -> None:
    assert gpu.gpu_product_label(name, shared_unrenamed=shared) == label


def test_device_plugin_config_shape() -> None:
    config = gpu.device_plugin_config("timeSlicing", 3)
    assert config == {
        "version": "v1",
        "flags": {"migStrategy": "none"},
        "sharing": {
            "timeSlicing": {
                "renameByDefault": False,
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": "nvidia.com/gpu", "replicas": 3}],
            }
        },
    }
    mps = gpu.device_plugin_config("mps", 2, rename_by_default=True)
    assert list(mps["sharing"]) == ["mps"]
    assert mps["sharing"]["mps"]["renameByDefault"] is True
    assert yaml.safe_load(yaml.safe_dump(mps)) == mps
    with pytest.raises(InputError, match="2 or more"):
        gpu.device_plugin_config("timeSlicing", 1)
    with pytest.raises(InputError, match="MIG"):
        gpu.device_plugin_config("mps", 2, mig_strategy="mixed")


def test_mig_manager_config_adds_the_operators_default() -> None:
    from gpushare.mig.emit import mig_parted_counts

    planned = mig_parted_counts("gpushare-h200", {0: {"3g.71gb": 1, "2g.35gb": 1, "1g.18gb": 2}, 1: None})
    config = gpu.mig_manager_config(planned)
    assert config == {
        "version": "v1",
        "mig-configs": {
            "gpushare-h200": [
                {
                    "devices": [0],
                    "mig-enabled": True,
                    "mig-devices": {"3g.71gb": 1, "2g.35gb": 1, "1g.18gb": 2},
                },
                {"devices": [1], "mig-enabled": False},
            ],
            # the GPU Operator labels MIG-capable nodes with this one when they have none
            "all-disabled": [{"devices": "all", "mig-enabled": False}],
        },
    }
    assert planned["mig-configs"].keys() == {"gpushare-h200"}  # the plan's own is not changed
    with pytest.raises(InputError, match="at least one entry"):
        gpu.mig_manager_config({"version": "v1", "mig-configs": {}})


def test_mig_device_plugin_config_has_no_sharing() -> None:
    assert gpu.mig_device_plugin_config() == {"version": "v1", "flags": {"migStrategy": "mixed"}}


@pytest.mark.parametrize(
    ("case", "name", "profile", "key", "value"),
    [
        ("h200", "NVIDIA H200", "3g.71gb", "nvidia.com/mig-3g.71gb.product", "NVIDIA-H200-MIG-3g.71gb"),
        (
            "a100-80",
            "NVIDIA A100-SXM4-80GB",
            "3g.40gb",
            "nvidia.com/mig-3g.40gb.product",
            "NVIDIA-A100-SXM4-80GB-MIG-3g.40gb",
        ),
        (
            "media",
            "NVIDIA H100 80GB HBM3",
            "1g.10gb+me",
            "nvidia.com/mig-1g.10gb.me.product",
            "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb.me",
        ),
    ],
)
def test_mig_product_label_is_gfds(case: str, name: str, profile: str, key: str, value: str) -> None:
    from gpushare.export.k8s.meta import check_labels

    assert gpu.mig_product_label(name, profile) == (key, value)
    check_labels({key: value}, "test")  # a valid label key and value


def test_mps_pinned_limit_matches_the_plugin() -> None:
    # daemon.go: fmt.Sprintf("%vM", totalMemory/replicas/1024/1024), integer division throughout.
    total = 85_899_345_920 + 12_345
    assert sharing.mps_pinned_limit_bytes(total, 3) == (total // 3 // MiB) * MiB
    assert sharing.mps_pinned_limit_bytes(81920 * MiB, 4) == 20480 * MiB


def test_time_slicing_fits() -> None:
    split = sharing.equal_split(
        "timeSlicing", [inst("a", 30), inst("b", 20), inst("c", 10)], A100, replicas=3
    )
    assert split.replicas == 3
    assert split.worst_case_bytes == 60 * GiB
    assert split.pinned_limit_bytes is None and split.thread_percentage is None


def test_replicas_default_to_the_fewest_that_give_every_instance_a_slot() -> None:
    two_gpus = sharing.NodeGpus("X", 80 * GiB, 72 * GiB, count=2)
    assert sharing.equal_split("timeSlicing", [inst(n, 10) for n in "abcde"], two_gpus).replicas == 3
    assert sharing.equal_split("timeSlicing", [inst("a", 10)], two_gpus).replicas == 2  # the plugin's floor


def test_time_slicing_refuses_when_the_largest_could_share_a_gpu() -> None:
    two = sharing.NodeGpus("NVIDIA-A100-SXM4-80GB", 81920 * MiB, 72 * GiB, count=2)
    with pytest.raises(DoesNotFitError) as caught:
        sharing.equal_split("timeSlicing", [inst("a", 40), inst("b", 35), inst("c", 5)], two)
    message = caught.value.message
    # 3 instances on 2 GPUs: 2 replicas, and the scheduler may put a and b on one GPU
    assert "the largest 2 (a 40.00 GiB, b 35.00 GiB) need 75.00 GiB" in message
    assert "3.00 GiB more than the 72.00 GiB usable" in message
    assert "gpu-pod" in (caught.value.hint or "")


def test_mps_refuses_an_instance_over_its_pinned_limit() -> None:
    # 3 instances on one 80 GiB GPU: 3 replicas, each client pinned to 81920 MiB // 3 = 27306 MiB
    with pytest.raises(DoesNotFitError) as caught:
        sharing.equal_split("mps", [inst("big", 30), inst("b", 10), inst("c", 2)], A100)
    message = caught.value.message
    assert "MPS with 3 replicas limits each instance to 26.67 GiB (80.00 GiB / 3" in message
    assert "'big' plans 30.00 GiB, 3.33 GiB over" in message
    split = sharing.equal_split("mps", [inst("a", 25), inst("b", 10), inst("c", 2)], A100)
    assert split.pinned_limit_bytes == 27306 * MiB and split.thread_percentage == 33


def test_mps_also_needs_the_worst_case_to_fit() -> None:
    # each under its 26.67 GiB limit, but all three together exceed the 72 GiB the plan allows
    with pytest.raises(DoesNotFitError, match="need 78.00 GiB, 6.00 GiB more than the 72.00 GiB usable"):
        sharing.equal_split("mps", [inst("a", 26), inst("b", 26), inst("c", 26)], A100)


def test_tensor_parallel_cannot_be_shared() -> None:
    with pytest.raises(DoesNotFitError, match="spans 2 GPUs"):
        sharing.equal_split("timeSlicing", [inst("tp", 10, gpus=2), inst("b", 1)], A100)


def test_too_few_replicas_for_the_instances() -> None:
    with pytest.raises(DoesNotFitError, match="offers 2 slots for 3 instances; it needs at least 3"):
        sharing.equal_split("timeSlicing", [inst(n, 1) for n in "abc"], A100, replicas=2)
    with pytest.raises(InputError):
        sharing.equal_split("timeSlicing", [], A100)
