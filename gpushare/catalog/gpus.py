"""A catalog of NVIDIA GPUs and the `--gpus` spec syntax. Pure data and lookup; no NVML here.

Each entry holds what the driver reports, because that is what vLLM budgets against:

- `total_bytes`: NVML's total (`nvmlDeviceGetMemoryInfo`, and nvidia-smi's "Total" × 2^20).
- `reserved_bytes`: what the driver keeps for itself (NVML v2 `reserved`). CUDA, torch and so vLLM
  see `total_bytes - reserved_bytes` as the device total. It changes a little between driver
  versions (an H100 80GB HBM3 showed 79.35 GiB to torch under an older driver, 79.18 GiB under
  580.159): on a real machine NVML is authoritative, the catalog is for planning without one.

Sources, per entry (the comment above each one says which):
- measured: read with pynvml and torch on the lent machine (driver 580.159.04, 2026-11-24).
- nvidia-smi: the "Total" column of public nvidia-smi outputs (recent drivers, the wide table).
- torch: `torch.cuda.get_device_properties().total_memory` in a public log, so
  reserved = nvidia-smi total − torch total.
- estimate: no published pair found; taken from the closest sibling card and marked so.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace

from gpushare.devices.base import Gpu
from gpushare.errors import InputError
from gpushare.units import MiB, parse_bytes


@dataclass(frozen=True)
class GpuModel:
    """One GPU model as the driver reports it."""

    key: str
    """Short canonical name, e.g. `h100-sxm-80gb`."""
    nvml_name: str
    """The name NVML and torch report, e.g. `NVIDIA H100 80GB HBM3`."""
    total_bytes: int
    """NVML's total memory."""
    reserved_bytes: int
    """Driver-reserved memory (NVML v2 `reserved`); CUDA sees total − reserved."""
    compute_capability: tuple[int, int]
    aliases: tuple[str, ...] = ()
    source: str = ""
    """Where total and reserved come from (see the module docstring)."""

    @property
    def cuda_total_bytes(self) -> int:
        """The total that `torch.cuda.mem_get_info` and vLLM's budget use."""
        return self.total_bytes - self.reserved_bytes

    def as_gpu(self, index: int) -> Gpu:
        """An idle GPU of this model at `index` (nothing used, all of CUDA's total free)."""
        return Gpu(
            index=index,
            name=self.nvml_name,
            total_bytes=self.total_bytes,
            reserved_bytes=self.reserved_bytes,
            free_bytes=self.cuda_total_bytes,
        )


def _m(
    key: str,
    nvml_name: str,
    total_mib: int,
    reserved_bytes: int,
    cc: tuple[int, int],
    aliases: tuple[str, ...],
    source: str,
) -> GpuModel:
    """An entry from nvidia-smi's total in MiB (NVML's total is exactly that × 2^20)."""
    return GpuModel(key, nvml_name, total_mib * MiB, reserved_bytes, cc, aliases, source)


