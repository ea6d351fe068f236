"""The MIG profile catalog: values against their sources, names against NVIDIA's naming rule,
and lookup through the GPU catalog's names."""

from __future__ import annotations

import pytest

from gpushare.catalog.gpus import find_gpu_model
from gpushare.catalog.mig import (
    COMPUTE_SLICES,
    MEMORY_UNITS,
    MIG_TABLES,
    find_mig_table,
    lgip_gib_to_mib,
    lookup_mig_table,
    mig_gpu_keys,
    nominal_gb,
)
from gpushare.errors import InputError
from gpushare.units import MiB

# Read on the lent H200 (driver 580.159.04, MIG mode off) with nvmlDeviceGetGpuInstanceProfileInfoV:
# (name, id, slices, memorySizeMB, SMs, instanceCount), and `nvidia-smi mig -lgipp`.
H200_NVML = [
    ("1g.18gb", 19, 1, 16384, 16, 7),
    ("1g.18gb+me", 20, 1, 16384, 16, 1),
    ("1g.35gb", 15, 1, 33280, 26, 4),
    ("2g.35gb", 14, 2, 33280, 32, 3),
    ("3g.71gb", 9, 3, 71424, 60, 2),
    ("4g.71gb", 5, 4, 71424, 64, 1),
    ("7g.141gb", 0, 7, 143360, 132, 1),
]
H200_LGIPP = """\
GPU  0 Profile ID 19 Placements: {0,1,2,3,4,5,6}:1
GPU  0 Profile ID 20 Placements: {0,1,2,3,4,5,6}:1
GPU  0 Profile ID 15 Placements: {0,2,4,6}:2
GPU  0 Profile ID 14 Placements: {0,2,4}:2
GPU  0 Profile ID  9 Placements: {0,4}:4
GPU  0 Profile ID  5 Placement : {0}:4
GPU  0 Profile ID  0 Placement : {0}:8
"""


def parse_lgipp(text: str) -> dict[int, tuple[tuple[int, ...], int]]:
    """profile id -> (starts, size) from `nvidia-smi mig -lgipp` output."""
    out: dict[int, tuple[tuple[int, ...], int]] = {}
    for line in text.splitlines():
        head, _, placement = line.partition(":")
        profile_id = int(head.split("Profile ID")[1].split()[0])
        starts, _, size = placement.strip().partition(":")
        out[profile_id] = (tuple(int(s) for s in starts.strip("{}").split(",")), int(size))
    return out


@pytest.mark.parametrize(
    ("case_id", "printed", "mib"),
    [
        ("quarter", "9.75", 9984),
        ("eighth-rounded-down", "19.62", 20096),
        ("eighth-rounded-up", "46.38", 47488),
        ("whole", "16.00", 16384),
        ("large", "139.75", 143104),
    ],
)
def test_lgip_gib_to_mib(case_id: str, printed: str, mib: int) -> None:
    assert lgip_gib_to_mib(printed) == mib


def test_lgip_value_off_the_eighths_is_refused() -> None:
    with pytest.raises(ValueError, match="1/8"):
        lgip_gib_to_mib("19.70")


def test_h200_against_what_nvml_reported_on_the_lent_gpu() -> None:
    table = lookup_mig_table("NVIDIA H200")
    placements = parse_lgipp(H200_LGIPP)
    assert [p.name for p in table.profiles] == [row[0] for row in H200_NVML]
    for p, (name, profile_id, slices, memory_mib, sms, count) in zip(table.profiles, H200_NVML, strict=True):
        assert (p.profile_id, p.slices, p.sms, p.max_count) == (profile_id, slices, sms, count), name
        assert (p.starts, p.size) == placements[profile_id], name
        # The catalog keeps the smallest value seen (an older driver's); never more than measured,
        # and within 1% of it.
        assert p.memory_bytes is not None
        assert memory_mib * MiB * 0.99 <= p.memory_bytes <= memory_mib * MiB, name


@pytest.mark.parametrize("key", [k for k, t in MIG_TABLES.items() if not t.placements_inferred])
def test_sourced_placements_are_the_lgipp_table(key: str) -> None:
    # A100 40GB, H100 SXM, H100 NVL and H200 all printed the same -lgipp lines.
    placements = parse_lgipp(H200_LGIPP)
    for p in MIG_TABLES[key].profiles:
        assert (p.starts, p.size) == placements[p.profile_id], p.name


