"""The terms of vLLM's memory use that it measures rather than computes: fitted values
(`Coefficients`) and one model's measured values from `gpushare calibrate` (`MeasuredTerms`).

Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpushare.units import GiB, KiB, MiB


@dataclass(frozen=True)
class Coefficients:
    """Measured terms of vLLM's memory use (vLLM 0.26.0, CUDA 13, Hopper).

    vLLM measures these rather than computing them; the structure of each formula comes from
    what vLLM does (memory/activation.py, memory/cudagraphs.py), the numbers from eight real runs
    on an H200 (bench/gpu/results/h200-vllm0.26.0, fitted in bench/gpu/fit.py and recorded in
    BENCHMARKS.md). `gpushare calibrate` replaces them per model and GPU.
    """

    # CUDA context and handles before vLLM's baseline snapshot, outside the budget:
    # "worker init memory snapshot: ... cuda_memory=0.51GiB" in every run.
    context_bytes: int = int(0.51 * GiB)
    # Non-torch growth during the profile run, inside the budget: 0.22 GiB in all eight runs.
    non_torch_bytes: int = int(0.22 * GiB)
    # Tensor parallel: NCCL's channel counts on H100/H200 with 18 NVLinks, followed through NCCL
    # v2.28.9-1's topology search by hand, not measured: 6 rings at 60 GB/s (18 x 20.6 GB/s links,
    # src/graph/search.cc), doubled by ncclTopoDupChannels and again by ncclTopoPostset
    # (connect.cc:452) to 24 collective channels; p2pnChannels = pow2Up(24) = 32 (paths.cc:883).
    # The same steps give the 16 an H800 (8 NVLinks) logs in NVIDIA/nccl#892, and 24 for an A100.
    # NCCL logs them at NCCL_DEBUG=INFO ("24 coll channels, ... 32 p2p channels"); PCIe machines
    # get fewer. memory/parallel.py turns them into bytes, outside the budget.
    nccl_coll_channels: int = 24
    nccl_p2p_channels: int = 32
    # Peak activation = max(one vocab × hidden matrix, the widest layer's tensors) + a per-token
    # term. Fits all six models within 0.03 GiB (e.g. Llama-3.1-8B: 0.98 + 0.12 = 1.10 GiB).
    activation_hidden_copies: int = 3
    activation_per_token_bytes: int = 13 * KiB
    # Sampler warm-up after the KV cache is allocated (gpu_worker.compile_or_warm_up_model): held
    # outside the budget, net of the activation pool freed after profiling.
    sampler_base_bytes: int = 29 * MiB
    sampler_bytes_per_logit: float = 11.38  # per row × vocab entry, rows = min(max_num_seqs, batched)
    # CUDA graphs (FULL_AND_PIECEWISE): a fixed part plus the full decode graphs, which grow with
    # hidden size × the sum of their batch sizes (0.39 GiB for Qwen2.5-0.5B .. 0.98 for Llama-8B).
    cudagraph_base_bytes: int = int(0.26 * GiB)
    cudagraph_bytes_per_token_hidden: float = 17.9
    # Sleep mode (memory/asleep.py): what vLLM's `weights` pool held beyond the weights and the
    # sampler state, on both measured models ("15.55 GiB is backed up in CPU" for Llama-3.1-8B,
    # 14.94 for Qwen2.5-7B; ../shared/VLLM-SLEEP.md).
    sleep_pool_extra_bytes: int = int(0.04 * GiB)
    # What the V1 runner's profiler estimates for its CUDA graphs (memory/cudagraphs.py), fitted on
    # gpt-oss-20b (H200) and Qwen3-30B-A3B-FP8 (H100): the first piecewise capture per layer ×
    # hidden × dtype of its largest size, the driver's memory per captured piece and per full graph.
    v1_cudagraph_first_per_layer_hidden: float = 4 / 3
    v1_cudagraph_piece_bytes: int = 144 * KiB
    v1_cudagraph_full_layer_bytes: int = 80 * KiB
    # An encoder-only pooling model's CUDA-graph capture (PIECEWISE, 51 sizes): vLLM runs no
    # profile for it, so its first torch.compile'd forward and the graph pool both land in the
    # capture. bge-m3 on the H200 (bench/gpu/results/h200-i11-pooling): 2.55 GiB by NVML against
    # 1.89 with --enforce-eager, and 0.73 GiB by vLLM's own "Graph capturing ... took"; 0.61 GiB by
    # NVML with 35 capture sizes (--max-num-seqs 128). Measured on this one model.
    encoder_cudagraph_bytes: int = int(0.66 * GiB)


@dataclass(frozen=True)
class MeasuredTerms:
    """One model's measured terms on one GPU, from `gpushare calibrate` (vLLM's own accounting).

    They replace the computed weights, activation, non-torch and CUDA-graph terms, and the
    context + sampler warm-up outside the budget (`outside_bytes`, CUDA graphs excluded).
    """

    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    outside_bytes: int | None  # None: NVML gave no reading; the fitted context + sampler apply
