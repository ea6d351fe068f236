"""MIG GPU-instance profiles per GPU model. Pure data and lookup; no NVML here.

A MIG GPU has 8 memory units and 7 compute slices. A GPU-instance profile takes `slices` compute
slices and `size` consecutive memory units starting at one of its `starts` (what
`nvidia-smi mig -lgipp` prints as `{starts}:size`). Its name is nominal (`1g.18gb` on an H200
holds 16 GiB): `memory_bytes` is what NVML and `nvidia-smi mig -lgip` report for the profile
(`nvmlGpuInstanceProfileInfo_t.memorySizeMB` × 2^20). It changes a little between drivers, so the
catalog keeps the SMALLEST value found in the sources of `MIG-SOURCES.md` (next to this file):
a plan made from the catalog then fits under every driver seen. On a real machine NVML is
authoritative.

Not every value could be sourced. `memory_bytes` or `sms` is None where no source gave it
(B200's and GH200 144GB's 3g/4g/7g, all of H20); such a profile is listed but never planned on.
`MigTable.placements_inferred` is true where no `-lgipp` output for that product was found and the
placements are those every sourced product of the same profile ids shows.

Tables are keyed by the names of `gpushare.catalog.gpus` (`h100-sxm-80gb`, ...) and looked up
through its name matching, so every alias and NVML name that names a GPU model names its table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpushare.catalog.gpus import GPU_MODELS, find_gpu_model, lookup_gpu_model
from gpushare.errors import InputError
from gpushare.units import GiB, MiB

MEMORY_UNITS = 8
"""Memory units of a 7-slice MIG GPU (each 1/8 of the memory; the MIG user guide's "memory slice")."""
COMPUTE_SLICES = 7
"""Compute slices of a 7-slice MIG GPU (each about 1/7 of the SMs)."""


@dataclass(frozen=True)
class MigProfile:
    """One GPU-instance profile of one GPU model."""

    name: str
    """The short name nvidia-smi and mig-parted use, e.g. `1g.10gb` or `1g.10gb+me`."""
    profile_id: int
    """GPU-instance profile id (the ID column of `nvidia-smi mig -lgip`; what `-cgi` takes)."""
    slices: int
    """Compute slices (the `Ng` of the name)."""
    memory_bytes: int | None
    """Memory NVML reports for the profile; None where no source gave it."""
    sms: int | None
    """Streaming multiprocessors; None where no source gave it."""
    max_count: int
    """How many instances of this profile fit on an empty GPU."""
    starts: tuple[int, ...]
    """Memory units an instance may start at."""
    size: int
    """Memory units an instance takes."""

    @property
    def media_extensions(self) -> bool:
        """A `+me` profile: the same slice with the GPU's media engines (one per GPU)."""
        return self.name.endswith("+me")

    @property
    def plannable(self) -> bool:
        """Whether the planner may put a model here: its memory is known."""
        return self.memory_bytes is not None


@dataclass(frozen=True)
class MemoryReading:
    """Profile memory one source reported where it differs from the table's (smallest) values:
    a driver that gives more, so `gpushare mig profiles` can show both and say which the planner
    uses."""

    source: str
    """The short name in MIG-SOURCES.md."""
    label: str
    """A column header: `lent H200`."""
    what: str
    """Where the numbers come from, for a note: `the lent H200, driver 580.159.04`."""
    memory_bytes: tuple[tuple[str, int], ...]
    """(profile name, bytes) for the profiles this source gave."""

    def of(self, profile: str) -> int | None:
        return dict(self.memory_bytes).get(profile)


@dataclass(frozen=True)
class MigTable:
    """The MIG profiles of one GPU model."""

    gpu_key: str
    """The `gpushare.catalog.gpus` key."""
    nvml_name: str
    profiles: tuple[MigProfile, ...]
    sources: tuple[str, ...]
    """Short names of the sources in MIG-SOURCES.md the values come from."""
    placements_inferred: bool = False
    notes: tuple[str, ...] = ()
    readings: tuple[MemoryReading, ...] = ()
    """Larger memory values other sources reported (the table keeps the smallest)."""

    def profile(self, name: str) -> MigProfile:
        """The profile named `name` (`1g.10gb`, `MIG 1g.10gb`, or its id `19`); InputError otherwise."""
        wanted = name.strip().removeprefix("MIG ").strip().lower()
        for p in self.profiles:
            if wanted in (p.name.lower(), str(p.profile_id)):
                return p
        raise InputError(
            f"{self.gpu_key} has no MIG profile {name!r}",
            hint=f"its profiles: {', '.join(p.name for p in self.profiles)}",
        )

    @property
    def unsourced(self) -> tuple[str, ...]:
        """Profiles with a value no source gave (memory or SMs)."""
        return tuple(p.name for p in self.profiles if p.memory_bytes is None or p.sms is None)


def lgip_gib_to_mib(printed: str) -> int:
    """MiB from the GiB column of `nvidia-smi mig -lgip`, which prints 2 decimals.

    Every profile memory NVML reported in the sources is a multiple of 128 MiB (1/8 GiB), and
    nvidia-smi rounds those to 2 decimals (19.625 prints as 19.62), so the nearest eighth of a GiB
    is the exact value. A printed value that is not within 0.005 of an eighth is refused.
    """
    gib = float(printed)
    eighths = round(gib * 8)
    if abs(eighths / 8 - gib) > 0.005 + 1e-9:
        raise ValueError(f"{printed} GiB is not a printed multiple of 1/8 GiB")
    return eighths * 128


def nominal_gb(gpu_total_bytes: int, memory_bytes: int) -> int:
    """The `gb` number of a profile's name: its share of memory rounded UP to eighths, times the
    GPU's memory in whole GiB rounded up, rounded half away from zero. The rule of go-nvlib's
    `getMigMemorySizeGB` (pkg/nvlib/device/mig_profile.go), which names profiles for mig-parted
    and the device plugin."""
    fraction = math.ceil(memory_bytes / gpu_total_bytes * 8) / 8
    total_gib = -(-gpu_total_bytes // GiB)
    return math.floor(fraction * total_gib + 0.5)


# The 7-slice profile shapes: (slices, memory units, starts). The same on every product whose
# `nvidia-smi mig -lgipp` output was found (A100, H100 SXM, H100 NVL, H200; MIG-SOURCES.md).
_SHAPES: dict[str, tuple[int, int, tuple[int, ...]]] = {
    "1g": (1, 1, (0, 1, 2, 3, 4, 5, 6)),
    "1g+me": (1, 1, (0, 1, 2, 3, 4, 5, 6)),
    "1g-2u": (1, 2, (0, 2, 4, 6)),  # the 1g profile with two memory units (1g.20gb on H100)
    "2g": (2, 2, (0, 2, 4)),
    "3g": (3, 4, (0, 4)),
    "4g": (4, 4, (0,)),
    "7g": (7, 8, (0,)),
}
# GPU-instance profile ids, the same on every product in the sources.
_IDS = {"1g": 19, "1g+me": 20, "1g-2u": 15, "2g": 14, "3g": 9, "4g": 5, "7g": 0}
_MAX = {"1g": 7, "1g+me": 1, "1g-2u": 4, "2g": 3, "3g": 2, "4g": 1, "7g": 1}


def _row(shape: str, name: str, printed_gib: str | None, sms: int | None) -> MigProfile:
    slices, size, starts = _SHAPES[shape]
    memory = None if printed_gib is None else lgip_gib_to_mib(printed_gib) * MiB
    return MigProfile(name, _IDS[shape], slices, memory, sms, _MAX[shape], starts, size)


def _reading(
    source: str, label: str, what: str, names: tuple[str, ...], gib: tuple[str, ...]
) -> MemoryReading:
    values = tuple((n, lgip_gib_to_mib(g) * MiB) for n, g in zip(names, gib, strict=True))
    return MemoryReading(source, label, what, values)


def _seven(
    names: tuple[str, str, str, str, str, str, str],
    gib: tuple[str | None, ...],
    sms: tuple[int | None, ...],
) -> tuple[MigProfile, ...]:
    """The seven profiles of a 7-slice GPU, in `-lgip` order: 1g, 1g+me, 1g (2 units), 2g, 3g, 4g, 7g."""
    shapes = ("1g", "1g+me", "1g-2u", "2g", "3g", "4g", "7g")
    return tuple(_row(s, n, g, m) for s, n, g, m in zip(shapes, names, gib, sms, strict=True))


_HOPPER_SMS = (16, 16, 26, 32, 60, 64, 132)
_A100_SMS = (14, 14, 14, 28, 42, 56, 98)
_UNKNOWN = (None,) * 7

# fmt: off
_A100_40 = _seven(
    ("1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    ("4.75", "4.75", "9.62", "9.62", "19.50", "19.50", "39.25"),
    _A100_SMS,
)
# 1g.20gb (two memory units) is missing from the A100 80GB captures; every capture of every
# product gives it the 2g profile's memory, and so does this table (MIG-SOURCES.md).
_A100_80 = _seven(
    ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    ("9.50", "9.50", "19.50", "19.50", "39.25", "39.25", "79.00"),
    _A100_SMS,
)
_H100_80_NAMES = ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")
_H100_80_GIB = ("9.75", "9.75", "19.62", "19.62", "39.50", "39.50", "79.25")
_NVL_NAMES = ("1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb")
_H200_NAMES = ("1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb")
_H200_LENT = _reading("measured-h200", "lent H200", "NVML on the lent H200 (driver 580.159.04)",
                      _H200_NAMES, ("16.00", "16.00", "32.50", "32.50", "69.75", "69.75", "140.00"))
_NVL_OTHER_HOSTS = _reading("lgip-h100-nvl-b", "other hosts",
                            "the H100 NVL hosts of gpu-operator#900 and mig-parted#101",
                            _NVL_NAMES, ("10.75", "10.75", "21.62", "21.62", "46.38", "46.38", "93.12"))
_96GB_NAMES = ("1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb")

MIG_TABLES: dict[str, MigTable] = {
    table.gpu_key: table
    for table in (
        MigTable("a100-sxm-40gb", "NVIDIA A100-SXM4-40GB", _A100_40,
                 ("mig-guide", "lgip-a100-40gb", "lgipp-a100-guide")),
        MigTable("a100-pcie-40gb", "NVIDIA A100-PCIE-40GB", _A100_40,
                 ("mig-guide", "lgip-a100-40gb", "lgipp-a100-guide"),
                 notes=("the A100 40GB table; no PCIe capture was found, NVIDIA's table covers A100",)),
        MigTable("a100-sxm-80gb", "NVIDIA A100-SXM4-80GB", _A100_80,
                 ("mig-guide", "lgip-a100-80gb"), placements_inferred=True),
        MigTable("a100-pcie-80gb", "NVIDIA A100 80GB PCIe", _A100_80,
                 ("mig-guide", "lgip-a100-80gb"), placements_inferred=True,
                 notes=("the A100 80GB table; no PCIe capture was found, NVIDIA's table covers A100",)),
        MigTable("h100-sxm-80gb", "NVIDIA H100 80GB HBM3",
                 _seven(_H100_80_NAMES, _H100_80_GIB, _HOPPER_SMS),
                 ("mig-guide", "lgip-h100-sxm", "lgipp-h100-sxm")),
        # The H100 PCIe has 114 SMs: its slices have fewer than the SXM's.
        MigTable("h100-pcie-80gb", "NVIDIA H100 PCIe",
                 _seven(_H100_80_NAMES, _H100_80_GIB, (14, 14, 14, 30, 46, 62, 114)),
                 ("mig-guide", "lgip-h100-pcie"), placements_inferred=True),
        MigTable("h100-nvl-94gb", "NVIDIA H100 NVL",
                 _seven(_NVL_NAMES,
                        ("10.62", "10.62", "21.50", "21.50", "46.12", "46.12", "92.62"), _HOPPER_SMS),
                 ("mig-guide", "lgip-h100-nvl-a", "lgip-h100-nvl-b", "lgipp-h100-nvl"),
                 readings=(_NVL_OTHER_HOSTS,)),
        MigTable("h200-141gb", "NVIDIA H200",
                 _seven(_H200_NAMES,
                        ("16.00", "16.00", "32.25", "32.25", "69.50", "69.50", "139.75"), _HOPPER_SMS),
                 ("mig-guide", "measured-h200", "lgip-h200-mig-parted-120"),
                 readings=(_H200_LENT,)),
        MigTable("gh200-96gb", "NVIDIA GH200 480GB",
                 _seven(_96GB_NAMES, ("11.00", "11.00", "23.00", "23.00", "46.50", "46.50", "93.00"),
                        _HOPPER_SMS),
                 ("mig-guide", "lgip-gh200-96gb"), placements_inferred=True),
        MigTable("gh200-144gb", "NVIDIA GH200 144G HBM3e",
                 _seven(("1g.18gb", "1g.18gb+me", "1g.36gb", "2g.36gb", "3g.72gb", "4g.72gb", "7g.144gb"),
                        ("17.50", "17.50", "35.25", "35.25", None, None, None),
                        (16, 16, 26, 32, None, None, None)),
                 ("mig-parted-139", "mig-parted-config"), placements_inferred=True,
                 notes=("3g/4g/7g memory and SMs not sourced (the capture found stops at 2g)",)),
        # H20: only names and counts (NVIDIA's vGPU guide, mig-parted's config) were found.
        MigTable("h20-96gb", "NVIDIA H20", _seven(_96GB_NAMES, _UNKNOWN, _UNKNOWN),
                 ("vgpu-guide-h20", "mig-parted-config", "mig-guide-gpus"), placements_inferred=True,
                 notes=("no `nvidia-smi mig -lgip` output for H20 was found: memory and SMs not sourced",
                        "profile ids assumed as on every other 7-slice GPU")),
        MigTable("b200-180gb", "NVIDIA B200",
                 _seven(("1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"),
                        ("20.50", "20.50", "44.25", "44.25", None, None, None),
                        (18, 18, 30, 36, None, None, None)),
                 ("mig-guide-b200", "mig-parted-166", "mig-parted-187"), placements_inferred=True,
                 notes=("3g/4g/7g memory and SMs not sourced (the captures found stop at 2g)",),
                 readings=(_reading("mig-parted-166", "2025-01 host", "the B200 of mig-parted#166 (2025-01)",
                                    ("1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb"),
                                    ("22.00", "22.00", "44.25", "44.25")),)),
    )
}
# fmt: on


def mig_gpu_keys() -> list[str]:
    """The GPU models with a MIG table, in catalog order."""
    return list(MIG_TABLES)


def find_mig_table(name: str) -> MigTable | None:
    """The MIG table of a GPU named `name` (any name the GPU catalog accepts), or None."""
    model = find_gpu_model(name)
    return MIG_TABLES.get(model.key) if model is not None else None


def lookup_mig_table(name: str) -> MigTable:
    """The MIG table of `name`; InputError naming the MIG GPUs when it has none or is unknown."""
    table = find_mig_table(name)
    if table is not None:
        return table
    hint = f"GPUs with MIG: {', '.join(mig_gpu_keys())}"
    try:
        model = lookup_gpu_model(name)  # raises for unknown and ambiguous names, with suggestions
    except InputError as exc:
        raise InputError(exc.message, hint=hint) from None
    raise InputError(f"{model.key} ({model.nvml_name}) has no MIG", hint=hint)


def _check_tables() -> None:
    """Every table's key is a GPU of the GPU catalog."""
    catalog = {m.key for m in GPU_MODELS}
    for key in MIG_TABLES:
        if key not in catalog:
            raise AssertionError(f"MIG table {key!r} names no GPU of the catalog")


_check_tables()
