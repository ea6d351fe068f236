"""Drawing results for people. Core functions return data; this turns it into rich output."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from gpushare.cli import term
from gpushare.memory import Estimate
from gpushare.units import format_bytes


def _console() -> Console:
    return term.console()


def estimate_rows(e: Estimate) -> list[tuple[str, str, str]]:
    """(what, value, note) rows of an estimate, kept apart from drawing so tests can read them."""
    graph_note = (
        "inside the budget" if e.budget.cuda_graph_in_budget else "on top of the budget (this vLLM version)"
    )
    rows = [
        ("weights", format_bytes(e.weights_bytes), f"from {e.weights_source}, {e.dtype}"),
        (
            "activation peak",
            format_bytes(e.activation_bytes),
            f"profile run of {e.max_num_batched_tokens} tokens",
        ),
        ("non-torch", format_bytes(e.non_torch_bytes), "inside the budget"),
        ("CUDA graphs", format_bytes(e.cuda_graph_bytes), graph_note),
        (
            "context overhead",
            format_bytes(e.budget.context_bytes),
            "outside the budget",
        ),
        *(
            [("TP buffers", format_bytes(e.budget.parallel_bytes), "NCCL, all-reduce; outside the budget")]
            if e.budget.parallel_bytes
            else []
        ),
        (
            "KV per token",
            f"{e.kv_bytes_per_token:,} B",
            f"block of {e.block_size} tokens = {format_bytes(e.kv_block_bytes)}",
        ),
        ("KV cache", format_bytes(e.kv_cache_bytes), f"{e.num_blocks:,} blocks"),
        ("KV tokens", f"{e.kv_cache_tokens:,}", f"max_model_len {e.max_model_len:,}"),
        ("max concurrency", f"{e.max_concurrency:.2f}x", "requests of max_model_len"),
        (
            "gpu_memory_utilization",
            f"{e.gpu_memory_utilization:.4f}",
            f"requests {format_bytes(e.requested_bytes)}",
        ),
    ]
    if not e.has_kv_cache:
        # Encoder-only: no profile run, no KV cache (memory/estimate.py _encoder_fixed).
        rows[1] = ("activation peak", "none", "no profile run")
        rows[3] = ("CUDA graphs", format_bytes(e.cuda_graph_bytes), "PIECEWISE capture, outside any budget")
        rows[4] = ("context overhead", format_bytes(e.budget.context_bytes), "context and final warm-up")
        rows[5:9] = [
            ("KV cache", "none", "encoder-only: vLLM keeps no KV cache"),
            ("max_num_seqs", f"{e.max_num_seqs:,}", f"batch of {e.max_num_batched_tokens:,} tokens"),
        ]
        rows[-1] = ("gpu_memory_utilization", f"{e.gpu_memory_utilization:.4f}", "start check only")
    if e.kv_cache_memory_bytes is not None:
        rows.append(
            ("--kv-cache-memory-bytes", str(e.kv_cache_memory_bytes), format_bytes(e.kv_cache_memory_bytes))
        )
    rows.append(
        ("process (NVML)", format_bytes(e.process_bytes), f"of {format_bytes(e.cuda_total_bytes)} visible")
    )
    return rows


def render_estimate(e: Estimate, location: str) -> None:
    table = Table(title=f"{e.model} on {e.gpu} (vLLM {e.vllm_version}, tp={e.tensor_parallel_size})")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("note", style="dim")
    for what, value, note in estimate_rows(e):
        table.add_row(what, value, note)
    console = _console()
    console.print(table)
    console.print(f"[dim]config from {location}[/]")
    for note in e.notes:
        console.print(f"[yellow]note:[/] {note}")
