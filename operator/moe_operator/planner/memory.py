"""SGLang's memory budget per GPU: mem_fraction_static heuristic and the KV pool it leaves.

Faithful to sglang 0.5.23 (rule ids of data/sglang_compat.yaml, each checked against the wheel):
``arg_groups/memory_hook.py::handle_gpu_memory_settings`` (reserve-formula, cuda-memory-buckets),
``reserve_for_graph_mb`` (graph-reserve: incl. +1 GiB for DeepEP with breakable prefill graphs),
``reserve_for_deepep_a2a_mb`` (deepep-a2a-reserve), ``model_executor/cuda_graph_config.py::default_prefill_backend``
(prefill graphs on CUDA only), ``hardware_backend/npu/utils.py::set_default_server_args`` (npu-memory-buckets),
``adjust_mem_fraction_for_vlm`` and ``mem_cache/kv_cache_configurator.py::_profile_available_bytes``
(shared/reference/sglang.md §4), with these simplifications (docs/planning.md):
- the non-post-capture path (reserve computed up front) and unified (non-PD) serving;
- no reserve for EAGLE/MTP: 0.5.23 has none (no-speculative-reserve);
- "fixed_overhead" in max_total_num_tokens is taken as 0; the CUDA/CANN context plus communicator
  buffers taken before profiling is the profile's runtime_overhead_mib.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moe_operator.planner.accelerators import MIB, AcceleratorProfile
from moe_operator.planner.catalog import ModelSpec


def gpu_defaults(gpu_mem_mib: int, tp: int, vendor: str = "nvidia") -> tuple[int, int]:
    """(chunked_prefill_size, decode cuda-graph max_bs) by device memory bucket (cuda-memory-buckets,
    npu-memory-buckets)."""
    if vendor == "huawei":
        if gpu_mem_mib <= 32 * 1024:
            return 4096, 16 if tp < 4 else 64
        if gpu_mem_mib <= 64 * 1024:
            return 8192, 64 if tp < 4 else 256
        # larger NPUs: set_default_server_args leaves these to the generic (CUDA) buckets below
    if gpu_mem_mib < 20 * 1024:
        return 2048, 8
    if gpu_mem_mib < 35 * 1024:
        return 4096, 48 if tp < 4 else 160
    if gpu_mem_mib < 60 * 1024:
        return 4096, 32 if tp < 4 else 160
    if gpu_mem_mib < 160 * 1024:  # H100/A100 (<90 GiB) and H20/H200 share the rule
        return 8192, 256 if tp < 4 else 512
    return 16384, 512


def prefill_graph_sizes(max_tokens: int) -> list[int]:
    sizes = (
        list(range(4, 33, 4))
        + list(range(48, 257, 16))
        + list(range(288, 513, 32))
        + list(range(576, 1025, 64))
        + list(range(1280, 4097, 256))
        + list(range(4608, max_tokens + 1, 512))
    )
    return [s for s in sizes if s <= max_tokens]


@dataclass(frozen=True)
class MemFraction:
    value: float  # what goes into --mem-fraction-static
    reserved_mib: float
    chunked_prefill_size: int
    cuda_graph_max_bs: int
    vlm_factor: float


def mem_fraction_static(
    acc: AcceleratorProfile,
    spec: ModelSpec,
    *,
    tp: int,
    attn_dp: int,
    deepep: bool,
    cuda_graph_max_bs: int | None = None,
) -> MemFraction:
    gpu_mem = acc.gpu_mem_mib
    chunked, default_bs = gpu_defaults(gpu_mem, tp, acc.vendor)
    max_bs = cuda_graph_max_bs or default_bs
    activation_tokens = max(chunked, 2048)
    reserved = 512 + activation_tokens * 1.5 + tp / 8 * 1024
    # reserve_for_graph_mb
    graph = max_bs * 2.0
    if attn_dp > 1:
        graph += max_bs * attn_dp * 3
        if max_bs > 300:
            graph += max_bs * attn_dp * 1.5
    if acc.vendor != "huawei":  # prefill graphs: breakable on CUDA, disabled elsewhere
        if spec.is_mla:
            graph += 1.5 * 1024
        elif deepep:  # apply_deepep_adjustments: sizes up to 2048, rounded up to multiples of 8
            graph += len({(b + 7) // 8 * 8 for b in prefill_graph_sizes(2048)}) * 8
        else:
            graph += len(prefill_graph_sizes(chunked)) * 8
        if deepep:
            graph += 1024  # breakable prefill graphs with DeepEP: bridge pool + NVL first-touch
    reserved += graph
    if gpu_mem > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    if deepep:
        reserved += 2 * 1024  # reserve_for_deepep_a2a_mb
    mfs = round((gpu_mem - reserved) / gpu_mem, 3)
    factor = 1.0
    if spec.is_multimodal:
        ratio = spec.vision_num_layers * spec.vision_hidden_size**2 / (24 * 1024**2)
        factor = 0.95 * max(0.8, min(1.05, 1.0 - 0.1 * (ratio - 1.0)))
        mfs = math.floor(mfs * factor * 1000) / 1000
    return MemFraction(mfs, reserved, chunked, max_bs, factor)


@dataclass(frozen=True)
class KVPool:
    pre_load_free_bytes: float
    kv_pool_bytes: float  # rest = pre_free * mfs - weights (may be <= 0)
    max_total_tokens: int  # per DP group, page-floored


def kv_pool(acc: AcceleratorProfile, mfs: float, weights_per_gpu: float, cell: int, page: int) -> KVPool:
    pre_free = acc.usable_bytes - acc.runtime_overhead_mib * MIB
    rest = pre_free * mfs - weights_per_gpu
    tokens = int(rest // cell) if rest > 0 else 0
    tokens = tokens // page * page
    return KVPool(pre_free, rest, tokens)
