"""Compute model of one SGLang group: prefill throughput and decode step time (pure; stdlib only).

What it is: a roofline-shaped model with a handful of efficiency constants fitted to PUBLISHED SGLang numbers
(`Calibration`, every constant with its source in `Calibration.sources`), used by the offline simulator's
prefill/decode disaggregation mode (sim/moe_sim/pd.py). It is not a kernel-level performance model.

* Prefill (compute-bound): one prompt token costs 2 x active parameters FLOPs (GEMMs) plus the causal attention
  over its position (average L/2 for an L-token prompt; DSA models attend to at most `index_topk` positions), the
  attention FLOPs weighted by `prefill_attention_weight` (attention runs at a lower MFU than the GEMMs). A group of G
  devices prefills at G x peak x `prefill_mfu` / FLOPs-per-token. Peak = the device's dense tensor FLOP/s at the
  precision's compute dtype (FP8 for fp8, BF16 for int4 = W4A16, FP4 for nvfp4, INT8 for w8a8/w4a8).
* Decode (one step of a batch of B requests over G devices, attention data-parallel so each device runs B/G of
  them): step = fixed per-layer latency x layers
              + weight bytes read this step / (G x HBM bandwidth x `hbm_efficiency`)
              + (B/G) x [`decode_token_factor` x 2 x active / peak           (MoE/dense GEMMs + EP all-to-all)
                         + context x (KV bytes per token / HBM bandwidth      (reading the KV cache)
                                      + decode attention FLOPs per token / BF16 peak)]   (absorbed-MLA / GQA math)
  Weight bytes read: the non-expert weights plus the fraction of routed experts the step's B tokens touch,
  1 - (1 - k/E)^B (k of E experts per token, uniform routing).
* Calibration (DeepSeek-V3 FP8 on H100, LMSYS 2025-05-05): `prefill_mfu` and `prefill_attention_weight` reproduce
  the per-node prefill throughput at 1K and 4K prompts; `decode_token_factor` reproduces 22,282 output tokens/s per
  node at 256 requests per GPU and 2,000-token KV. Everything else (other models, H200, B200, Ascend, other batches
  and contexts) is EXTRAPOLATED through active parameters, weight/KV bytes and the accelerator's FLOP/s and
  bandwidth; `CHECKS` lists the published points the extrapolation is compared with and how far off it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from moe_operator.planner.accelerators import AcceleratorProfile, resolve_accelerator
from moe_operator.planner.catalog import ModelSpec, resolve_model
from moe_operator.planner.errors import PlanError
from moe_operator.planner.kv import kv_cell, resolve_kv_dtype
from moe_operator.planner.precision import PRECISIONS
from moe_operator.planner.weights import summarize

TERA = 1e12


@dataclass(frozen=True)
class DeviceSpec:
    """Dense (non-sparse) tensor throughput per device, FLOP/s (or OP/s for int8), and HBM bandwidth, bytes/s."""

    name: str
    flops: Mapping[str, float]  # compute dtype -> dense FLOP/s
    hbm_bytes_per_s: float
    source: str


# Datasheet numbers are quoted "with sparsity" by NVIDIA; the dense figure is half of it.
DEVICES: dict[str, DeviceSpec] = {
    "h100": DeviceSpec("h100", {"bf16": 989 * TERA, "fp8": 1979 * TERA, "int8": 1979 * TERA}, 3.35 * TERA,
                       "NVIDIA H100 SXM datasheet: BF16 1,979 / FP8 3,958 TFLOPS with sparsity, HBM3 3.35 TB/s "
                       "(calibration hardware only)"),
    "h200": DeviceSpec("h200", {"bf16": 989 * TERA, "fp8": 1979 * TERA, "int8": 1979 * TERA}, 4.8 * TERA,
                       "NVIDIA H200 SXM datasheet: same tensor cores as H100 SXM (BF16 1,979 / FP8 3,958 TFLOPS "
                       "with sparsity), HBM3e 4.8 TB/s"),
    "b200": DeviceSpec("b200", {"bf16": 2250 * TERA, "fp8": 4500 * TERA, "int8": 4500 * TERA, "fp4": 9000 * TERA},
                       8.0 * TERA,
                       "NVIDIA HGX B200 datasheet per GPU: FP4 18 / FP8 9 / BF16 4.5 PFLOPS with sparsity, HBM3e "
                       "8 TB/s"),
    "ascend-910b": DeviceSpec("ascend-910b", {"bf16": 320 * TERA, "int8": 640 * TERA}, 1.6 * TERA,
                              "Huawei Ascend 910B: ~320 TFLOPS FP16, ~640 TOPS INT8, HBM2e ~1.6 TB/s [inferred from "
                              "commonly cited figures; no official datasheet in the library]"),
    "ascend-910c": DeviceSpec("ascend-910c", {"bf16": 400 * TERA, "int8": 800 * TERA}, 1.6 * TERA,
                              "Huawei Ascend 910C per die (the planner's device; 2 dies per chip): ~800 TFLOPS FP16 "
                              "and ~3.2 TB/s per chip, halved [inferred]"),
}

# the dtype the tensor cores run at for each weight precision
COMPUTE_DTYPE = {"bf16": "bf16", "fp8": "fp8", "int4": "bf16", "nvfp4": "fp4", "w8a8": "int8", "w4a8": "int8"}


@dataclass(frozen=True)
class Calibration:
    prefill_mfu: float = 0.286
    prefill_attention_weight: float = 1.51
    decode_token_factor: float = 5.94
    decode_layer_latency_s: float = 1.0e-4
    hbm_efficiency: float = 0.7
    sources: Mapping[str, str] = field(default_factory=lambda: {
        "prefill_mfu": "fitted: LMSYS blog 2025-05-05 'Deploying DeepSeek with PD Disaggregation and Large-scale "
        "Expert Parallelism on 96 H100 GPUs', Evaluation: prefill on 4 nodes (EP32) 57,674 / 54,543 / 50,302 "
        "tokens/s per node for 1K / 2K / 4K prompts (DeepSeek-V3 FP8); 54,543/8 GPUs at 82.9 GFLOP per token = "
        "28.6 % of the H100's FP8 dense peak",
        "prefill_attention_weight": "fitted to the same blog's 1K -> 4K slow-down (57,674 / 50,302 = 1.147): "
        "attention FLOPs cost 1.51x the GEMM FLOPs",
        "decode_token_factor": "fitted: same blog, decode on 9 nodes (EP72) 22,282 tokens/s per node at batch 256 "
        "per GPU and KV length 2,000 (= a 91.9 ms step); the GEMM + all-to-all time per token is 5.94x the "
        "token's 2 x active FLOPs at FP8 peak",
        "decode_layer_latency_s": "assumed: 0.1 ms per layer per step (kernel launch / dispatch latency; the blog "
        "reports DeepEP dispatch ~0.17 ms per layer, partly overlapped by two-batch overlap)",
        "hbm_efficiency": "assumed: 70 % of the HBM datasheet bandwidth for streaming weights and KV",
    })


DEFAULT_CALIBRATION = Calibration()


def device(accelerator: AcceleratorProfile | str) -> DeviceSpec:
    name = accelerator if isinstance(accelerator, str) else accelerator.name
    if name not in DEVICES:
        raise PlanError("accelerator", f"no compute profile for accelerator {name!r}; known: {', '.join(DEVICES)}")
    return DEVICES[name]


def peak_flops(accelerator: AcceleratorProfile | str, precision: str) -> float:
    dev = device(accelerator)
    dtype = COMPUTE_DTYPE.get(precision, "bf16")
    if dtype not in dev.flops:  # e.g. FP4 on Hopper: runs at the next wider dtype SGLang supports there
        dtype = "fp8" if "fp8" in dev.flops else "bf16"
    return dev.flops[dtype]


@dataclass(frozen=True)
class _ModelCosts:
    active_params: float
    weight_bytes: float
    expert_bytes: float
    experts: int
    experts_per_tok: int
    layers: int
    prefill_attn_flops_per_pos: float  # per token per attended position, all layers
    decode_attn_flops_per_ctx: float  # per decoded token per context token, all layers
    attn_window: int  # DSA: positions the main attention reads (index_topk); 0 = all
    indexer_fraction: float  # DSA indexer cost per position relative to the main attention


_COSTS: dict[tuple[str, int, str], _ModelCosts] = {}


def _costs(model: ModelSpec, precision: str) -> _ModelCosts:
    key = (model.id, id(model), precision)
    hit = _COSTS.get(key)
    if hit is None:
        hit = _COSTS[key] = _compute_costs(model, precision)
    return hit


def _compute_costs(model: ModelSpec, precision: str) -> _ModelCosts:
    if precision not in PRECISIONS:
        raise PlanError("precision", f"unknown precision {precision!r}")
    w = summarize(model, PRECISIONS[precision])
    heads, layers = model.num_attention_heads, model.num_layers
    if model.is_mla:
        prefill = 2.0 * heads * (model.head_dim + model.v_head_dim)  # QK^T + PV per position, per layer
        latent = model.kv_lora_rank + model.qk_rope_head_dim
        decode = 2.0 * heads * (latent + model.kv_lora_rank)  # absorbed MLA: scores over latent+rope, values latent
    else:
        prefill = decode = 2.0 * heads * (model.head_dim + model.v_head_dim)
    idx = 0.0
    if model.is_dsa and model.index_n_heads and model.head_dim:
        idx = (model.index_n_heads * model.index_head_dim) / (heads * (model.head_dim + model.v_head_dim))
    return _ModelCosts(
        active_params=w.active_params, weight_bytes=w.bytes, expert_bytes=w.by_group.get("routed", 0.0),
        experts=model.n_routed_experts, experts_per_tok=model.num_experts_per_tok, layers=layers,
        prefill_attn_flops_per_pos=prefill * layers, decode_attn_flops_per_ctx=decode * layers,
        attn_window=model.index_topk if model.is_dsa else 0, indexer_fraction=idx)


def _attended(c: _ModelCosts, positions: float) -> float:
    """Effective attended positions: DSA reads at most index_topk positions (plus its light indexer over all)."""
    if c.attn_window:
        return min(positions, float(c.attn_window)) + c.indexer_fraction * positions
    return positions


def _resolve(model: ModelSpec | str, accelerator: AcceleratorProfile | str) -> tuple[ModelSpec, AcceleratorProfile]:
    """The model and a planner pool profile; `h100` (calibration only, no pool profile) sizes KV as an H200."""
    spec = resolve_model(model) if isinstance(model, str) else model
    return spec, resolve_accelerator("h200" if accelerator == "h100" else accelerator)



def prefill_flops_per_token(model: ModelSpec | str, precision: str, prompt_tokens: int,
                            cal: Calibration = DEFAULT_CALIBRATION) -> float:
    spec = resolve_model(model) if isinstance(model, str) else model
    c = _costs(spec, precision)
    return 2.0 * c.active_params + cal.prefill_attention_weight * c.prefill_attn_flops_per_pos * _attended(
        c, max(0, prompt_tokens) / 2.0)


def prefill_tokens_per_second(model: ModelSpec | str, accelerator: AcceleratorProfile | str, gpus: int,
                              precision: str, prompt_tokens: int, cal: Calibration = DEFAULT_CALIBRATION) -> float:
    """One group's prefill throughput, prompt tokens/s, for prompts of `prompt_tokens` (uncached) tokens."""
    if gpus < 1:
        raise ValueError("gpus must be >= 1")
    spec, _ = _resolve(model, accelerator)
    return gpus * peak_flops(accelerator, precision) * cal.prefill_mfu / prefill_flops_per_token(spec, precision,
                                                                                          prompt_tokens, cal)


