"""What tensor parallelism adds on each of its GPUs: NCCL's communicators, vLLM's custom
all-reduce and PyTorch's symmetric-memory buffer. Pure: no I/O.

From the source, not measured on a GPU: vLLM 0.26.0 (paths under `vllm/`), NCCL v2.28.9-1
(`src/`; PyTorch 2.11.0 bundles the NCCL that vLLM's pynccl loads) and PyTorch's symmetric
memory. Every one of these buffers is allocated while vLLM sets up its process groups, which
`v1/worker/gpu_worker.py::init_device` (lines 365-388) does *before* it takes the memory snapshot
its budget is measured from ("Initialize the distributed environment BEFORE taking memory
snapshot ... This ensures NCCL buffers are allocated before we measure available memory"). So
they sit outside `gpu_memory_utilization`, like the CUDA context: they raise the process footprint
and what must be free when the instance starts, not the KV cache. Inside the budget the source adds
nothing: the profile run's all-reduces copy into the buffers below or reuse NCCL's connections.

Per GPU of a TP instance (vLLM's defaults; `Coefficients.nccl_*` for NCCL's channel counts):

    nccl        = communicators × (p2p_channels × 3 × granule + 2 × granule
                                   + coll_channels × (recv_connection + send_connection))
    custom_ar   = align(meta + max_size) + align(max_size) + torch_segment(rank_data)
    symm_mem    = align(SYMM_MEM_ALL_REDUCE_MAX_SIZES[capability][tp] + signal_pad)

Assumptions (each over-counts where it does not hold, which only costs free memory):
- NCCL_NVLS_ENABLE=0 (no NVLink SHARP buffers or multicast objects; this workplace's multi-GPU
  machines require it). With NVLS on, NCCL allocates more: not modelled.
- the channel counts of Hopper or Ampere GPUs on NVLink (24 collective, 32 point-to-point); PCIe
  systems get fewer.
- custom all-reduce on (no --disable-custom-all-reduce), VLLM_ALLREDUCE_USE_SYMM_MEM=1 (default),
  VLLM_USE_NCCL_SYMM_MEM=0 and VLLM_ALLREDUCE_USE_FLASHINFER=0 (defaults), tensor parallelism
  only (no pipeline, data or expert parallel flags).
- for TP ≥ 4, NCCL may connect a second algorithm (tree) on first use during the profile run,
  inside the budget: not modelled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gpushare.hfconfig import ModelArch
from gpushare.memory.coefficients import Coefficients
from gpushare.units import MiB, cdiv

GRANULE = 2 * MiB
"""cuMemCreate's minimum granularity on these GPUs, and what cudaMalloc rounds a large allocation
to. NCCL allocates device memory through cuMem (NCCL_CUMEM_ENABLE auto-detects it: on with CUDA
12+; src/misc/cudawrap.cc::ncclCuMemEnable), each allocation aligned to it
(src/include/alloc.h::ncclCuMemAlloc, ALIGN_SIZE(size, granularity))."""

# NCCL's per-protocol buffer sizes (src/init.cc: DEFAULT_LL_BUFFSIZE = 8 lines × 512 threads ×
# 8 steps × 16 B; DEFAULT_LL128_BUFFSIZE = 120 elements × 640 threads × 8 steps × 8 B;
# DEFAULT_BUFFSIZE = 1 << 22, NCCL_BUFFSIZE).
NCCL_LL_BUFFSIZE = 8 * 512 * 8 * 16
NCCL_LL128_BUFFSIZE = 120 * 640 * 8 * 8
NCCL_SIMPLE_BUFFSIZE = 4 * MiB
NCCL_CONN_HEADER = 4096
"""struct ncclSendMem / ncclRecvMem, each padded to MEM_ALIGN (src/include/device.h)."""
CUDA_IPC_MIN = 2 * MiB
"""NCCL aligns each P2P connection's buffer to this (src/include/comm.h)."""
NCCL_ALLOCS_PER_CHANNEL = 3
"""src/channel.cc::initChannel, for every channel up to p2pnChannels (src/graph/paths.cc:889):
the shared devPeers, the channel's devPeers and devRingUserRanks, one cuMem allocation each."""
NCCL_ALLOCS_PER_COMM = 2
"""src/init.cc::devCommSetup: devCommAndChans and rankToLocalRank."""

