"""Calibration: vLLM's own accounting of one real start, stored and reused by the memory model.

`gpushare calibrate PROFILE` starts each model alone once (the runtime does that); this module
reads what vLLM logged, turns it into a `CalibrationRecord` keyed by the things that change the
numbers (GPU, vLLM version, model, dtype, batching, eager, tensor parallel, quantization), and
stores records in a JSON file. The planner looks a record up for each instance and, when one
matches, uses its measured terms instead of the fitted coefficients.

Log lines read (vLLM 0.26.0, v1/worker/gpu_worker.py and gpu/model_runner.py):
  "Free memory on device (F/T GiB) on startup. Desired GPU memory utilization is (U, R GiB).
   Actual usage is W GiB for weight, A GiB for peak activation, N GiB for non-torch memory, and
   G GiB for CUDAGraph memory. Replace gpu_memory_utilization config with `--kv-cache-memory=B` ..."
  "worker init memory snapshot: ... cuda_memory=C GiB ..."   (DEBUG: VLLM_LOGGING_LEVEL=DEBUG)
  "GPU KV cache size: K tokens"
The `--kv-cache-memory=B` suggestion is exact: B = requested − (W + A + N + G) − 150 MiB.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gpushare.errors import ConfigError
from gpushare.estimate_job import ModelFacts
from gpushare.memory import GpuTarget, MeasuredTerms, ServeSettings, default_batching, model_dtype
from gpushare.plan import PlannedInstance
from gpushare.units import GiB, MiB

# vLLM leaves this margin below its --kv-cache-memory suggestion (gpu_worker.py, 150 MiB).
SUGGESTION_MARGIN_BYTES = 150 * MiB

_NUM = r"(-?[0-9]+(?:\.[0-9]+)?)"
_ACTUAL = re.compile(
    r"Desired GPU memory utilization is \("
    + _NUM
    + r", "
    + _NUM
    + r" GiB\)\. Actual usage is "
    + _NUM
    + r" GiB for weight, "
    + _NUM
    + r" GiB for peak activation, "
    + _NUM
    + r" GiB for non-torch memory, and "
    + _NUM
    + r" GiB for CUDAGraph memory\. "
    r"Replace gpu_memory_utilization config with `--kv-cache-memory=([0-9]+)`"
)
_SNAPSHOT = re.compile(r"worker init memory snapshot: .*?cuda_memory=" + _NUM + r"GiB")
_KV_TOKENS = re.compile(r"KV cache size: ([0-9,]+) tokens")
_VERSION = re.compile(r"Initializing a V1 LLM engine \(v([0-9][^)]*)\)")
# torch.compile from scratch allocates during the profile run, so vLLM then logs a higher peak
# activation than on every later start, which loads the compiled graphs from the cache (H200:
# Qwen3-8B 1.29 GiB cold, 0.78 GiB warm; bench/gpu/results/h200-heldout).
_COMPILED_COLD = "Compiling a graph for compile range"
_COMPILED_WARM = "Directly load the compiled graph"


@dataclass(frozen=True)
class VllmAccounting:
    """What one vLLM start said about its memory. Sizes in bytes; the logged GiB have 2 decimals."""

    utilization: float
    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    kv_suggestion_bytes: int  # exact: requested − (weights + activation + non-torch + graphs) − 150 MiB
    kv_cache_tokens: int | None
    context_bytes: int | None
    vllm_version: str | None
    compile_cache: str | None = None  # "warm" (graphs loaded), "cold" (compiled now), None (eager)

    def non_kv_bytes(self, requested_bytes: int) -> int:
        """Weights + activation + non-torch + CUDA graphs, exact, given the requested bytes."""
        return requested_bytes - self.kv_suggestion_bytes - SUGGESTION_MARGIN_BYTES


def _gib(text: str) -> int:
    return round(float(text) * GiB)


def parse_vllm_log(text: str, source: str = "vLLM log") -> VllmAccounting:
    """Read vLLM's memory accounting from a server log; a clear error when it is not there."""
    actual = _ACTUAL.search(text)
    if actual is None:
        raise ConfigError(
            f"{source}: no 'Actual usage is ... --kv-cache-memory=' line",
            hint="calibration needs a start where vLLM measures its KV size (no --kv-cache-memory-bytes)",
        )
    util, _, weights, activation, non_torch, graphs, suggestion = actual.groups()
    tokens = _KV_TOKENS.search(text)
    snapshot = _SNAPSHOT.search(text)
    version = _VERSION.search(text)
    return VllmAccounting(
        utilization=float(util),
        weights_bytes=_gib(weights),
        activation_bytes=_gib(activation),
        non_torch_bytes=_gib(non_torch),
        cuda_graph_bytes=_gib(graphs),
        kv_suggestion_bytes=int(suggestion),
        kv_cache_tokens=int(tokens.group(1).replace(",", "")) if tokens else None,
        context_bytes=_gib(snapshot.group(1)) if snapshot else None,
        vllm_version=version.group(1) if version else None,
        compile_cache="warm" if _COMPILED_WARM in text else "cold" if _COMPILED_COLD in text else None,
    )


