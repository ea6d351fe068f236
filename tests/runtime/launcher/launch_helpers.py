"""Plans and edges for the launcher tests."""

from __future__ import annotations

import dataclasses
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from gpushare.devices.base import GpuInventory
from gpushare.planning.plan import Plan, PlannedGpu, PlannedInstance
from gpushare.planning.start import group_numbers
from gpushare.runtime.host.clock import SystemClock
from gpushare.runtime.host.mps import FakeMpsControl, MpsControl
from gpushare.runtime.host.probe import HttpProber
from gpushare.runtime.host.processes import SubprocessRunner
from gpushare.runtime.launcher.edges import Edges

FAKE_SERVER = Path(__file__).parent.parent / "fake_vllm_server.py"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def instance(
    name: str,
    argv: Sequence[str],
    port: int,
    model: str = "tiny",
    gpus: tuple[int, ...] = (),
    start_order: int = 0,
    kv_fixed: bool = True,
    planned_bytes: int = 0,
    env: dict[str, str] | None = None,
) -> PlannedInstance:
    return PlannedInstance(
        name=name,
        model=model,
        gpus=gpus,
        port=port,
        start_order=start_order,
        gpu_memory_utilization=0.9,
        kv_cache_memory_bytes=64 << 20 if kv_fixed else None,
        planned_bytes=planned_bytes,
        argv=tuple(argv),
        env=dict(env or {}),
        kv_fixed=kv_fixed,
    )


def fake_server_argv(name: str, port: int, model_dir: Path, *faults: str) -> list[str]:
    return [
        sys.executable, str(FAKE_SERVER), "--model", str(model_dir),
        "--served-model-name", name, "--port", str(port), *faults,
    ]  # fmt: skip


def numbered(instances: Sequence[PlannedInstance]) -> tuple[PlannedInstance, ...]:
    """The instances with the start groups the planner gives them (planning/start.py: by GPU)."""
    groups = group_numbers([i.gpus for i in instances])
    return tuple(dataclasses.replace(i, start_group=g) for i, g in zip(instances, groups, strict=True))


def plan_of(
    *instances: PlannedInstance, profile: str = "lab", mps: str = "off", gpus: Sequence[PlannedGpu] = ()
) -> Plan:
    """A plan of hand-made instances, start groups numbered as the planner numbers them."""
    return Plan(
        profile_name=profile,
        feasible=True,
        gpus=tuple(gpus),
        instances=numbered(instances),
        unplaced=(),
        mps=mps,
    )


def model_folder(tmp_path: Path) -> Path:
    """A folder that passes the model check (config.json) for fake servers."""
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text("{}")
    return folder


def real_process_edges(
    inventory: GpuInventory | None = None, mps: MpsControl | None = None, completion_timeout_s: float = 120.0
) -> Edges:
    """Real processes, HTTP and time; MPS through a fake (no GPU here)."""
    return Edges(
        runner=SubprocessRunner(),
        prober=HttpProber(completion_timeout_s=completion_timeout_s),
        clock=SystemClock(),
        mps=mps or FakeMpsControl(installed=False),
        inventory=inventory,
    )
