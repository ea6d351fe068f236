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

A MIG-enabled GPU lists its MIG devices (`"mig_enabled": true`), as `gpushare gpus --json` prints
them:

    "mig_devices": [{"uuid": "MIG-…", "profile": "3g.71gb", "start": 4, "total_bytes": 74893492224,
                     "used_bytes": 0, "free_bytes": 74893492224, "gpu_instance_id": 1,
                     "compute_instance_id": 0, "profile_id": 9, "processes": []}]

For a GPU with a MIG table (`gpushare mig profiles`), a device's profile must be one of its
profiles, `total_bytes` defaults to the catalog's memory for it, and devices with starts must form
a legal geometry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from gpushare.catalog.gpus import find_gpu_model
from gpushare.devices.base import Gpu, GpuProcess, MigDevice
from gpushare.errors import InputError
from gpushare.units import parse_bytes

# --- the file's shape (pydantic) ------------------------------------------------------------------
# Strict: JSON has no "1" for 1 or 1 for true, and a typo'd key is an error, not a default. Sizes are
# an int of bytes or a string such as "80GiB", parsed by `units.parse_bytes` after the shape is known.

Size = int | str
_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class _ProcessRecord(BaseModel):
    model_config = _STRICT

    pid: int = Field(ge=0)
    name: str = ""
    """The executable's name, as `gpushare gpus` shows it."""
    used_bytes: Size = 0
    """GPU memory the process holds (NVML)."""


class _MigRecord(BaseModel):
    model_config = _STRICT

    uuid: str | None = None
    """`MIG-...`; what `CUDA_VISIBLE_DEVICES` takes."""
    profile: str
    """The GPU-instance profile: `3g.71gb` (`gpushare mig profiles GPU` lists them)."""
    start: int | None = Field(default=None, ge=0, le=7)
    """The first memory unit of its GPU instance; null where the driver did not say."""
    total_bytes: Size | None = None
    """The device's own memory (NVML); default: the catalog's for the profile."""
    used_bytes: Size = 0
    free_bytes: Size | None = None
    gpu_instance_id: int | None = Field(default=None, ge=0)
    compute_instance_id: int | None = Field(default=None, ge=0)
    profile_id: int | None = Field(default=None, ge=0)
    processes: list[_ProcessRecord] = Field(default_factory=list)
    """Compute processes on this MIG device."""

    @field_validator("profile")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("blank")
        return value


class _GpuRecord(BaseModel):
    model_config = _STRICT

    index: int | None = Field(default=None, ge=0)
    """NVML's index; default: the position in the list."""
    name: str
    """As NVML names it ("NVIDIA H100 80GB HBM3"); a catalog name fills in the sizes."""
    uuid: str | None = None
    total_bytes: Size | None = None
    """NVML's total. Required unless `name` is in the GPU catalog."""
    reserved_bytes: Size | None = None
    """What the driver keeps; default: the catalog's for a catalog GPU at its real total, else 0."""
    used_bytes: Size = 0
    free_bytes: Size | None = None
    mig_enabled: bool = False
    processes: list[_ProcessRecord] = Field(default_factory=list)
    """Compute processes holding memory on it."""
    mig_devices: list[_MigRecord] = Field(default_factory=list)
    """Its MIG devices (only with mig_enabled)."""
    mps_daemon_running: bool = False
    """`gpushare gpus --json` repeats the machine's MPS state on every GPU."""

    @field_validator("name")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("blank")
        return value


class _InventoryObject(BaseModel):
    model_config = _STRICT

    gpus: list[_GpuRecord]
    mps_daemon_running: bool = False
    """Whether an MPS control daemon runs on the machine."""


_GPU_KEYS = tuple(_GpuRecord.model_fields)
_PROCESS_KEYS = tuple(_ProcessRecord.model_fields)
_MIG_KEYS = tuple(_MigRecord.model_fields)
_TOP_KEYS = tuple(_InventoryObject.model_fields)
_SIZE_FIELDS = frozenset({"total_bytes", "reserved_bytes", "used_bytes", "free_bytes"})
_ID_FIELDS = frozenset({"index", "pid", "gpu_instance_id", "compute_instance_id", "profile_id"})
_FIELDS = frozenset(_GPU_KEYS) | frozenset(_PROCESS_KEYS) | frozenset(_MIG_KEYS) | frozenset(_TOP_KEYS)
_GPU_NAME_FIX = "required, a GPU name such as 'NVIDIA H100 80GB HBM3'"


def _path(loc: Sequence[int | str]) -> tuple[list[int | str], str]:
    """(the location without pydantic's union-member tags, as text: 'gpus[0].processes[1].pid')."""
    kept = [part for part in loc if isinstance(part, int) or part in _FIELDS]
    text = ""
    for part in kept:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return kept, text