@pytest.mark.parametrize("key", list(MIG_TABLES))
def test_every_table_is_a_seven_slice_gpu(key: str) -> None:
    table = MIG_TABLES[key]
    assert [p.profile_id for p in table.profiles] == [19, 20, 15, 14, 9, 5, 0]
    for p in table.profiles:
        assert p.name.startswith(f"{p.slices}g."), p.name
        assert all(start + p.size <= MEMORY_UNITS for start in p.starts)
        assert p.slices <= COMPUTE_SLICES
        # each profile's count is what its starts allow
        assert p.max_count == (1 if p.media_extensions else min(len(p.starts), COMPUTE_SLICES // p.slices))


@pytest.mark.parametrize("key", list(MIG_TABLES))
def test_memory_follows_the_memory_units(key: str) -> None:
    # Rule (a) of MIG-SOURCES.md, which fills two gaps: same units, same memory; more units, more.
    memory = {p.profile_id: p.memory_bytes for p in MIG_TABLES[key].profiles}
    assert memory[19] == memory[20]
    assert memory[15] == memory[14]
    assert memory[9] == memory[5]
    known = [memory[i] for i in (19, 15, 9, 0) if memory[i] is not None]
    assert known == sorted(known) and len(set(known)) == len(known)


@pytest.mark.parametrize("key", [k for k in MIG_TABLES if find_gpu_model(k) is not None])
def test_names_follow_nvidias_naming_rule(key: str) -> None:
    # go-nvlib names a profile from its memory share of the GPU: a wrong memory value in the
    # catalog, or a wrong total in the GPU catalog, shows as a name that does not match.
    model = find_gpu_model(key)
    assert model is not None
    for p in MIG_TABLES[key].profiles:
        if p.memory_bytes is None:
            continue
        gb = int(p.name.split(".")[1].split("gb")[0])
        assert nominal_gb(model.total_bytes, p.memory_bytes) == gb, p.name
        assert p.memory_bytes <= model.total_bytes


def test_nominal_gb_rounds_half_away_from_zero() -> None:
    # H200 3g: a half share of 141 GiB is 70.5 -> 71 (Go's math.Round), where Python's round gives 70.
    h200_total = 150_754_820_096
    assert nominal_gb(h200_total, 71168 * MiB) == 71


@pytest.mark.parametrize(
    ("case_id", "key", "unsourced"),
    [
        ("b200", "b200-180gb", ("3g.90gb", "4g.90gb", "7g.180gb")),
        ("gh200-144", "gh200-144gb", ("3g.72gb", "4g.72gb", "7g.144gb")),
        ("h20-all", "h20-96gb", tuple(p.name for p in MIG_TABLES["h20-96gb"].profiles)),
        ("h100-none", "h100-sxm-80gb", ()),
    ],
)
def test_unsourced_values_are_none_not_guesses(case_id: str, key: str, unsourced: tuple[str, ...]) -> None:
    table = MIG_TABLES[key]
    assert table.unsourced == unsourced
    for name in unsourced:
        assert not table.profile(name).plannable


@pytest.mark.parametrize(
    ("case_id", "name", "key"),
    [
        ("short", "H200", "h200-141gb"),
        ("nvml", "NVIDIA H100 80GB HBM3", "h100-sxm-80gb"),
        ("alias", "h100", "h100-sxm-80gb"),
        ("pcie-nvml", "NVIDIA H100 PCIe", "h100-pcie-80gb"),
        ("nvl", "H100 NVL", "h100-nvl-94gb"),
        ("a100-80", "A100-80GB", "a100-sxm-80gb"),
        ("a100-pcie-40-nvml", "NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"),
        ("gh200-nvml", "NVIDIA GH200 480GB", "gh200-96gb"),
        ("b200", "b200", "b200-180gb"),
        ("h20-short", "H20", "h20-96gb"),
        ("h20-nvml", "NVIDIA H20", "h20-96gb"),
    ],
)
def test_lookup_through_the_gpu_catalog_names(case_id: str, name: str, key: str) -> None:
    assert lookup_mig_table(name).gpu_key == key


def test_a_gpu_without_mig_says_so() -> None:
    assert find_mig_table("L4") is None
    with pytest.raises(InputError, match="l4-24gb .* has no MIG") as exc:
        lookup_mig_table("L4")
    assert exc.value.hint is not None and "h200-141gb" in exc.value.hint


def test_ambiguous_and_unknown_names_use_the_gpu_catalog_errors() -> None:
    with pytest.raises(InputError, match="ambiguous.*a100-sxm-40gb.*a100-sxm-80gb"):
        lookup_mig_table("A100")
    with pytest.raises(InputError, match="did you mean h200-141gb"):
        lookup_mig_table("h2000")


def test_tables_are_keyed_by_gpu_catalog_names() -> None:
    for key in mig_gpu_keys():
        assert find_gpu_model(key) is not None, key


def test_h200_lent_gpu_reading_is_what_nvml_reported_and_at_least_the_table() -> None:
    # `gpushare mig profiles H200` shows both: the planner's (smallest seen) and the lent H200's.
    table = lookup_mig_table("H200")
    [reading] = table.readings
    assert reading.source == "measured-h200"
    for name, _id, _slices, memory_mib, _sms, _count in H200_NVML:
        assert reading.of(name) == memory_mib * MiB, name


@pytest.mark.parametrize("key", [k for k, t in MIG_TABLES.items() if t.readings])
def test_other_readings_are_never_below_the_table(key: str) -> None:
    table = MIG_TABLES[key]
    for reading in table.readings:
        for name, value in reading.memory_bytes:
            kept = table.profile(name).memory_bytes
            assert kept is not None and kept <= value, (reading.source, name)
        assert reading.source in table.sources or reading.source.startswith("lgip")


def test_profile_lookup_by_name_and_id() -> None:
    table = lookup_mig_table("h200")
    assert table.profile("MIG 3g.71gb").profile_id == 9
    assert table.profile("9").name == "3g.71gb"
    assert table.profile("1G.18GB+ME").media_extensions
    with pytest.raises(InputError, match="no MIG profile '3g.40gb'") as exc:
        table.profile("3g.40gb")
    assert exc.value.hint is not None and "3g.71gb" in exc.value.hint