# fmt: off
GPU_MODELS: tuple[GpuModel, ...] = (
    # --- Hopper / Blackwell data centre -------------------------------------------------------
    # measured: NVML total 85,520,809,984 (81559 MiB), reserved 503,316,480 (480 MiB),
    # torch total_memory 85,017,493,504 = 79.18 GiB (driver 580.159.04).
    _m(
        "h100-sxm-80gb",
        "NVIDIA H100 80GB HBM3",
        81559,
        480 * MiB,
        (9, 0),
        ("h100", "h100-80gb", "h100-80g", "h100-sxm", "h100-sxm5", "h100-sxm-80gb", "h100 hbm3"),
        "measured (driver 580.159.04)",
    ),
    # nvidia-smi: 81559 MiB in public H100 PCIe outputs; reserved assumed as the SXM (same memory).
    _m(
        "h100-pcie-80gb",
        "NVIDIA H100 PCIe",
        81559,
        480 * MiB,
        (9, 0),
        ("h100-pcie", "h100-pcie-80gb", "h100 80gb pcie"),
        "nvidia-smi total; reserved estimate (as H100 SXM)",
    ),
    # nvidia-smi: 95830 MiB in public H100 NVL outputs; reserved estimate (as H100 SXM).
    _m(
        "h100-nvl-94gb",
        "NVIDIA H100 NVL",
        95830,
        480 * MiB,
        (9, 0),
        ("h100-nvl", "h100nvl", "h100-94gb", "h100-nvl-94gb", "h100-96gb"),
        "nvidia-smi total; reserved estimate (as H100 SXM)",
    ),
    # measured on the lent H200: NVML total 150,754,820,096 (143771 MiB), reserved 644,939,776,
    # torch total_memory 150,109,880,320 = 139.80 GiB (driver 580.159.04).
    _m(
        "h200-141gb",
        "NVIDIA H200",
        143771,
        644_939_776,
        (9, 0),
        ("h200", "h200-141gb", "h200-sxm", "h200-141g"),
        "measured (driver 580.159.04)",
    ),
    # nvidia-smi: 97871 MiB for "NVIDIA GH200 480GB" (the 96 GB HBM3 part); reserved estimate.
    _m(
        "gh200-96gb",
        "NVIDIA GH200 480GB",
        97871,
        480 * MiB,
        (9, 0),
        ("gh200-96gb", "gh200-480gb", "gh200 96gb hbm3"),
        "nvidia-smi total; reserved estimate (as H100 SXM)",
    ),
    # nvidia-smi: 97871 MiB for "NVIDIA H20" in three public outputs (one of driver 570.158.01, with
    # MIG on); reserved estimate (as H100 SXM).
    _m(
        "h20-96gb",
        "NVIDIA H20",
        97871,
        480 * MiB,
        (9, 0),
        ("h20", "h20-96gb", "h20-96g"),
        "nvidia-smi total; reserved estimate (as H100 SXM)",
    ),
    # nvidia-smi --query: 146831 MiB; torch total_memory 153,008,209,920 in a public device-emulation
    # test (145920 MiB) gives reserved 911 MiB: an estimate, the test is not a measurement.
    _m(
        "gh200-144gb",
        "NVIDIA GH200 144G HBM3e",
        146831,
        911 * MiB,
        (9, 0),
        ("gh200-144gb", "gh200-144g", "gh200 hbm3e"),
        "nvidia-smi total; reserved estimate (torch total in a public emulation test)",
    ),
    # nvidia-smi: 183359 MiB; torch total_memory 182642 MB in a public log -> reserved 717 MiB.
    _m(
        "b200-180gb",
        "NVIDIA B200",
        183359,
        717 * MiB,
        (10, 0),
        ("b200", "b200-180gb", "b200-192gb"),
        "nvidia-smi total; reserved from torch total in a public log",
    ),
    # --- Ampere data centre -------------------------------------------------------------------
    # nvidia-smi: 81920 MiB (many public outputs, drivers 550-580); CUDA total 85,198,045,184
    # (81251 MiB) in a public GPU-sharing scheduler's constants -> reserved 669 MiB.
    _m(
        "a100-sxm-80gb",
        "NVIDIA A100-SXM4-80GB",
        81920,
        669 * MiB,
        (8, 0),
        ("a100-80gb", "a100-80g", "a100-sxm4-80gb", "a100-sxm-80gb", "a100 80gb sxm"),
        "nvidia-smi total; reserved from a public CUDA total",
    ),
    # nvidia-smi: 81920 MiB for "NVIDIA A100 80GB PCIe"; reserved as the SXM4 part.
    _m(
        "a100-pcie-80gb",
        "NVIDIA A100 80GB PCIe",
        81920,
        669 * MiB,
        (8, 0),
        ("a100-pcie-80gb", "a100-80gb-pcie", "a100 80gb pcie"),
        "nvidia-smi total; reserved estimate (as A100 SXM4 80GB)",
    ),
    # nvidia-smi: 40960 MiB; torch total_memory 40536 MB in paddle's docs -> reserved 424 MiB.
    _m(
        "a100-sxm-40gb",
        "NVIDIA A100-SXM4-40GB",
        40960,
        424 * MiB,
        (8, 0),
        ("a100-40gb", "a100-40g", "a100-sxm4-40gb", "a100-sxm-40gb", "a100 40gb sxm"),
        "nvidia-smi total; reserved from torch total in public docs",
    ),
    # nvidia-smi: 40960 MiB for "NVIDIA A100-PCIE-40GB"; reserved as the SXM4 part.
    _m(
        "a100-pcie-40gb",
        "NVIDIA A100-PCIE-40GB",
        40960,
        424 * MiB,
        (8, 0),
        ("a100-pcie-40gb", "a100-40gb-pcie", "a100 40gb pcie"),
        "nvidia-smi total; reserved estimate (as A100 SXM4 40GB)",
    ),
    # nvidia-smi: 24576 MiB (HBM2, no ECC carve-out); reserved estimate (as the 24 GB A10G).
    _m(
        "a30-24gb",
        "NVIDIA A30",
        24576,
        441 * MiB,
        (8, 0),
        ("a30", "a30-24gb"),
        "nvidia-smi total; reserved estimate (as A10G)",
    ),
    # nvidia-smi: 23028 MiB with ECC on (the default; 24 GB GDDR6 less the ECC share); torch
    # total_memory 22587 MB in a public log -> reserved 441 MiB.
    _m(
        "a10g-24gb",
        "NVIDIA A10G",
        23028,
        441 * MiB,
        (8, 6),
        ("a10g", "a10g-24gb"),
        "nvidia-smi total (ECC on); reserved from torch total in a public log",
    ),
    # nvidia-smi: 23028 MiB with ECC on; reserved as the A10G.
    _m(
        "a10-24gb",
        "NVIDIA A10",
        23028,
        441 * MiB,
        (8, 6),
        ("a10", "a10-24gb"),
        "nvidia-smi total (ECC on); reserved estimate (as A10G)",
    ),
    # nvidia-smi: 46068 MiB with ECC on (49140 with ECC off); reserved as the L40S.
    _m(
        "a40-48gb",
        "NVIDIA A40",
        46068,
        479 * MiB,
        (8, 6),
        ("a40", "a40-48gb"),
        "nvidia-smi total (ECC on); reserved estimate (as L40S)",
    ),
    # --- Ada / Turing / Volta data centre -----------------------------------------------------
    # nvidia-smi: 23034 MiB (ECC on); reserved estimate (as A10G).
    _m(
        "l4-24gb",
        "NVIDIA L4",
        23034,
        441 * MiB,
        (8, 9),
        ("l4", "l4-24gb"),
        "nvidia-smi total (ECC on); reserved estimate (as A10G)",
    ),
    # nvidia-smi: 46068 MiB (ECC on); torch total_memory 45589 MB in a public doc -> 479 MiB.
    _m(
        "l40s-48gb",
        "NVIDIA L40S",
        46068,
        479 * MiB,
        (8, 9),
        ("l40s", "l40s-48gb"),
        "nvidia-smi total (ECC on); reserved from torch total in a public doc",
    ),
    # nvidia-smi: 46068 MiB (ECC on; 49140 with ECC off); reserved as the L40S.
    _m(
        "l40-48gb",
        "NVIDIA L40",
        46068,
        479 * MiB,
        (8, 9),
        ("l40", "l40-48gb"),
        "nvidia-smi total (ECC on); reserved estimate (as L40S)",
    ),
    # nvidia-smi: 15360 MiB (recent drivers); torch total_memory 15109 MB (Colab) -> 251 MiB.
    _m(
        "t4-16gb",
        "Tesla T4",
        15360,
        251 * MiB,
        (7, 5),
        ("t4", "t4-16gb"),
        "nvidia-smi total; reserved from torch total in public logs",
    ),
    # nvidia-smi: 16384 MiB; torch total_memory 16160 MB in public logs -> 224 MiB.
    _m(
        "v100-sxm-16gb",
        "Tesla V100-SXM2-16GB",
        16384,
        224 * MiB,
        (7, 0),
        ("v100-16gb", "v100-16g", "v100-sxm2-16gb", "v100-sxm-16gb"),
        "nvidia-smi total; reserved from torch total in public logs",
    ),
    # nvidia-smi: 16384 MiB; reserved as the SXM2 16GB part.
    _m(
        "v100-pcie-16gb",
        "Tesla V100-PCIE-16GB",
        16384,
        224 * MiB,
        (7, 0),
        ("v100-pcie-16gb", "v100-16gb-pcie"),
        "nvidia-smi total; reserved estimate (as V100 SXM2 16GB)",
    ),
    # nvidia-smi: 32768 MiB; CUDA total 34,089,205,760 (32510 MiB) in a public scheduler's
    # constants -> reserved 258 MiB.
    _m(
        "v100-sxm-32gb",
        "Tesla V100-SXM2-32GB",
        32768,
        258 * MiB,
        (7, 0),
        ("v100-32gb", "v100-32g", "v100-sxm2-32gb", "v100-sxm-32gb"),
        "nvidia-smi total; reserved from a public CUDA total",
    ),
    # --- Workstation and consumer -------------------------------------------------------------
    # nvidia-smi: 24576 MiB (recent drivers); torch total_memory 24259 MB in a public log -> 317.
    _m(
        "rtx-3090",
        "NVIDIA GeForce RTX 3090",
        24576,
        317 * MiB,
        (8, 6),
        ("3090", "rtx-3090", "rtx3090", "rtx 3090 24gb"),
        "nvidia-smi total; reserved from torch total in a public log",
    ),
    # nvidia-smi: 24564 MiB; torch OOM messages "total capacity of 23.64 GiB" (24207 MiB) -> 357.
    _m(
        "rtx-4090",
        "NVIDIA GeForce RTX 4090",
        24564,
        357 * MiB,
        (8, 9),
        ("4090", "rtx-4090", "rtx4090", "rtx 4090 24gb"),
        "nvidia-smi total; reserved estimate (torch OOM messages)",
    ),
    # nvidia-smi: 32607 MiB; reserved estimate (1.5% like the other GDDR cards).
    _m(
        "rtx-5090",
        "NVIDIA GeForce RTX 5090",
        32607,
        494 * MiB,
        (12, 0),
        ("5090", "rtx-5090", "rtx5090", "rtx 5090 32gb"),
        "nvidia-smi total; reserved estimate",
    ),
    # nvidia-smi: 49140 MiB (ECC off, the workstation default); torch total_memory 48676 MB -> 464.
    _m(
        "rtx-a6000",
        "NVIDIA RTX A6000",
        49140,
        464 * MiB,
        (8, 6),
        ("a6000", "rtx-a6000", "rtxa6000"),
        "nvidia-smi total (ECC off); reserved from torch total in a public log",
    ),
    # nvidia-smi: 49140 MiB (ECC off); torch total_memory 48622 MB in a public log -> 518 MiB.
    _m(
        "rtx-6000-ada",
        "NVIDIA RTX 6000 Ada Generation",
        49140,
        518 * MiB,
        (8, 9),
        ("rtx-6000-ada", "rtx6000-ada", "6000-ada", "6000ada", "rtx 6000 ada generation"),
        "nvidia-smi total (ECC off); reserved from torch total in a public log",
    ),
)

