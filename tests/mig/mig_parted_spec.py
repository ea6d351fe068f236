"""mig-parted's `v1` config rules, transcribed to check what gpushare emits (a test helper).

Source: github.com/NVIDIA/mig-parted at bd7160f43f16462eeb21e1eda5e67b5b6b03fd7d (2026-08-21):
- api/spec/v1/spec.go: `Spec` (`version`, `mig-configs`) and `MigConfigSpec` (`device-filter`,
  `devices`, `mig-enabled`, `mig-devices`) and their UnmarshalJSON checks;
- pkg/types/mig_config.go: `MigConfig.AssertValidFormat` (the `mig-devices` counts);
- vendor/github.com/NVIDIA/go-nvlib/pkg/nvlib/device/mig_profile.go: `parseMigProfile` (the
  profile-name format `[Nc.]Ng.Mgb[+attr,...|-attr,...]`).
mig-parted reads YAML by converting it to JSON first, so a YAML document is checked after
`yaml.safe_load`. Each rule below returns the problem in mig-parted's own terms.
"""

from __future__ import annotations

from typing import Any

VERSION = "v1"
SPEC_FIELDS = {"version", "mig-configs"}
ENTRY_FIELDS = {"device-filter", "devices", "mig-enabled", "mig-devices"}


def spec_problems(doc: Any) -> list[str]:
    """Why mig-parted would refuse `doc` as a config file; empty when it accepts it."""
    if not isinstance(doc, dict):
        return ["the document is not a mapping"]
    if doc and "version" not in doc:
        return ["unable to parse with missing 'version' field"]
    if doc.get("version") != VERSION:
        return [f"unknown version: {doc.get('version')}"]
    problems = [f"unexpected field: {k}" for k in doc if k not in SPEC_FIELDS]
    if "mig-configs" in doc:
        configs = doc["mig-configs"]
        if not isinstance(configs, dict) or not configs:
            problems.append("at least one entry in 'mig-configs' is required")
            return problems
        for name, entries in configs.items():
            if not isinstance(name, str):
                problems.append(f"config name {name!r} is not a string")
            if not isinstance(entries, list) or not entries:
                problems.append(f"at least one entry in '{name}' is required")
                continue
            for n, entry in enumerate(entries):
                problems.extend(f"{name}[{n}]: {p}" for p in entry_problems(entry))
    return problems


def entry_problems(entry: Any) -> list[str]:
    if not isinstance(entry, dict):
        return ["an entry is not a mapping"]
    problems = [f"missing required field: {r}" for r in ("devices", "mig-enabled") if r not in entry]
    problems += [f"unexpected field: {k}" for k in entry if k not in ENTRY_FIELDS]
    if "device-filter" in entry:
        df = entry["device-filter"]
        if not (isinstance(df, str) or (isinstance(df, list) and all(isinstance(x, str) for x in df))):
            problems.append("device-filter must be a string or a list of strings")
    if "devices" in entry:
        devices = entry["devices"]
        if isinstance(devices, str):
            if devices != "all":
                problems.append(f"invalid string input for 'devices': {devices}")
        elif not (isinstance(devices, list) and all(_is_int(d) for d in devices)):
            problems.append("devices must be 'all' or a list of device indices")
    enabled = entry.get("mig-enabled")
    if "mig-enabled" in entry and not isinstance(enabled, bool):
        problems.append("mig-enabled must be a boolean")
    devices_map = entry.get("mig-devices")
    if "mig-devices" in entry:
        problems += [
            f"error validating values in 'mig-devices' field: {p}" for p in mig_config_problems(devices_map)
        ]
    if enabled is True and devices_map is None:
        problems.append("missing required field 'mig-devices' when 'mig-enabled' is true")
    if enabled is False and devices_map:
        problems.append("MIG devices included when 'mig-enabled' is false")
    return problems


def mig_config_problems(config: Any) -> list[str]:
    if config is None:
        return []
    if not isinstance(config, dict):
        return ["mig-devices is not a mapping of profile to count"]
    problems: list[str] = []
    for profile, count in config.items():
        problems += [f"invalid format for '{profile}': {p}" for p in profile_problems(profile)]
        if not _is_int(count) or count < 0:
            problems.append(f"invalid count for '{profile}': {count}")
    if config and not problems and all(count == 0 for count in config.values()):
        problems.append("all counts for all MigProfiles are 0")
    return problems


def profile_problems(profile: Any) -> list[str]:
    """go-nvlib's profile-name format: `1g.5gb`, `1c.2g.10gb`, `1g.5gb+me`, `1g.24gb-me`."""
    if not isinstance(profile, str) or profile == "":
        return ["profile is the empty string"]
    plus, minus = profile.split("+", 1), profile.split("-", 1)
    if len(plus) == 2 and len(minus) == 2:
        return [f"profile '{profile}' contains both '+/-' attributes"]
    parts = plus if len(plus) == 2 else minus
    problems = _field_problems(parts[0])
    if len(parts) == 2:
        problems += _attribute_problems(parts[1])
    return problems


def _field_problems(text: str) -> list[str]:
    fields = text.split(".", 2)
    if len(fields) == 3:
        suffixes = ("c", "g", "gb")
    elif len(fields) == 2:
        suffixes = ("g", "gb")
    else:
        return ["parsed wrong number of fields, expected 2 or 3"]
    problems = []
    for value, suffix in zip(fields, suffixes, strict=True):
        if value.strip() != value:
            problems.append(f"leading or trailing spaces on '%d{suffix}'")
        elif not value.endswith(suffix):
            problems.append(f"missing '{suffix}' from '%d{suffix}'")
        elif not value[: -len(suffix)].lstrip("+-").isdigit():
            problems.append(f"malformed number in '%d{suffix}'")
    return problems


def _attribute_problems(text: str) -> list[str]:
    attributes = text.split(",")
    if len(set(attributes)) != len(attributes):
        return ["non unique attribute in list"]
    for a in attributes:
        if a == "":
            return ["empty attribute in list"]
        if a.strip() != a:
            return ["leading or trailing spaces in attribute"]
        if a[0].isdigit():
            return ["attribute begins with a number"]
        if a[0] == "." or a[-1] == ".":
            return ["attribute begins/ends with a dot"]
        if not all(c.isascii() and (c.isalnum() or c == ".") for c in a):
            return ["non alpha-numeric character or digit in attribute"]
    return []


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
