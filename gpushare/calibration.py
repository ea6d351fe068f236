"""Calibration: vLLM's own accounting of one real start, stored and reused by the memory model.

`gpushare calibrate PROFILE` starts each model alone once (the runtime does that); this module
reads what vLLM logged, turns it into a `CalibrationRecord` keyed by the things that change the
numbers (GPU, vLLM version, model, dtype, batching, eager, tensor parallel, quantization), and
stores records in a JSON file. The planner looks a record up for each instance and, when one
matches, uses its measured terms instead of the fitted coefficients.

vLLM's log is read by gpushare/vllm/log.py (`parse_vllm_log`), its command line by
gpushare/vllm/command.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpushare.errors import ConfigError
from gpushare.memory import GpuTarget, MeasuredTerms, ServeSettings, model_dtype
from gpushare.memory.settings import with_batching_defaults

if TYPE_CHECKING:  # `estimate` looks records up without loading the plan's or the log's modules
    from gpushare.estimate_job import ModelFacts
    from gpushare.memory import Estimate
    from gpushare.planning.plan import PlannedInstance
    from gpushare.vllm.command import VllmCommand
    from gpushare.vllm.log import VllmAccounting


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
    runner: str = "generate"  # records written before the pooling runner was modelled are generate
    modalities: str = ""  # multimodal limits (`modalities_key`); "" = vLLM's defaults, as before

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
    *,
    graphs_in_budget: bool,
) -> CalibrationRecord:
    """Measured terms from one start. Inside the budget: weights, activation and non-torch, the
    exact total of vLLM's log (its graphs apart). Outside it: what NVML showed beyond the requested
    bytes, less the CUDA graphs only where vLLM does not count them in its budget
    (`graphs_in_budget`: the instance's `Budget.cuda_graph_in_budget`, memory/cudagraphs.py's rule;
    where they are counted the requested bytes already hold them). With no NVML reading
    (`process_bytes` 0) the fitted context and sampler terms stay in use.

    `requested_bytes` is ceil(CUDA total × utilization) from the exact total NVML reports.
    """
    in_budget = accounting.non_kv_bytes(requested_bytes) - accounting.cuda_graph_bytes
    graphs_outside = 0 if graphs_in_budget else accounting.cuda_graph_bytes
    outside = process_bytes - requested_bytes - graphs_outside
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


def modalities_key(settings: ServeSettings) -> str:
    """The multimodal settings a measurement depends on (a vision tower is built or not, per
    memory/vision.py): "" for vLLM's defaults, "off" for --language-model-only, else the limits'
    JSON."""
    if settings.language_model_only:
        return "off"
    return json.dumps(dict(settings.mm_limits), separators=(",", ":")) if settings.mm_limits else ""


def _key(gpu: str, model: str, dtype: str, settings: ServeSettings) -> CalibrationKey:
    assert settings.max_num_batched_tokens is not None and settings.max_num_seqs is not None
    return CalibrationKey(
        gpu=gpu,
        vllm_version=settings.vllm_version,
        model=model,
        dtype=dtype,
        max_num_batched_tokens=settings.max_num_batched_tokens,
        max_num_seqs=settings.max_num_seqs,
        enforce_eager=settings.enforce_eager,
        tensor_parallel_size=settings.tensor_parallel_size,
        quantization=settings.quantization,
        runner=settings.runner,
        modalities=modalities_key(settings),
    )


def key_for(facts: ModelFacts, gpu: GpuTarget, settings: ServeSettings) -> CalibrationKey:
    """The key of an instance of `facts` on `gpu` with `settings` (vLLM's defaults filled in)."""
    pinned = with_batching_defaults(settings, gpu, facts.arch)
    return _key(gpu.name, facts.resolved.reference, model_dtype(facts.arch, settings), pinned)


class RecordLookup:
    """Measured terms for (model, GPU, settings) from loaded records: what `build_plan` and
    `gpushare estimate` ask for each instance."""

    def __init__(self, records: dict[CalibrationKey, CalibrationRecord]) -> None:
        self.records = records

    def __call__(self, facts: ModelFacts, gpu: GpuTarget, settings: ServeSettings) -> MeasuredTerms | None:
        record = self.records.get(key_for(facts, gpu, settings))
        return record.terms if record is not None else None


def stored_lookup(path: Path | None = None) -> RecordLookup | None:
    """A lookup over the records in the calibration file, or None when there is no file."""
    store = CalibrationStore(path or default_store_path())
    records = store.load()
    return RecordLookup(records) if records else None


def planned_estimate(inst: PlannedInstance) -> Estimate:
    """The memory model's answer a planned instance carries (its settings, its Budget)."""
    if inst.estimate is None:
        raise ValueError(f"{inst.name}: not a planned instance (it carries no estimate)")
    return inst.estimate


def _command_of(inst: PlannedInstance) -> VllmCommand:
    from gpushare.vllm.command import VllmCommand

    return VllmCommand.from_argv(inst.argv)


def key_from_planned(inst: PlannedInstance) -> CalibrationKey:
    """The key of a planned instance (its estimate holds the settings vLLM will use)."""
    e = planned_estimate(inst)
    return _key(e.gpu, e.model, e.dtype, settings_from_planned(inst))


def settings_from_planned(inst: PlannedInstance) -> ServeSettings:
    """The serve settings behind a planned instance (for re-estimating it)."""
    e = planned_estimate(inst)
    command = _command_of(inst)
    return ServeSettings(
        max_model_len=e.max_model_len,
        dtype=e.dtype,
        kv_cache_dtype=e.kv_cache_dtype,
        block_size=e.block_size,
        max_num_seqs=e.max_num_seqs,
        max_num_batched_tokens=e.max_num_batched_tokens,
        tensor_parallel_size=e.tensor_parallel_size,
        enforce_eager=command.enforce_eager,
        quantization=command.quantization,
        vllm_version=e.vllm_version,
        language_model_only=command.language_model_only,
        mm_limits=tuple(sorted(command.limit_mm_per_prompt)),
        mm_encoder_tp_mode="data" if command.mm_encoder_tp_mode == "data" else "weights",
        # the plan passes --runner pooling for every pooling instance (planning/commands.py)
        runner="pooling" if command.runner == "pooling" else "generate",
        task="classify" if command.convert == "classify" else "embed" if command.convert else None,
    )


def measuring_argv(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The instance's command without --kv-cache-memory-bytes, so that vLLM measures (and logs)
    its own memory use within --gpu-memory-utilization. Flags gpushare does not set keep their
    order, after the ones it sets."""
    from gpushare.vllm.command import VllmCommand

    return VllmCommand.from_argv(argv).without("kv_cache_memory_bytes").to_argv()