# Names that match several models whose memory differs: the user must say which.
AMBIGUOUS_NAMES: dict[str, tuple[str, ...]] = {
    "a100": ("a100-sxm-40gb", "a100-sxm-80gb"),
    "v100": ("v100-sxm-16gb", "v100-sxm-32gb"),
    "gh200": ("gh200-96gb", "gh200-144gb"),
}

_DROP_WORDS = re.compile(r"\b(nvidia|geforce|tesla)\b")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_GB_SUFFIX = re.compile(r"(\d)gb")


def normalize_gpu_name(text: str) -> str:
    """The form names are matched in: 'NVIDIA H100 80GB HBM3' -> 'h10080ghbm3', 'A100-80g' -> 'a10080g'."""
    lowered = _DROP_WORDS.sub(" ", text.lower())
    return _GB_SUFFIX.sub(r"\1g", _NON_ALNUM.sub("", lowered))


def _build_index() -> dict[str, GpuModel]:
    index: dict[str, GpuModel] = {}
    for model in GPU_MODELS:
        for name in (model.key, model.nvml_name, *model.aliases):
            norm = normalize_gpu_name(name)
            other = index.get(norm)
            if other is not None and other is not model:
                raise AssertionError(f"GPU alias {name!r} names both {other.key} and {model.key}")
            index[norm] = model
    for name in AMBIGUOUS_NAMES:
        if normalize_gpu_name(name) in index:
            raise AssertionError(f"ambiguous GPU name {name!r} is also an alias")
    return index


