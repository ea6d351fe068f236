"""One error hierarchy. Only the CLI catches these; it prints one line (plus a hint) and exits.

Exit codes (documented in the README):
  1  the job ran but the answer is "no" (overcommitted, does not fit, an instance failed)
  2  bad input: a model, config, profile or argument the user must fix
  3  the environment: a missing driver, command, port or lock held by another run
"""

from __future__ import annotations


class GpushareError(Exception):
    """Base class. `hint` is an optional second line telling the user what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InputError(GpushareError):
    """The user's input is wrong: a flag, a file, a field."""

    exit_code = 2


class ModelNotFoundError(InputError):
    """A model reference could not be resolved; the message says where we looked."""


class ConfigError(InputError):
    """A model's config.json is malformed, incomplete or uses something we do not model."""


class UnsupportedModelError(ConfigError):
    """An architecture we do not model yet (e.g. Mamba hybrids). Never a silent wrong number."""


class ArchitectureError(UnsupportedModelError):
    """An architecture outside gpushare's table (gpushare/architectures.py), or one the vLLM
    release planned for does not serve; the message says which releases do."""


class KvCacheTooSmallError(InputError):
    """The settings leave a KV cache too small for one request of max_model_len (vLLM refuses)."""


class ProfileError(InputError):
    """A profile YAML is invalid: names the file, the path in it and the fix."""


class DoesNotFitError(GpushareError):
    """The request is valid but cannot be met on the given GPU(s)."""

    exit_code = 1


class EnvironmentProblem(GpushareError):
    """Something outside gpushare is missing or busy (driver, command, port, lock)."""

    exit_code = 3


class LaunchError(GpushareError):
    """An instance failed to start or serve."""

    exit_code = 1