CUSTOM_AR_WORLD_SIZES = (2, 4, 6, 8)
"""distributed/device_communicators/custom_all_reduce.py:52 (_SUPPORTED_WORLD_SIZES)."""
CUSTOM_AR_MAX_SIZE = 8 * MiB
"""CustomAllreduce(max_size=8192 * 1024) (custom_all_reduce.py:59). With multicast-capable
symmetric memory it may be lowered for TP 6 and 8 (all_reduce_utils.py:31), not raised."""
CUSTOM_AR_META = 64 * 1024
"""An upper bound of ops.meta_size(), sizeof(vllm::Signal): a few KiB of per-block flags
(csrc/custom_all_reduce.cuh), so meta + max_size rounds up to the same granules whatever it is."""
CUSTOM_AR_RANK_DATA = 8 * MiB
"""torch.empty(8 * 1024 * 1024, uint8) (custom_all_reduce.py:184), through PyTorch's caching
allocator, which serves 1-10 MiB requests from a 20 MiB segment (kLargeBuffer)."""
TORCH_LARGE_SEGMENT = 20 * MiB

SYMM_MEM_ALL_REDUCE_MAX_SIZES: dict[tuple[int, int], dict[int, int]] = {
    (9, 0): {2: 64 * MiB, 4: 32 * MiB, 6: 64 * MiB, 8: 64 * MiB},
    (10, 0): {2: 8 * MiB, 4: 32 * MiB, 6: 128 * MiB, 8: 128 * MiB},
    (10, 3): {2: 4 * MiB, 4: 32 * MiB, 6: 32 * MiB, 8: 64 * MiB},
}
"""distributed/device_communicators/all_reduce_utils.py:52. SymmMemCommunicator (symm_mem.py:87-96)
allocates a buffer this size for the TP group whenever the compute capability and TP size are in
the table, before it checks for multicast: with multicast off (TORCH_SYMM_MEM_DISABLE_MULTICAST=1)
it logs "symmetric memory multicast operations are not supported", stays disabled and keeps the
buffer (symm_mem.py:105-110)."""
SYMM_MEM_SIGNAL_PAD = 32 * 72 * 4
"""PyTorch's default_signal_pad_size: 32 blocks × 72 peers × 4 B, allocated with the buffer."""


def align(size: int, to: int) -> int:
    return cdiv(size, to) * to


def nccl_connection_bytes() -> int:
    """One channel's ring connection to its peers on one GPU: a receive buffer with every
    protocol's space (LL, LL128, Simple; P2P read, which moves Simple to the sender, is on for
    sm80 only: src/graph/paths.cc:371) and a send header, each aligned to CUDA_IPC_MIN
    (src/transport/p2p.cc:377-380, 445-448)."""
    recv = NCCL_CONN_HEADER + NCCL_LL_BUFFSIZE + NCCL_LL128_BUFFSIZE + NCCL_SIMPLE_BUFFSIZE
    send = NCCL_CONN_HEADER
    return align(align(recv, CUDA_IPC_MIN), GRANULE) + align(align(send, CUDA_IPC_MIN), GRANULE)


def nccl_communicator_bytes(coeff: Coefficients) -> int:
    """One NCCL communicator of vLLM's pynccl on one GPU, once its warm-up all-reduce has run
    (pynccl.py:137-146: ncclCommInitRank, then a one-element all_reduce, both before the snapshot).

    NCCL sets up each channel's structures at init and, since 2.22 (NCCL_RUNTIME_CONNECT=1), the
    first collective connects every collective channel of the algorithm it picked
    (src/transport.cc::ncclTransportRingConnect). With two ranks every algorithm talks to the same
    peer over the same connectors, so later collectives add nothing.
    """
    structures = (coeff.nccl_p2p_channels * NCCL_ALLOCS_PER_CHANNEL + NCCL_ALLOCS_PER_COMM) * GRANULE
    return structures + coeff.nccl_coll_channels * nccl_connection_bytes()


def nccl_communicators(arch: ModelArch, tp: int) -> int:
    """vLLM's process groups with a device communicator (CudaCommunicator, hence a PyNccl one) for
    plain tensor parallelism: the TP group, and for a MoE model the EP group, of size
    dp × pcp × tp = tp (distributed/parallel_state.py:1813, 1917: "Don't create EP group for dense
    models"). The world group has none (use_device_communicator=False, parallel_state.py:1293);
    the DCP, PCP, PP and DP groups are of size 1. PyTorch's own NCCL groups stay uncreated: TP runs
    no collective on them (they connect lazily)."""
    if tp <= 1:
        return 0
    return 2 if arch.moe is not None else 1