_INDEX = _build_index()
_AMBIGUOUS = {normalize_gpu_name(name): keys for name, keys in AMBIGUOUS_NAMES.items()}


def gpu_keys() -> list[str]:
    """The canonical names, in catalog order."""
    return [model.key for model in GPU_MODELS]


def find_gpu_model(name: str) -> GpuModel | None:
    """The catalog entry for a name, alias or NVML name, or None (also for ambiguous names)."""
    return _INDEX.get(normalize_gpu_name(name))


def lookup_gpu_model(name: str) -> GpuModel:
    """The catalog entry for `name`; InputError with the closest names when there is none."""
    norm = normalize_gpu_name(name)
    model = _INDEX.get(norm)
    if model is not None:
        return model
    if norm in _AMBIGUOUS:
        choices = ", ".join(_AMBIGUOUS[norm])
        raise InputError(f"GPU {name!r} is ambiguous: say which one ({choices})")
    by_norm = {normalize_gpu_name(key): key for key in gpu_keys()}
    by_norm.update({n: m.key for n, m in _INDEX.items()})
    close = difflib.get_close_matches(norm, list(by_norm), n=3, cutoff=0.6)
    suggestion = ""
    if close:
        names = list(dict.fromkeys(by_norm[c] for c in close))
        suggestion = f"; did you mean {' or '.join(names)}?"
    raise InputError(
        f"unknown GPU {name!r}{suggestion}",
        hint=f"known GPUs: {', '.join(gpu_keys())}; or give a size such as 80GiB",
    )


