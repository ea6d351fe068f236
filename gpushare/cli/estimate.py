"""`gpushare estimate MODEL`: what one vLLM instance of MODEL takes on a GPU."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated

import typer

from gpushare.architectures import RUNNER_CHOICES, resolve_pooling
from gpushare.cli.app import app
from gpushare.errors import DoesNotFitError, GpushareError, InputError, KvCacheTooSmallError
from gpushare.estimate_job import (
    DEFAULT_GPU,
    ModelFacts,
    gpu_target,
    load_model,
    parse_one_gpu,
    run_estimate,
)
from gpushare.memory import DEFAULT_VLLM_VERSION, Estimate, GpuTarget, ServeSettings
from gpushare.memory.settings import SETTING_RULES, vllm_version_problem, with_modalities
from gpushare.units import parse_bytes
from gpushare.vllm.command import parse_mm_limits


@app.command()
def estimate(
    model: Annotated[str, typer.Argument(help="Local folder, Hugging Face repo id, or catalog name.")],
    gpu: Annotated[
        str, typer.Option(help="GPU name (H100, A100-80GB, L4, ...) or total size (80GiB).")
    ] = DEFAULT_GPU,
    max_model_len: Annotated[int | None, typer.Option(help="Context length (default: the model's).")] = None,
    gpu_memory_utilization: Annotated[
        float | None, typer.Option("--gpu-memory-utilization", help="Forward: vLLM's budget fraction.")
    ] = None,
    kv_cache_memory_bytes: Annotated[
        str | None,
        typer.Option("--kv-cache-memory-bytes", help="Forward: a fixed KV cache size (e.g. 10GiB)."),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Inverse: concurrent requests of max_model_len to serve.")
    ] = None,
    kv_tokens: Annotated[
        int | None, typer.Option("--kv-tokens", help="Inverse: KV cache tokens to hold.")
    ] = None,
    dtype: Annotated[str, typer.Option(help="Model dtype: auto, bfloat16, float16.")] = "auto",
    kv_cache_dtype: Annotated[str, typer.Option(help="auto, fp8, fp8_e4m3, fp8_e5m2.")] = "auto",
    block_size: Annotated[int | None, typer.Option(help="KV block size in tokens (vLLM default 16).")] = None,
    max_num_seqs: Annotated[int | None, typer.Option(help="vLLM --max-num-seqs.")] = None,
    max_num_batched_tokens: Annotated[int | None, typer.Option(help="vLLM --max-num-batched-tokens.")] = None,
    tensor_parallel_size: Annotated[int, typer.Option("--tensor-parallel-size", "--tp")] = 1,
    enforce_eager: Annotated[bool, typer.Option(help="No CUDA graphs.")] = False,
    quantization: Annotated[str | None, typer.Option(help="Online quantization (fp8).")] = None,
    vllm_version: Annotated[str, typer.Option(help="The vLLM version to model.")] = DEFAULT_VLLM_VERSION,
    runner: Annotated[
        str,
        typer.Option(
            help="auto (vLLM's choice: pooling for embedders and rerankers), generate, or pooling "
            "(no lm_head, no sampler)."
        ),
    ] = "auto",
    task: Annotated[
        str | None,
        typer.Option(
            help="Pooling task: embed, or classify (score and rerank mean classify); passed to vLLM "
            "as --convert. Implies --runner pooling."
        ),
    ] = None,
    language_model_only: Annotated[
        bool,
        typer.Option(
            "--language-model-only",
            help="Multimodal models: text only; vLLM builds no vision tower (as vLLM's flag).",
        ),
    ] = False,
    limit_mm_per_prompt: Annotated[
        str | None,
        typer.Option(
            "--limit-mm-per-prompt",
            help='Multimodal models: items per prompt, e.g. \'{"image":2,"video":0}\'; all 0: no tower.',
        ),
    ] = None,
    mm_encoder_tp_mode: Annotated[
        str | None, typer.Option("--mm-encoder-tp-mode", help="weights or data (vision tower over TP ranks).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, sizes in bytes.")] = False,
    no_calibration: Annotated[
        bool,
        typer.Option("--no-calibration", help="Ignore `gpushare calibrate` records for this GPU and model."),
    ] = False,
) -> None:
    """Predict weights, KV cache, activation, CUDA graphs and the process footprint of one instance.

    Forward (default): from --gpu-memory-utilization (or vLLM's default) or --kv-cache-memory-bytes
    to KV tokens and max concurrency. Inverse: from --concurrency or --kv-tokens to the least
    utilization and the matching --kv-cache-memory-bytes.
    """
    if runner not in RUNNER_CHOICES:
        raise InputError(f"--runner {runner!r}: use auto, generate or pooling")
    _check_options(
        max_model_len=max_model_len,
        block_size=block_size,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        tensor_parallel_size=tensor_parallel_size,
        concurrency=concurrency,
        kv_tokens=kv_tokens,
    )
    version_problem = vllm_version_problem(vllm_version)
    if version_problem is not None:
        raise InputError(f"--vllm-version {vllm_version}: {version_problem}")
    limits = None
    if limit_mm_per_prompt is not None:
        limits = parse_mm_limits(limit_mm_per_prompt)
        if limits is None:
            raise InputError(
                f"--limit-mm-per-prompt {limit_mm_per_prompt!r}: give a JSON object of counts",
                hint='e.g. --limit-mm-per-prompt \'{"image":2,"video":0}\'',
            )
    modalities: object = "off" if language_model_only else (dict(limits) if limits else None)
    settings = ServeSettings(
        max_model_len=max_model_len,
        dtype=dtype,
        kv_cache_dtype=kv_cache_dtype,
        block_size=block_size,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        tensor_parallel_size=tensor_parallel_size,
        enforce_eager=enforce_eager,
        quantization=quantization,
        vllm_version=vllm_version,
    )
    settings = with_modalities(settings, modalities, mm_encoder_tp_mode)
    kv_bytes = (
        parse_bytes(kv_cache_memory_bytes, "--kv-cache-memory-bytes") if kv_cache_memory_bytes else None
    )
    facts = load_model(model)
    resolved, convert = resolve_pooling(facts.arch.row, runner, task, facts.resolved.sentence_transformers)
    settings = replace(settings, runner=resolved, task=convert)
    target = gpu_target(parse_one_gpu(gpu))
    measured = None
    if not no_calibration:
        from gpushare.calibration import stored_lookup

        lookup = stored_lookup()
        measured = lookup(facts, target, settings) if lookup is not None else None

    def sized(other: ModelFacts, gpu: GpuTarget, changed: ServeSettings) -> Estimate:
        return run_estimate(
            other,
            gpu,
            changed,
            measured=measured if other is facts and gpu == target and changed == settings else None,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_memory_bytes=kv_bytes,
            concurrency=concurrency,
            kv_tokens=kv_tokens,
        )

    try:
        result = sized(facts, target, settings)
    except (KvCacheTooSmallError, DoesNotFitError) as exc:
        raise _with_hints(exc, facts, target, settings, sized) from None
    if as_json:
        data = result.to_json()
        data["model_location"] = facts.resolved.location
        typer.echo(json.dumps(data, indent=2))
        return
    from gpushare.cli.render import render_estimate

    render_estimate(result, facts.resolved.location)


def _check_options(**values: int | None) -> None:
    """The options vLLM would refuse, by the rules the profile's schema uses (memory/settings.py)."""
    for name, value in values.items():
        problem = SETTING_RULES[name].problem(value) if value is not None else None
        if problem is not None:
            raise InputError(f"--{name.replace('_', '-')} {value}: {problem}")


def _with_hints(
    exc: KvCacheTooSmallError | DoesNotFitError,
    facts: ModelFacts,
    target: GpuTarget,
    settings: ServeSettings,
    sized: Callable[[ModelFacts, GpuTarget, ServeSettings], Estimate],
) -> GpushareError:
    """The refusal with what would hold the model instead, each checked with the same sizing
    (planning/suggest.py no_room_hints: --tp N, a quantized catalog variant, a larger GPU)."""
    from gpushare.planning.suggest import no_room_hints

    def fits(other: ModelFacts, gpu: GpuTarget, changed: ServeSettings) -> Estimate | None:
        try:
            return sized(other, gpu, changed)
        except GpushareError:
            return None

    hints = no_room_hints(facts, target, settings, fits)
    if hints:
        # the same error (its type and fields, e.g. TargetTooLargeError's needed_bytes), a longer hint
        exc.hint = "would hold it: " + "; ".join(hints) + f"; or {exc.hint}"
    return exc