@dataclass(frozen=True)
class CalibrationKey:
    """The settings a measurement depends on. Two starts with the same key spend the same memory."""

    gpu: str
    vllm_version: str
    model: str
    dtype: str
    max_num_batched_tokens: int
    max_num_seqs: int
    enforce_eager: bool
    tensor_parallel_size: int
    quantization: str | None

    def label(self) -> str:
        return (
            f"{self.model} on {self.gpu}, vLLM {self.vllm_version}, {self.dtype}, "
            f"{self.max_num_batched_tokens} batched tokens, {self.max_num_seqs} seqs"
            + (", eager" if self.enforce_eager else "")
            + (f", tp={self.tensor_parallel_size}" if self.tensor_parallel_size > 1 else "")
        )


@dataclass(frozen=True)
class CalibrationRecord:
    key: CalibrationKey
    terms: MeasuredTerms
    process_bytes: int  # NVML, at ready
    requested_bytes: int
    kv_cache_tokens: int | None
    measured_at: str  # ISO time
    compile_cache: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": asdict(self.key),
            "terms": asdict(self.terms),
            "process_bytes": self.process_bytes,
            "requested_bytes": self.requested_bytes,
            "kv_cache_tokens": self.kv_cache_tokens,
            "measured_at": self.measured_at,
            "compile_cache": self.compile_cache,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> CalibrationRecord:
        try:
            key = CalibrationKey(**data["key"])
            terms = MeasuredTerms(**data["terms"])
            return cls(
                key=key,
                terms=terms,
                process_bytes=int(data["process_bytes"]),
                requested_bytes=int(data["requested_bytes"]),
                kv_cache_tokens=data.get("kv_cache_tokens"),
                measured_at=str(data.get("measured_at", "")),
                compile_cache=data.get("compile_cache"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{source}: a calibration record is malformed ({exc})",
                hint="delete the file or run gpushare calibrate again",
            ) from None


def record_from_run(
    key: CalibrationKey,
    accounting: VllmAccounting,
    requested_bytes: int,
    process_bytes: int,
    measured_at: str,
) -> CalibrationRecord:
    """Measured terms from one start: everything outside the budget is what NVML showed beyond the
    requested bytes, less the CUDA graphs (which the memory model places by vLLM version). With no
    NVML reading (`process_bytes` 0) the fitted context and sampler terms stay in use.

    `requested_bytes` is ceil(CUDA total × utilization) from the exact total NVML reports.
    """
    in_budget = accounting.non_kv_bytes(requested_bytes) - accounting.cuda_graph_bytes
    outside = process_bytes - requested_bytes - accounting.cuda_graph_bytes
    # Split the exact in-budget total in the logged proportions (the log rounds each to 0.01 GiB).
    logged = accounting.weights_bytes + accounting.activation_bytes + accounting.non_torch_bytes
    scale = in_budget / logged if logged else 1.0
    weights = round(accounting.weights_bytes * scale)
    activation = round(accounting.activation_bytes * scale)
    non_torch = in_budget - weights - activation
    terms = MeasuredTerms(
        weights_bytes=weights,
        activation_bytes=activation,
        non_torch_bytes=non_torch,
        cuda_graph_bytes=accounting.cuda_graph_bytes,
        outside_bytes=max(0, outside) if process_bytes > 0 else None,
    )
    return CalibrationRecord(
        key,
        terms,
        process_bytes,
        requested_bytes,
        accounting.kv_cache_tokens,
        measured_at,
        accounting.compile_cache,
    )


def default_store_path() -> Path:
    """$GPUSHARE_CALIBRATION_FILE, else calibration.json in the user's data directory."""
    explicit = os.environ.get("GPUSHARE_CALIBRATION_FILE")
    if explicit:
        return Path(explicit)
    from platformdirs import user_data_path

    return user_data_path("gpushare") / "calibration.json"


class CalibrationStore:
    """Records in one JSON file; the newest record per key wins."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[CalibrationKey, CalibrationRecord]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{self.path}: not valid JSON (line {exc.lineno})",
                hint="delete it or run gpushare calibrate again",
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("records"), list):
            raise ConfigError(
                f'{self.path}: expected {{"records": [...]}}', hint="delete it and calibrate again"
            )
        records = [CalibrationRecord.from_json(item, str(self.path)) for item in data["records"]]
        return {r.key: r for r in records}

    def save(self, new: list[CalibrationRecord]) -> None:
        records = self.load()
        for record in new:
            records[record.key] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        payload = {"records": [r.to_json() for r in records.values()]}
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        os.replace(tmp, self.path)

    def lookup(self, key: CalibrationKey) -> CalibrationRecord | None:
        return self.load().get(key)


CalibrationLookup = Callable[[ModelFacts, GpuTarget, ServeSettings], MeasuredTerms | None]


def key_for(facts: ModelFacts, gpu: GpuTarget, settings: ServeSettings) -> CalibrationKey:
    """The key of an instance of `facts` on `gpu` with `settings` (vLLM's defaults filled in)."""
    default_batched, default_seqs = default_batching(gpu, settings.vllm_version)
    return CalibrationKey(
        gpu=gpu.name,
        vllm_version=settings.vllm_version,
        model=facts.resolved.reference,
        dtype=model_dtype(facts.arch, settings),
        max_num_batched_tokens=settings.max_num_batched_tokens or default_batched,
        max_num_seqs=settings.max_num_seqs or default_seqs,
        enforce_eager=settings.enforce_eager,
        tensor_parallel_size=settings.tensor_parallel_size,
        quantization=settings.quantization,
    )


class RecordLookup:
    """A `CalibrationLookup` over loaded records that remembers which ones it used (for notes)."""

    def __init__(self, records: dict[CalibrationKey, CalibrationRecord]) -> None:
        self.records = records
        self.used: dict[CalibrationKey, CalibrationRecord] = {}

    def __call__(self, facts: ModelFacts, gpu: GpuTarget, settings: ServeSettings) -> MeasuredTerms | None:
        record = self.records.get(key_for(facts, gpu, settings))
        if record is None:
            return None
        self.used[record.key] = record
        return record.terms

    def notes(self) -> list[str]:
        return [f"calibrated: {r.key.label()} (measured {r.measured_at})" for r in self.used.values()]


def stored_lookup(path: Path | None = None) -> RecordLookup | None:
    """A lookup over the records in the calibration file, or None when there is no file."""
    store = CalibrationStore(path or default_store_path())
    records = store.load()
    return RecordLookup(records) if records else None


def _flag(argv: tuple[str, ...], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def key_from_planned(inst: PlannedInstance) -> CalibrationKey:
    """The key of a planned instance (its estimate holds the settings vLLM will use)."""
    e = inst.estimate
    return CalibrationKey(
        gpu=str(e["gpu"]),
        vllm_version=str(e["vllm_version"]),
        model=str(e["model"]),
        dtype=str(e["dtype"]),
        max_num_batched_tokens=int(e["max_num_batched_tokens"]),
        max_num_seqs=int(e["max_num_seqs"]),
        enforce_eager="--enforce-eager" in inst.argv,
        tensor_parallel_size=int(e["tensor_parallel_size"]),
        quantization=_flag(inst.argv, "--quantization"),
    )


def settings_from_planned(inst: PlannedInstance) -> ServeSettings:
    """The serve settings behind a planned instance (for re-estimating it)."""
    e = inst.estimate
    return ServeSettings(
        max_model_len=int(e["max_model_len"]),
        dtype=str(e["dtype"]),
        kv_cache_dtype=str(e["kv_cache_dtype"]),
        block_size=int(e["block_size"]),
        max_num_seqs=int(e["max_num_seqs"]),
        max_num_batched_tokens=int(e["max_num_batched_tokens"]),
        tensor_parallel_size=int(e["tensor_parallel_size"]),
        enforce_eager="--enforce-eager" in inst.argv,
        quantization=_flag(inst.argv, "--quantization"),
        vllm_version=str(e["vllm_version"]),
    )


def measuring_argv(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The instance's command without --kv-cache-memory-bytes, so that vLLM measures (and logs)
    its own memory use within --gpu-memory-utilization."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--kv-cache-memory-bytes":
            skip = True
            continue
        if arg.startswith("--kv-cache-memory-bytes="):
            continue
        out.append(arg)
    return tuple(out)
