"""A described GPU inventory: GPUs given as values or read from a JSON file.

It is the inventory for planning on a machine that is not the target, for profiles that list
their GPUs, and for tests. The JSON form is what `gpushare gpus --json` prints, so a real machine's
inventory can be saved there and planned against anywhere:

    [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-…", "total_bytes": 85520809984,
      "reserved_bytes": 503316480, "used_bytes": 0, "free_bytes": 85017493504,
      "mig_enabled": false, "processes": [{"pid": 4242, "name": "python3", "used_bytes": 1616904192}],
      "mps_daemon_running": false}]

An object `{"gpus": [...], "mps_daemon_running": false}` is read too. In a file, sizes may also be
strings such as "80GiB"; a GPU whose `name` is in the catalog may leave out `total_bytes` and
`reserved_bytes`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gpushare.catalog.gpus import find_gpu_model
from gpushare.devices.base import Gpu, GpuProcess
from gpushare.errors import InputError
from gpushare.units import parse_bytes

_GPU_KEYS = frozenset(
    {
        "index",
        "name",
        "uuid",
        "total_bytes",
        "reserved_bytes",
        "used_bytes",
        "free_bytes",
        "mig_enabled",
        "processes",
        "mps_daemon_running",
    }
)
_PROCESS_KEYS = frozenset({"pid", "name", "used_bytes"})


class StaticInventory:
    """GPUs that are described rather than asked for. `mps` says whether an MPS daemon runs."""

    def __init__(self, gpus: Iterable[Gpu], mps: bool = False) -> None:
        self._gpus = tuple(gpus)
        self._mps = mps

    def gpus(self) -> list[Gpu]:
        return list(self._gpus)

    def mps_daemon_running(self) -> bool:
        return self._mps

    @classmethod
    def from_json_file(cls, path: str | Path) -> StaticInventory:
        """Read a described inventory; errors name the file and the place in it."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read it ({exc})") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_records(data, where=str(path))

    @classmethod
    def from_records(cls, data: Any, where: str = "GPU inventory") -> StaticInventory:
        """Build from the decoded JSON (a list of GPU objects, or {"gpus": [...], ...})."""
        mps = False
        if isinstance(data, dict):
            unknown = sorted(set(data) - {"gpus", "mps_daemon_running"})
            if unknown:
                raise InputError(f"{where}: unknown key {unknown[0]!r}; expected gpus, mps_daemon_running")
            mps = _bool(data.get("mps_daemon_running", False), f"{where}: mps_daemon_running")
            data = data.get("gpus")
        if not isinstance(data, list):
            raise InputError(f"{where}: expected a list of GPU objects (what `gpushare gpus --json` prints)")
        gpus = []
        for position, record in enumerate(data):
            gpus.append(gpu_from_record(record, f"{where}: gpus[{position}]", default_index=position))
            mps = mps or bool(isinstance(record, dict) and record.get("mps_daemon_running") is True)
        indices = [gpu.index for gpu in gpus]
        if len(set(indices)) != len(indices):
            raise InputError(f"{where}: two GPUs have the same index ({indices})")
        return cls(sorted(gpus, key=lambda g: g.index), mps=mps)


def gpu_to_record(gpu: Gpu, mps_daemon_running: bool) -> dict[str, Any]:
    """The JSON object for one GPU (bytes as ints), as `gpushare gpus --json` prints it."""
    return {
        "index": gpu.index,
        "name": gpu.name,
        "uuid": gpu.uuid,
        "total_bytes": gpu.total_bytes,
        "reserved_bytes": gpu.reserved_bytes,
        "used_bytes": gpu.used_bytes,
        "free_bytes": gpu.free_bytes,
        "mig_enabled": gpu.mig_enabled,
        "processes": [{"pid": p.pid, "name": p.name, "used_bytes": p.used_bytes} for p in gpu.processes],
        "mps_daemon_running": mps_daemon_running,
    }


def gpu_from_record(record: Any, where: str, default_index: int = 0) -> Gpu:
    """The inverse of `gpu_to_record`, with checks; `where` prefixes every error."""
    if not isinstance(record, Mapping):
        raise InputError(f"{where}: expected an object with name and total_bytes")
    unknown = sorted(set(record) - _GPU_KEYS)
    if unknown:
        raise InputError(
            f"{where}: unknown key {unknown[0]!r}", hint=f"known keys: {', '.join(sorted(_GPU_KEYS))}"
        )
    name = record.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{where}.name: required, a GPU name such as 'NVIDIA H100 80GB HBM3'")
    model = find_gpu_model(name)
    if "total_bytes" in record:
        total = _size(record["total_bytes"], f"{where}.total_bytes")
    elif model is not None:
        total = model.total_bytes
    else:
        raise InputError(f"{where}.total_bytes: required for {name!r}, which is not in the GPU catalog")
    if "reserved_bytes" in record:
        reserved = _size(record["reserved_bytes"], f"{where}.reserved_bytes")
    else:
        # A catalog GPU described with its real total keeps the catalog's reservation.
        reserved = model.reserved_bytes if model is not None and total == model.total_bytes else 0
    if reserved > total:
        raise InputError(f"{where}.reserved_bytes: larger than total_bytes ({reserved} > {total})")
    used = _size(record.get("used_bytes", 0), f"{where}.used_bytes")
    free_raw = record.get("free_bytes")
    free = None if free_raw is None else _size(free_raw, f"{where}.free_bytes")
    index = record.get("index", default_index)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InputError(f"{where}.index: must be a non-negative integer, got {index!r}")
    uuid = record.get("uuid")
    if uuid is not None and not isinstance(uuid, str):
        raise InputError(f"{where}.uuid: must be a string, got {uuid!r}")
    processes = record.get("processes", [])
    if not isinstance(processes, list):
        raise InputError(f"{where}.processes: must be a list")
    return Gpu(
        index=index,
        name=name,
        total_bytes=total,
        reserved_bytes=reserved,
        used_bytes=used,
        free_bytes=free,
        uuid=uuid,
        mig_enabled=_bool(record.get("mig_enabled", False), f"{where}.mig_enabled"),
        processes=tuple(_process(p, f"{where}.processes[{i}]") for i, p in enumerate(processes)),
    )


def _process(record: Any, where: str) -> GpuProcess:
    if not isinstance(record, Mapping):
        raise InputError(f"{where}: expected an object with pid and used_bytes")
    unknown = sorted(set(record) - _PROCESS_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; expected pid, name, used_bytes")
    pid = record.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid < 0:
        raise InputError(f"{where}.pid: must be a non-negative integer, got {pid!r}")
    name = record.get("name", "")
    if not isinstance(name, str):
        raise InputError(f"{where}.name: must be a string, got {name!r}")
    return GpuProcess(
        pid=pid, used_bytes=_size(record.get("used_bytes", 0), f"{where}.used_bytes"), name=name
    )


def _size(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InputError(f"{where}: must be bytes as an integer or a size such as 80GiB, got {value!r}")
    return parse_bytes(value, where)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{where}: must be true or false, got {value!r}")
    return value
