"""The bundled catalog of model configs, as `gpushare models` lists it: each published
`config.json` copy under `hf_configs/`, what gpushare reads from it, and where the copy came from
(`hf_configs/SOURCES.md`, one table row per file).

Pure apart from reading the package's own files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpushare.errors import GpushareError

CATALOG_DIR = Path(__file__).parent / "hf_configs"
SOURCES_FILE = CATALOG_DIR / "SOURCES.md"


@dataclass(frozen=True)
class CatalogSource:
    """One row of SOURCES.md: where the copy of the published file was found, how it was checked."""

    copied_from: str
    status: str

    @property
    def check(self) -> str:
        """The status's first clause ("verified exact", "NOT verified exact", ...)."""
        return self.status.split(";")[0].split(". ")[0].split(" (")[0].split(":")[0].strip()


@dataclass(frozen=True)
class CatalogModel:
    """One bundled config, read as the memory model reads it for vLLM's defaults (`--runner
    auto`, every modality on). `problem` is set (and the sizes are None) when gpushare does not
    size the architecture for DEFAULT_VLLM_VERSION; `note` says what a size leaves open."""

    repo_id: str
    file: str
    architecture: str
    model_type: str
    parameters: int | None
    """The checkpoint's parameters as vLLM builds the model (a vision tower included)."""
    weights_bytes: int | None
    """The checkpoint's tensors at the dtype vLLM serves it in, from the config (one GPU), a
    vision tower included; None where the layout depends on the GPU (gpt-oss's MXFP4)."""
    dtype: str | None
    quantization: str | None
    max_position_embeddings: int | None
    source: CatalogSource | None
    problem: str | None = None
    runner: str | None = None
    """What vLLM's `--runner auto` gives it: generate, or pooling (with its task)."""
    layout: str | None = None
    """The layout gpushare sizes it with (gpushare/architectures.py)."""
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "file": self.file,
            "architecture": self.architecture,
            "model_type": self.model_type,
            "runner": self.runner,
            "layout": self.layout,
            "parameters": self.parameters,
            "weights_bytes": self.weights_bytes,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "max_position_embeddings": self.max_position_embeddings,
            "copied_from": self.source.copied_from if self.source else None,
            "source_status": self.source.status if self.source else None,
            "problem": self.problem,
            "note": self.note,
        }


def read_sources(text: str) -> dict[str, CatalogSource]:
    """SOURCES.md's table (`| file | repo id | copied from | status |`), by file name."""
    sources: dict[str, CatalogSource] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) >= 4 and cells[0].endswith(".json"):
            sources[cells[0]] = CatalogSource(copied_from=cells[2], status=" | ".join(cells[3:]))
    return sources


def _quantization_text(method: str, bits: int) -> str:
    return f"{method} {bits}-bit" if method != "fp8" else "fp8"


def catalog_model(path: Path, sources: dict[str, CatalogSource]) -> CatalogModel:
    from gpushare.architectures import check_served, resolve_pooling
    from gpushare.hfconfig import parse_config
    from gpushare.memory import DEFAULT_VLLM_VERSION
    from gpushare.memory.mxfp4 import is_gpt_oss
    from gpushare.memory.settings import DTYPE_BYTES, ServeSettings, model_dtype
    from gpushare.memory.vision import tower_is_built, tower_parameter_count, tower_tensor_bytes
    from gpushare.resolve import SENTENCE_TRANSFORMERS_REPOS
    from gpushare.weights import parameter_count, weight_bytes_from_config

    repo_id = path.stem.replace("--", "/", 1)
    raw = json.loads(path.read_text())
    archs = raw.get("architectures") or [raw.get("model_type", "?")]
    source = sources.get(path.name)
    try:
        # as `gpushare estimate REPO` takes it: the table's check for the default vLLM release,
        # then vLLM's `--runner auto` (a Sentence-Transformers repo picks pooling)
        arch = parse_config(raw, repo_id)
        check_served(repo_id, arch.architectures, DEFAULT_VLLM_VERSION, exact_weights=False)
        runner, task = resolve_pooling(arch.row, "auto", None, repo_id in SENTENCE_TRANSFORMERS_REPOS)
    except GpushareError as exc:
        return CatalogModel(
            repo_id, path.name, str(archs[0]), str(raw.get("model_type", "?")), None, None, None, None,
            None, source, exc.message,
        )  # fmt: skip
    settings = ServeSettings(runner=runner, task=task)
    dtype = model_dtype(arch, settings)
    quant = arch.quantization
    pooling = runner == "pooling"
    classify = pooling and (task or (arch.row.default_task() if arch.row else None)) == "classify"
    parameters = parameter_count(arch, pooling, classify)
    weights: int | None = weight_bytes_from_config(
        arch, DTYPE_BYTES[dtype], pooling=pooling, classify=classify
    )
    if arch.vision is not None:
        parameters += tower_parameter_count(arch.vision)
        if tower_is_built(arch, settings) and weights is not None:
            weights += tower_tensor_bytes(arch.vision, DTYPE_BYTES[dtype], quant)
    note = None
    if is_gpt_oss(arch):
        weights = None
        note = (
            "weights depend on the GPU (vLLM re-lays the MXFP4 experts out for its kernel, "
            f"memory/mxfp4.py): `gpushare estimate {repo_id} --gpu GPU`"
        )
    row = arch.row
    return CatalogModel(
        repo_id=repo_id,
        file=path.name,
        architecture=arch.architectures[0] if arch.architectures else str(archs[0]),
        model_type=arch.model_type,
        parameters=parameters,
        weights_bytes=weights,
        dtype=dtype,
        quantization=_quantization_text(quant.method, quant.bits) if quant is not None else None,
        max_position_embeddings=arch.max_position_embeddings,
        source=source,
        runner=runner + (f" ({task or row.default_task()})" if pooling and row is not None else ""),
        layout=row.layout if row is not None else None,
        note=note,
    )


def catalog_models(folder: Path = CATALOG_DIR) -> list[CatalogModel]:
    """Every bundled config, sorted by repo id."""
    sources_file = folder / SOURCES_FILE.name
    sources = read_sources(sources_file.read_text()) if sources_file.is_file() else {}
    models = [catalog_model(path, sources) for path in folder.glob("*--*.json")]
    return sorted(models, key=lambda m: m.repo_id.lower())