def _message(error: ErrorDetails, where: str) -> InputError:
    """One line for pydantic's error: the file, the place in it, and what to write there."""
    kept, place = _path(error["loc"])
    field = kept[-1] if kept else None
    value = error.get("input")
    got = repr(None if error["type"] == "missing" else value)
    if error["type"] == "extra_forbidden":
        key = error["loc"][-1]
        parent_loc, parent = _path(error["loc"][:-1])
        at = f"{where}: {parent}" if parent else where
        if not parent_loc:
            return InputError(f"{at}: unknown key {key!r}; expected {', '.join(_TOP_KEYS)}")
        if _innermost(parent_loc) == "processes":
            return InputError(f"{at}: unknown key {key!r}; expected {', '.join(_PROCESS_KEYS)}")
        if _innermost(parent_loc) == "mig_devices":
            return InputError(f"{at}: unknown key {key!r}", hint=f"known keys: {', '.join(_MIG_KEYS)}")
        return InputError(f"{at}: unknown key {key!r}", hint=f"known keys: {', '.join(sorted(_GPU_KEYS))}")
    if isinstance(field, int) or (error["type"] == "model_type" and field in ("processes", "mig_devices")):
        inner = _innermost(kept) or ""
        what = {"processes": "pid and used_bytes", "mig_devices": "uuid, profile and start"}.get(
            inner, "name and total_bytes"
        )
        return InputError(f"{where}: {place}: expected an object with {what}")
    if field == "gpus":
        return InputError(f"{where}: expected a list of GPU objects (what `gpushare gpus --json` prints)")
    at = f"{where}: {place}"
    if field in _SIZE_FIELDS:
        return InputError(f"{at}: must be bytes as an integer or a size such as 80GiB, got {got}")
    if field == "name" and "processes" not in kept:
        return InputError(f"{at}: {_GPU_NAME_FIX}")
    if field == "profile":
        return InputError(f"{at}: required, a MIG profile name such as '3g.71gb' (gpushare mig profiles GPU)")
    if field == "start":
        return InputError(f"{at}: must be a memory unit 0..7 or null, got {got}")
    if field in _ID_FIELDS:
        return InputError(f"{at}: must be a non-negative integer, got {got}")
    if field in ("mig_enabled", "mps_daemon_running"):
        return InputError(f"{at}: must be true or false, got {got}")
    if field in ("processes", "mig_devices"):
        return InputError(f"{at}: must be a list")
    if field in ("uuid", "name"):
        return InputError(f"{at}: must be a string, got {got}")
    return InputError(f"{at}: {error['msg']} (got {got})")  # a field added without its own message


def _innermost(loc: Sequence[int | str]) -> str | None:
    """The last named list in a location: 'processes', 'mig_devices' or 'gpus'."""
    return next((part for part in reversed(loc) if isinstance(part, str)), None)


def _first_error(exc: ValidationError, where: str) -> InputError:
    """A typo'd key explains the errors after it, so it goes first; else pydantic's first error."""
    errors = exc.errors()
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    return _message((unknown or errors)[0], where)


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
            raise InputError(
                f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); write it as "
                "`gpushare gpus --json` does"
            ) from None
        return cls.from_records(data, where=str(path))

    @classmethod
    def from_records(cls, data: Any, where: str = "GPU inventory") -> StaticInventory:
        """Build from the decoded JSON (a list of GPU objects, or {"gpus": [...], ...})."""
        if not isinstance(data, dict | list):
            raise InputError(f"{where}: expected a list of GPU objects (what `gpushare gpus --json` prints)")
        try:
            doc = _InventoryObject.model_validate(data if isinstance(data, dict) else {"gpus": data})
        except ValidationError as exc:
            raise _first_error(exc, where) from None
        gpus = [
            _gpu(record, f"{where}: gpus[{position}]", default_index=position)
            for position, record in enumerate(doc.gpus)
        ]
        indices = [gpu.index for gpu in gpus]
        if len(set(indices)) != len(indices):
            raise InputError(
                f"{where}: two GPUs have the same index ({indices}); give each GPU its own index"
            )
        mps = doc.mps_daemon_running or any(record.mps_daemon_running for record in doc.gpus)
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
        "processes": [_process_record(p) for p in gpu.processes],
        "mig_devices": [mig_to_record(d) for d in gpu.mig_devices],
        "mps_daemon_running": mps_daemon_running,
    }


def _process_record(p: GpuProcess) -> dict[str, Any]:
    return {"pid": p.pid, "name": p.name, "used_bytes": p.used_bytes}


def mig_to_record(d: MigDevice) -> dict[str, Any]:
    """One MIG device as `gpushare gpus --json` prints it (bytes as ints)."""
    return {
        "uuid": d.uuid,
        "profile": d.profile,
        "start": d.start,
        "total_bytes": d.total_bytes,
        "used_bytes": d.used_bytes,
        "free_bytes": d.free_bytes,
        "gpu_instance_id": d.gpu_instance_id,
        "compute_instance_id": d.compute_instance_id,
        "profile_id": d.profile_id,
        "processes": [_process_record(p) for p in d.processes],
    }