def kv_bytes_per_token(model: ModelSpec | str, accelerator: AcceleratorProfile | str, kv_dtype: str = "auto") -> int:
    """KV bytes one token costs the model as a whole (all layers, unsharded): what decode reads and PD transfers."""
    spec, acc = _resolve(model, accelerator)
    return kv_cell(spec, resolve_kv_dtype(kv_dtype, spec, acc), 1, acc).model_bytes_per_token


def decode_step_seconds(model: ModelSpec | str, accelerator: AcceleratorProfile | str, gpus: int, precision: str,
                        batch: float, context_tokens: float, kv_dtype: str = "auto",
                        cal: Calibration = DEFAULT_CALIBRATION) -> float:
    """Inter-token latency of one decode step of `batch` running requests (the group's total; attention DP spreads
    them over the `gpus` devices) whose mean context is `context_tokens`. Increases with batch and context."""
    if gpus < 1:
        raise ValueError("gpus must be >= 1")
    spec, acc = _resolve(model, accelerator)
    c = _costs(spec, precision)
    dev = device(accelerator)
    bw = dev.hbm_bytes_per_s * cal.hbm_efficiency
    b = max(0.0, float(batch))
    touched = 1.0 - (1.0 - c.experts_per_tok / c.experts) ** b if c.experts else 1.0
    weights = (c.weight_bytes - c.expert_bytes + c.expert_bytes * touched) / gpus / bw
    per_token = cal.decode_token_factor * 2.0 * c.active_params / peak_flops(accelerator, precision)
    ctx = _attended(c, max(0.0, float(context_tokens)))
    per_ctx = kv_bytes_per_token(spec, acc, kv_dtype) / bw + c.decode_attn_flops_per_ctx / dev.flops["bf16"]
    return c.layers * cal.decode_layer_latency_s + weights + (b / gpus) * (per_token + ctx * per_ctx)