def custom_all_reduce_bytes(tp: int) -> int:
    """vLLM's custom all-reduce on one GPU of the TP group (custom_all_reduce.py:173-186): the
    uncached signal + scratch buffer (meta_size + max_size) and the registered input buffer
    (max_size), both cudaMalloc'ed and shared with the peers through CUDA IPC (csrc
    allocate_shared_buffer_and_handle; a peer's buffers it opens cost it nothing), and the
    rank-data tensor. The CUDA-graph buffers registered after capture are the graphs' own.

    For TP > 2 vLLM turns it off unless the GPUs are fully NVLink-connected (custom_all_reduce.py:
    150); counting it there anyway over-counts 38 MiB on PCIe machines."""
    if tp not in CUSTOM_AR_WORLD_SIZES:
        return 0
    meta = align(CUSTOM_AR_META + CUSTOM_AR_MAX_SIZE, GRANULE)
    buffer = align(CUSTOM_AR_MAX_SIZE, GRANULE)
    return meta + buffer + TORCH_LARGE_SEGMENT


def symm_mem_bytes(tp: int, compute_capability: tuple[int, int]) -> int:
    """PyTorch symmetric memory for the TP group's all-reduce (VLLM_ALLREDUCE_USE_SYMM_MEM=1 by
    default, cuda_communicator.py:58, 97-101), allocated even when multicast is off."""
    sizes = SYMM_MEM_ALL_REDUCE_MAX_SIZES.get(compute_capability, {})
    if tp not in sizes:
        return 0
    return align(sizes[tp] + SYMM_MEM_SIGNAL_PAD, GRANULE)


@dataclass(frozen=True)
class ParallelTerms:
    """What tensor parallelism adds on each of its GPUs, outside vLLM's budget, in bytes."""

    tensor_parallel_size: int
    nccl_communicators: int
    nccl_bytes: int
    custom_all_reduce_bytes: int
    symm_mem_bytes: int

    @property
    def outside_bytes(self) -> int:
        return self.nccl_bytes + self.custom_all_reduce_bytes + self.symm_mem_bytes


def parallel_terms(
    arch: ModelArch, tp: int, compute_capability: tuple[int, int], coeff: Coefficients
) -> ParallelTerms:
    """The TP terms of one GPU; all zero for a single GPU."""
    if tp <= 1:
        return ParallelTerms(tp, 0, 0, 0, 0)
    comms = nccl_communicators(arch, tp)
    return ParallelTerms(
        tensor_parallel_size=tp,
        nccl_communicators=comms,
        nccl_bytes=comms * nccl_communicator_bytes(coeff),
        custom_all_reduce_bytes=custom_all_reduce_bytes(tp),
        symm_mem_bytes=symm_mem_bytes(tp, compute_capability),
    )


PARALLEL_NOTE = (
    "tensor parallel: {size} per GPU of NCCL ({comms} communicator(s)), custom all-reduce and "
    "symmetric-memory buffers outside vLLM's budget, from vLLM 0.26.0's and NCCL's source with NVLink "
    "multicast off (NCCL_NVLS_ENABLE=0); not yet measured on a GPU"
)


NVLS_OFF_ENV = {"NCCL_NVLS_ENABLE": "0"}
"""The variable the model above assumes for every TP instance: NCCL without NVLink SHARP."""

NVLS_NOTE = (
    "tensor parallel without NCCL_NVLS_ENABLE=0 in the profile's env: where NCCL uses NVLink SHARP "
    "(NVSwitch machines) its buffers and multicast objects are not modelled; set defaults.env "
    'NCCL_NVLS_ENABLE: "0" (or export it where `gpushare up` runs)'
)


def unmodelled_parallel_env(tp: int, env: Mapping[str, str]) -> str | None:
    """A note when a TP instance's profile env leaves out a setting the TP terms assume (the
    environment `up` runs in may still set it: the plan does not read it), else None."""
    if tp <= 1 or all(env.get(key) == value for key, value in NVLS_OFF_ENV.items()):
        return None
    return NVLS_NOTE