def gpu_from_record(record: Any, where: str, default_index: int = 0) -> Gpu:
    """The inverse of `gpu_to_record`, with checks; `where` prefixes every error."""
    try:
        doc = _InventoryObject.model_validate({"gpus": [record]})
    except ValidationError as exc:
        error = _first_error(exc, "")
        # The message reads ": gpus[0]...: why"; say `where` instead of the list position.
        raise InputError(where + error.message.removeprefix(": gpus[0]"), hint=error.hint) from None
    return _gpu(doc.gpus[0], where, default_index)


def _gpu(record: _GpuRecord, where: str, default_index: int) -> Gpu:
    """The GPU a validated record describes: sizes parsed, the catalog's total and reservation
    filled in for a GPU it knows."""
    model = find_gpu_model(record.name)
    if record.total_bytes is not None:
        total = parse_bytes(record.total_bytes, f"{where}.total_bytes")
    elif model is not None:
        total = model.total_bytes
    else:
        raise InputError(
            f"{where}.total_bytes: required for {record.name!r}, which is not in the GPU catalog; "
            'add it, e.g. "total_bytes": "80GiB"'
        )
    if record.reserved_bytes is not None:
        reserved = parse_bytes(record.reserved_bytes, f"{where}.reserved_bytes")
    else:
        # A catalog GPU described with its real total keeps the catalog's reservation.
        reserved = model.reserved_bytes if model is not None and total == model.total_bytes else 0
    if reserved > total:
        raise InputError(
            f"{where}.reserved_bytes: larger than total_bytes ({reserved} > {total}); give the "
            "driver's reservation, less than total_bytes"
        )
    free = None if record.free_bytes is None else parse_bytes(record.free_bytes, f"{where}.free_bytes")
    if record.mig_devices and not record.mig_enabled:
        raise InputError(
            f"{where}.mig_devices: listed but mig_enabled is false; set mig_enabled: true or remove them"
        )
    return Gpu(
        index=default_index if record.index is None else record.index,
        name=record.name,
        total_bytes=total,
        reserved_bytes=reserved,
        used_bytes=parse_bytes(record.used_bytes, f"{where}.used_bytes"),
        free_bytes=free,
        uuid=record.uuid,
        mig_enabled=record.mig_enabled,
        processes=_processes(record.processes, where),
        mig_devices=_mig_devices(record, f"{where}.mig_devices"),
    )


def _processes(records: Sequence[_ProcessRecord], where: str) -> tuple[GpuProcess, ...]:
    return tuple(
        GpuProcess(
            pid=p.pid, used_bytes=parse_bytes(p.used_bytes, f"{where}.processes[{i}].used_bytes"), name=p.name
        )
        for i, p in enumerate(records)
    )


def _mig_devices(record: _GpuRecord, where: str) -> tuple[MigDevice, ...]:
    """The GPU's MIG devices, checked against its MIG table when the catalog has one: known
    profiles, the catalog's memory where total_bytes is left out, a legal geometry."""
    from gpushare.catalog.mig import find_mig_table
    from gpushare.errors import GpushareError
    from gpushare.mig.geometry import Slice, geometry_problems

    table = find_mig_table(record.name)
    devices: list[MigDevice] = []
    slices: list[Slice] = []
    for i, d in enumerate(record.mig_devices):
        at = f"{where}[{i}]"
        profile = None
        if table is not None:
            try:
                profile = table.profile(d.profile)
            except GpushareError as exc:
                raise InputError(f"{at}.profile: {exc.message}", hint=exc.hint) from None
            if d.start is not None:
                slices.append(Slice(profile, d.start))
        if d.total_bytes is not None:
            total = parse_bytes(d.total_bytes, f"{at}.total_bytes")
        elif profile is not None and profile.memory_bytes is not None:
            total = profile.memory_bytes
        else:
            raise InputError(f"{at}.total_bytes: required (the catalog has no memory for {d.profile!r})")
        devices.append(
            MigDevice(
                uuid=d.uuid,
                profile=profile.name if profile is not None else d.profile,
                start=d.start,
                total_bytes=total,
                used_bytes=parse_bytes(d.used_bytes, f"{at}.used_bytes"),
                free_bytes=None if d.free_bytes is None else parse_bytes(d.free_bytes, f"{at}.free_bytes"),
                gpu_instance_id=d.gpu_instance_id,
                compute_instance_id=d.compute_instance_id,
                profile_id=d.profile_id
                if d.profile_id is not None or profile is None
                else profile.profile_id,
                processes=_processes(d.processes, at),
            )
        )
    if table is not None:
        problems = geometry_problems(table, slices)
        if problems:
            raise InputError(
                f"{where}: not a legal MIG geometry on {table.gpu_key}: {'; '.join(problems)}",
                hint=f"`gpushare mig profiles {table.gpu_key}` lists each profile's starts",
            )
    uuids = [d.uuid for d in devices if d.uuid is not None]
    if len(set(uuids)) != len(uuids):
        raise InputError(f"{where}: two MIG devices have the same uuid")
    return tuple(sorted(devices, key=lambda d: (d.start is None, d.start or 0, d.uuid or "")))
