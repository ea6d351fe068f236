"""`gpushare profile schema` and `gpushare profile validate PROFILE`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gpushare.cli.app import GpushareGroup, app

profile_app = typer.Typer(
    name="profile",
    cls=GpushareGroup,
    help="Profile files: print their JSON Schema, validate one.",
    no_args_is_help=True,
)
app.add_typer(profile_app, name="profile")


@profile_app.command()
def schema() -> None:
    """Print the JSON Schema of a profile (every field with its description)."""
    from gpushare.profile import profile_json_schema

    typer.echo(json.dumps(profile_json_schema(), indent=2, ensure_ascii=False))


@profile_app.command()
def validate(
    profile: Annotated[Path, typer.Argument(help="The profile YAML.")],
    offline: Annotated[
        bool, typer.Option("--schema-only", help="Check the schema only; do not resolve the models.")
    ] = False,
) -> None:
    """Check a profile against the schema and its models' configs (exit 2 with file, path and fix)."""
    from gpushare.profile import load_profile

    loaded = load_profile(profile, check_models=not offline)
    typer.echo(f"ok: {profile}: {len(loaded.models)} model(s), profile {loaded.display_name!r}")
