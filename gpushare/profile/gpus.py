"""A profile's GPU entries with a MIG setting: `gpus: [H100, {gpu: H200, mig: auto}]`.

A plain string in `gpus:` is a GPU spec as before. An entry names a spec (`H200`, `2xH200`) and
what to do about MIG on each of its GPUs (`mig`): unset, a MIG-enabled GPU is planned onto the
MIG devices it has and any other GPU runs whole; `off` runs it whole; `auto` lets the planner
choose a geometry (and print what creates it); a geometry in `nvidia-smi mig -cgi`'s syntax
(`3g.71gb:4,2g.35gb:0,1g.18gb`) pins one, which must then hold the models assigned to it.

The geometry is checked against the GPU's MIG table here (`gpushare.mig.geometry`), so a wrong
one is a profile error at `gpus[i].mig` (exit 2). Pure.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gpushare.errors import GpushareError

MIG_AUTO = "auto"
MIG_OFF = "off"


class GpuEntry(BaseModel):
    """GPUs of the profile with their MIG setting."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    gpu: Annotated[str, Field(min_length=1)]
    """A GPU spec as in `gpus:` (`H200`, `2xH200`); the MIG setting applies to each of its GPUs."""
    mig: str | None = None
    """MIG: unset plans a MIG-enabled GPU onto the MIG devices it has (others run whole); `off`
    runs it whole; `auto` lets gpushare choose a geometry and print the `nvidia-smi mig -cgi`
    commands and the mig-parted config that create it; or a geometry in `nvidia-smi mig -cgi`'s
    syntax, e.g. `3g.71gb:4,2g.35gb:0,1g.18gb` (`gpushare mig profiles GPU` lists the profiles),
    which must hold the models placed on it."""

    @field_validator("gpu")
    @classmethod
    def _spec(cls, value: str) -> str:
        from gpushare.catalog.gpus import parse_gpu_spec

        try:
            parse_gpu_spec(value, "gpu")
        except GpushareError as exc:
            raise ValueError(exc.message.removeprefix("gpu: ")) from None
        return value

    @field_validator("mig", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare off as false.
        if value is False:
            return MIG_OFF
        if value is True:
            raise ValueError("write auto, off or a geometry such as 3g.71gb:4,4g.71gb:0")
        return value

    @model_validator(mode="after")
    def _mig_fits_the_gpu(self) -> GpuEntry:
        check_mig_setting(self.gpu, self.mig)
        return self


def check_mig_setting(spec: str, mig: str | None) -> None:
    """ValueError (the profile error's text) when `mig` cannot apply to the GPUs of `spec`."""
    from gpushare.catalog.gpus import parse_gpu_spec
    from gpushare.catalog.mig import find_mig_table, lookup_mig_table
    from gpushare.mig.geometry import parse_geometry

    if mig is None or mig == MIG_OFF:
        return
    for gpu in parse_gpu_spec(spec, "gpu"):
        if find_mig_table(gpu.name) is None:
            try:
                lookup_mig_table(gpu.name)
            except GpushareError as exc:
                raise ValueError(f"{exc.message}; remove `mig` from this entry ({exc.hint})") from None
        table = lookup_mig_table(gpu.name)
        if mig == MIG_AUTO:
            continue
        try:
            parse_geometry(table, mig, "geometry")
        except GpushareError as exc:
            raise ValueError(f"{exc.message}{'; ' + exc.hint if exc.hint else ''}") from None


def entry_problem(error: Any) -> tuple[tuple[str | int, ...], str]:
    """The path inside an entry and the fix, for pydantic's first error on a `GpuEntry`."""
    loc = tuple(p for p in error["loc"] if isinstance(p, int) or p in GpuEntry.model_fields)
    kind = error["type"]
    if kind == "extra_forbidden":
        field = str(error["loc"][-1])
        known = list(GpuEntry.model_fields)
        close = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
        fix = f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(known)}"
        return (field,), f"unknown field {field!r}; {fix}"
    if kind == "missing":
        return loc, "required field missing; add it (a GPU spec such as H200)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "string_type":
        message = f"expected a string (quote it), got {error.get('input')!r}"
    return loc or ("mig",), message  # the entry-level check is the MIG setting's


def validate_entry(value: Any) -> GpuEntry:
    """A mapping as a GpuEntry; ValidationError as pydantic raises it."""
    return GpuEntry.model_validate(value)


__all__ = [
    "MIG_AUTO",
    "MIG_OFF",
    "GpuEntry",
    "ValidationError",
    "check_mig_setting",
    "entry_problem",
    "validate_entry",
]
