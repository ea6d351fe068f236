"""Profiles: the YAML file that says which models to serve on which GPUs, and how.

Pydantic models with `extra="forbid"`; every field's docstring is its description, so the same
text feeds `gpushare profile schema`, `--help` and the README. `load_profile` reads a file and
turns every problem into a `ProfileValidationError` that names the file, the path in it (with the
YAML line) and the fix, e.g.

    profiles/lab.yaml: models[2].max_model_len: must be ≤ the model's max_position_embeddings (32768)

Pure apart from reading the profile file and resolving model configs (through an injected loader).
"""

from gpushare.profile.lines import LineIndex
from gpushare.profile.load import (
    ModelLoader,
    check_profile_models,
    load_profile,
    parse_profile_text,
    profile_json_schema,
)
from gpushare.profile.problems import ProfileProblem, ProfileValidationError, format_path
from gpushare.profile.schema import (
    MANAGED_FLAGS,
    NAME_PATTERN,
    Defaults,
    ModelDtype,
    ModelEntry,
    Profile,
    Quantization,
    managed_flag,
)

__all__ = [
    "MANAGED_FLAGS",
    "NAME_PATTERN",
    "Defaults",
    "LineIndex",
    "ModelDtype",
    "ModelEntry",
    "ModelLoader",
    "Profile",
    "ProfileProblem",
    "ProfileValidationError",
    "Quantization",
    "check_profile_models",
    "format_path",
    "load_profile",
    "managed_flag",
    "parse_profile_text",
    "profile_json_schema",
]