def ttft_seconds(model: ModelSpec | str, accelerator: AcceleratorProfile | str, gpus: int, precision: str,
                 prompt_tokens: int, queue_s: float = 0.0, transfer_s: float = 0.0,
                 cal: Calibration = DEFAULT_CALIBRATION) -> float:
    """Time to first token of one prompt on an otherwise idle group: queue + prefill (+ KV transfer in PD)."""
    rate = prefill_tokens_per_second(model, accelerator, gpus, precision, prompt_tokens, cal)
    return queue_s + prompt_tokens / rate + transfer_s


def kv_transfer_seconds(tokens: int, bytes_per_token: int, link_bytes_per_s: float) -> float:
    """PD: moving a prompt's KV from the prefill group to the decode group over RDMA."""
    return tokens * bytes_per_token / link_bytes_per_s if link_bytes_per_s > 0 else 0.0


@dataclass(frozen=True)
class Check:
    """A published number and the model's value for it: `tolerance` is the relative error the tests accept."""

    name: str
    published: float
    model: float
    tolerance: float
    source: str
    fitted: bool  # True: a calibration point (reproduced by construction); False: extrapolation

    @property
    def error(self) -> float:
        return self.model / self.published - 1.0


def checks(cal: Calibration = DEFAULT_CALIBRATION) -> list[Check]:
    ds, k2 = resolve_model("deepseek-v3"), resolve_model("kimi-k2")
    lmsys = "LMSYS blog 2025-05-05 (96 H100), Evaluation"
    out = []
    for n, pub in ((1024, 57674.0), (2048, 54543.0), (4096, 50302.0)):
        out.append(Check(f"DeepSeek-V3 FP8 H100 prefill per node, {n}-token prompts", pub,
                         prefill_tokens_per_second(ds, "h100", 8, "fp8", n, cal), 0.03, lmsys, True))
    step = decode_step_seconds(ds, "h100", 72, "fp8", 256 * 72, 2000, "bfloat16", cal)
    out.append(Check("DeepSeek-V3 FP8 H100 decode per node, 256/GPU, KV 2000", 22282.0, 8 * 256 / step, 0.03, lmsys,
                     True))
    step = decode_step_seconds(ds, "h100", 128, "fp8", 128 * 128, 4096, "bfloat16", cal)
    out.append(Check("DeepSeek profile decode per node, 128/GPU, KV 4096 (H800 = H100 FLOPs/bandwidth)", 18598.0,
                     8 * 128 / step, 0.15, lmsys + ", decode table ('DeepSeek Profile' column)", False))
    out.append(Check("Kimi-K2 FP8 H200 prefill per node, 2000-token prompts", 56000.0,
                     prefill_tokens_per_second(k2, "h200", 8, "fp8", 2000, cal), 0.20,
                     "LMSYS blog 2025-07-20 'Deploying Kimi K2 with PD Disaggregation and Large-Scale Expert "
                     "Parallelism on 128 H200 GPUs': 56k prefill tokens/s per node (1P1D, 4 P + 12 D nodes)", False))
    step = decode_step_seconds(k2, "h200", 96, "fp8", 480 * 96, 2050, "bfloat16", cal)
    out.append(Check("Kimi-K2 FP8 H200 decode per GPU, batch 480, 2000 in / 100 out", 384000.0 / 96, 480 / step,
                     0.20, "same blog: 384k decode tokens/s on 12 decode nodes at decode batch size 480", False))
    out.append(Check("DeepSeek FP8 (BF16 attention) Blackwell prefill per GPU, 2000-token prompts", 18471.0,
                     prefill_tokens_per_second(ds, "b200", 1, "fp8", 2000, cal), 0.20,
                     "LMSYS blog 2025-09-25 'Deploying DeepSeek on GB200 NVL72 with PD and Large Scale EP (Part "
                     "II)': 18,471 input tokens/s per GPU (GB200: ~10 % more FLOP/s than B200)", False))
    step = decode_step_seconds(ds, "ascend-910c", 16, "w8a8", 19.1 * 16, 4250, "bfloat16", cal)
    out.append(Check("DeepSeek-R1 W8A8 Atlas 800I A3 decode TPOT, ~19 requests per die, 3.5K in / 1.5K out", 0.0481,
                     step, 0.35, "SGLang docs 'Best Practice on Ascend NPU', High Throughput: TPOT 48.10 ms, 396.8 "
                     "output tokens/s per card, 32 cards PD separation (decode assumed on 16)", False))
    return out


def prefill_seconds(model: ModelSpec | str, accelerator: AcceleratorProfile | str, gpus: int, precision: str,
                    new_tokens: int, cached_tokens: int = 0, cal: Calibration = DEFAULT_CALIBRATION) -> float:
    """Group-seconds to prefill `new_tokens` after a cached prefix of `cached_tokens` (their attention still reads
    the cached positions: the mean attended position is cached + new/2)."""
    if new_tokens <= 0:
        return 0.0
    spec, _ = _resolve(model, accelerator)
    c = _costs(spec, precision)
    per_token = 2.0 * c.active_params + cal.prefill_attention_weight * c.prefill_attn_flops_per_pos * _attended(
        c, cached_tokens + new_tokens / 2.0)
    return new_tokens * per_token / (gpus * peak_flops(accelerator, precision) * cal.prefill_mfu)
