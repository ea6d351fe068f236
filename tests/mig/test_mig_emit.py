"""The nvidia-smi commands and mig-parted configs that create a geometry."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from mig_parted_spec import profile_problems, spec_problems

from gpushare.catalog.mig import MIG_TABLES, lookup_mig_table
from gpushare.errors import InputError
from gpushare.mig.emit import cgi_command, cgi_commands, creation_order, mig_parted_config, mig_parted_yaml
from gpushare.mig.geometry import Geometry, maximal_geometries, parse_geometry


def test_cgi_command_gives_every_instance_its_start_largest_first() -> None:
    # The MIG user guide's 3-2-1-1 layout: its `-cgi 19,19,14,9` (no starts) fails because the
    # driver puts the 1g and 2g where the 3g must go; with starts and largest first it cannot.
    table = lookup_mig_table("a100-sxm-40gb")
    g = parse_geometry(table, "1g.5gb:0,1g.5gb:1,2g.10gb:2,3g.20gb:4")
    assert cgi_command(0, g) == "nvidia-smi mig -i 0 -cgi 9:4,14:2,19:0,19:1 -C"
    assert [s.label for s in creation_order(g)] == ["3g.20gb@4", "2g.10gb@2", "1g.5gb@0", "1g.5gb@1"]


@pytest.mark.parametrize("gpu", ["h200", "h100", "a100-sxm-80gb", "h100-nvl-94gb"])
def test_cgi_tuples_read_back_as_the_same_geometry(gpu: str) -> None:
    # `parse_geometry` reads -cgi's tuple syntax: every maximal geometry survives the round trip.
    table = lookup_mig_table(gpu)
    for g in maximal_geometries(table):
        tuples = cgi_command(3, g).removeprefix("nvidia-smi mig -i 3 -cgi ").removesuffix(" -C")
        assert parse_geometry(table, tuples) == g


def test_cgi_commands_per_gpu_skip_empty_ones() -> None:
    table = lookup_mig_table("h200")
    full = parse_geometry(table, "7g.141gb")
    assert cgi_commands({1: full, 0: Geometry(()), 2: full}) == [
        "nvidia-smi mig -i 1 -cgi 0:0 -C",
        "nvidia-smi mig -i 2 -cgi 0:0 -C",
    ]
    with pytest.raises(ValueError, match="empty geometry"):
        cgi_command(0, Geometry(()))


def test_mig_parted_config_shape() -> None:
    table = lookup_mig_table("h200")
    balanced = parse_geometry(table, "3g.71gb,2g.35gb,1g.18gb,1g.18gb")
    config = mig_parted_config(
        "gpushare-h200", {0: balanced, 1: balanced, 2: None, 3: parse_geometry(table, "9,9")}
    )
    assert config == {
        "version": "v1",
        "mig-configs": {
            "gpushare-h200": [
                {"devices": [0, 1], "mig-enabled": True,
                 "mig-devices": {"3g.71gb": 1, "2g.35gb": 1, "1g.18gb": 2}},
                {"devices": [2], "mig-enabled": False},
                {"devices": [3], "mig-enabled": True, "mig-devices": {"3g.71gb": 2}},
            ]
        },
    }  # fmt: skip
    assert spec_problems(config) == []


def every_emitted_config() -> list[tuple[str, dict[str, Any]]]:
    configs = []
    for key, table in MIG_TABLES.items():
        found = maximal_geometries(table, table.profiles)  # +me profiles included
        geometries: dict[int, Geometry | None] = {i: g for i, g in enumerate(found)}
        geometries[len(found)] = None
        geometries[len(found) + 1] = Geometry(())  # MIG on, no instances
        configs.append((key, mig_parted_config(f"gpushare-{key}", geometries)))
    return configs


@pytest.mark.parametrize(
    ("key", "config"), every_emitted_config(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_emitted_config_passes_mig_parteds_rules(key: str, config: dict[str, Any]) -> None:
    assert spec_problems(config) == []
    # ... also after the YAML round trip mig-parted reads it through
    text = mig_parted_yaml(config)
    assert yaml.safe_load(text) == config
    assert spec_problems(yaml.safe_load(text)) == []
    assert text.startswith("version: v1\nmig-configs:\n")


def one(entry: dict[str, Any]) -> dict[str, Any]:
    """A config `a` of one entry."""
    return {"version": "v1", "mig-configs": {"a": [entry]}}


@pytest.mark.parametrize(
    ("case_id", "doc", "problem"),
    [
        ("no-version", {"mig-configs": {"a": [{"devices": "all", "mig-enabled": False}]}},
         "unable to parse with missing 'version' field"),
        ("wrong-version", {"version": "v2"}, "unknown version: v2"),
        ("extra-field", {"version": "v1", "flags": {}}, "unexpected field: flags"),
        ("no-configs", {"version": "v1", "mig-configs": {}},
         "at least one entry in 'mig-configs' is required"),
        ("empty-list", {"version": "v1", "mig-configs": {"a": []}}, "at least one entry in 'a' is required"),
        ("no-devices", one({"mig-enabled": False}), "a[0]: missing required field: devices"),
        ("devices-word", one({"devices": "some", "mig-enabled": False}),
         "a[0]: invalid string input for 'devices': some"),
        ("enabled-no-devices", one({"devices": [0], "mig-enabled": True}),
         "a[0]: missing required field 'mig-devices' when 'mig-enabled' is true"),
        ("disabled-with-devices", one({"devices": [0], "mig-enabled": False, "mig-devices": {"1g.5gb": 1}}),
         "a[0]: MIG devices included when 'mig-enabled' is false"),
        ("all-zero", one({"devices": [0], "mig-enabled": True, "mig-devices": {"1g.5gb": 0}}),
         "a[0]: error validating values in 'mig-devices' field: all counts for all MigProfiles are 0"),
        ("bad-name", one({"devices": [0], "mig-enabled": True, "mig-devices": {"3g40gb": 1}}),
         "a[0]: error validating values in 'mig-devices' field: invalid format for '3g40gb': "
         "parsed wrong number of fields, expected 2 or 3"),
        ("negative", one({"devices": [0], "mig-enabled": True, "mig-devices": {"1g.5gb": -1}}),
         "a[0]: error validating values in 'mig-devices' field: invalid count for '1g.5gb': -1"),
    ],
)  # fmt: skip
def test_the_rules_refuse_what_mig_parted_refuses(case_id: str, doc: dict[str, Any], problem: str) -> None:
    assert problem in spec_problems(doc)


@pytest.mark.parametrize(
    ("case_id", "name", "ok"),
    [
        ("plain", "1g.5gb", True),
        ("compute-instance", "1c.2g.10gb", True),
        ("media", "1g.10gb+me", True),
        ("all-media", "1g.24gb+me.all", True),
        ("no-media", "1g.24gb-me", True),
        ("both-signs", "1g.24gb+gfx-me", False),
        ("no-gb", "1g.5", False),
        ("number-attribute", "1g.5gb+1me", False),
        ("space", "1g. 5gb", False),
    ],
)
def test_profile_name_format(case_id: str, name: str, ok: bool) -> None:
    assert (profile_problems(name) == []) is ok


def test_config_name_must_be_a_label_value() -> None:
    table = lookup_mig_table("h200")
    with pytest.raises(InputError, match="not a Kubernetes label value"):
        mig_parted_config("gpushare h200", {0: parse_geometry(table, "7g.141gb")})
    with pytest.raises(InputError):
        mig_parted_config("x" * 64, {0: None})
    assert mig_parted_config("x" * 63, {0: None})["mig-configs"]