def compute_capability_of(name: str, default: tuple[int, int] = (9, 0)) -> tuple[int, int]:
    """The CUDA compute capability of a catalog GPU; `default` for an unnamed or unknown one."""
    model = find_gpu_model(name)
    return model.compute_capability if model is not None else default


# --- GPU specs: "H100", "2xH100", "A100-80GB,L4", "4 x RTX 4090", "24GiB" -----------------------

_COUNT_PREFIX = re.compile(r"^\s*(\d+)\s*[x×*]\s*(.*)$", re.IGNORECASE)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|[kmgt]?b)\s*$", re.IGNORECASE)
_BARE_NUMBER = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")
MAX_GPUS_IN_SPEC = 1024

SPEC_SYNTAX = "e.g. H100, 2xH100, A100-80GB,L4, 4 x RTX 4090 or 80GiB"


def parse_gpu_spec(text: str, what: str = "--gpus") -> list[Gpu]:
    """Parse a GPU spec into idle GPUs with indices 0..n-1.

    Items are separated by commas; each is `[COUNT x] NAME` or `[COUNT x] SIZE`. A size (it needs
    a unit: 80GiB, 80GB, 24g) is an unnamed GPU of that NVML total with nothing reserved. A bare
    number is read as a name ("4090"), never as bytes.
    """
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise InputError(f"{what}: empty GPU spec {text!r}", hint=SPEC_SYNTAX)
    gpus: list[Gpu] = []
    for item in items:
        count, body = _split_count(item, what)
        template = _parse_one(body, what)
        if len(gpus) + count > MAX_GPUS_IN_SPEC:
            raise InputError(f"{what}: more than {MAX_GPUS_IN_SPEC} GPUs in {text!r}")
        for _ in range(count):
            gpus.append(replace(template, index=len(gpus)))
    return gpus


def _split_count(item: str, what: str) -> tuple[int, str]:
    match = _COUNT_PREFIX.match(item)
    if not match:
        return 1, item
    count, body = int(match.group(1)), match.group(2).strip()
    if count < 1:
        raise InputError(f"{what}: a GPU count must be at least 1 (got {item!r})", hint=SPEC_SYNTAX)
    if not body:
        raise InputError(f"{what}: {item!r} says how many but not which GPU", hint=SPEC_SYNTAX)
    return count, body


def _parse_one(body: str, what: str) -> Gpu:
    if _SIZE.match(body):
        total = parse_bytes(body, what)
        if total <= 0:
            raise InputError(f"{what}: a GPU size must be more than 0 (got {body!r})")
        return Gpu(index=0, name=f"{body.replace(' ', '')} GPU", total_bytes=total, free_bytes=total)
    model = find_gpu_model(body)
    if model is None and _BARE_NUMBER.match(body):
        raise InputError(
            f"{what}: {body!r} is neither a GPU name nor a size",
            hint="give a size with its unit (80GiB, 24GB) or a GPU name (" + SPEC_SYNTAX + ")",
        )
    if model is None:
        model = lookup_gpu_model(body)  # raises with suggestions
    return model.as_gpu(0)
