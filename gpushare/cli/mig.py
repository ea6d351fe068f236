"""`gpushare mig ...`: MIG commands. For now `gpushare mig profiles GPU [--json]`.

The commands live on `mig_app`, a Typer group, which this module adds to `gpushare.cli.app.app`
when it is imported; `COMMANDS["mig"]` in app.py names this module, so the group loads only when
`gpushare mig ...` runs (the lazy loader finds it among the app's groups).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

mig_app = typer.Typer(
    name="mig",
    help="MIG (hard-isolated GPU slices): the profiles each GPU model offers.",
    no_args_is_help=True,
    add_completion=False,
)


@mig_app.command("profiles")
def profiles(
    gpu: Annotated[str, typer.Argument(help="A GPU model: H200, A100-80GB, 'NVIDIA H100 80GB HBM3', ...")],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="A JSON list, one object per profile: name, profile_id, slices, memory_bytes, sms, "
            "max_count, starts, memory_units (null where not sourced).",
        ),
    ] = False,
) -> None:
    """List a GPU model's MIG profiles: id, compute slices, memory NVML reports, SMs, how many fit,
    and the memory units each may start at."""
    from gpushare.catalog.mig import lookup_mig_table
    from gpushare.cli.render_mig import profile_record, render_profiles

    table = lookup_mig_table(gpu)
    if as_json:
        typer.echo(json.dumps([profile_record(p, table) for p in table.profiles], indent=2))
        return
    render_profiles(table)


def register(app: typer.Typer) -> None:
    """Add the `mig` group to the top-level app."""
    app.add_typer(mig_app, name="mig")


from gpushare.cli.app import app  # noqa: E402  (registration needs mig_app defined above)

register(app)
