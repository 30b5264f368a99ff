"""Planner formulas pinned with worked examples (sglang.md §4) and the seeds' scenario."""

from __future__ import annotations

import pytest

from moe_operator.planner import ACCELERATORS, CATALOG, AcceleratorProfile, PlanError, PlanRequest, plan
from moe_operator.planner.kv import kv_cell, resolve_kv_dtype
from moe_operator.planner.memory import mem_fraction_static
from moe_operator.planner.precision import PRECISIONS
from moe_operator.planner.weights import Layout, per_gpu_weight_bytes


def cell(model: str, kv: str, attn_tp: int = 8, acc: str = "h200", mtp: bool = False) -> int:
    return kv_cell(CATALOG[model], kv, attn_tp, ACCELERATORS[acc], mtp).bytes_per_token


# ---- KV bytes per token per GPU -------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["deepseek-v3", "kimi-k2", "kimi-k2.5"])
def test_mla_latent_is_576_per_layer_and_not_split_by_tp(model: str) -> None:
    assert cell(model, "bfloat16", attn_tp=1) == 576 * 61 * 2 == 70_272
    assert cell(model, "bfloat16", attn_tp=16) == 70_272  # replicated on every attention-TP rank
    assert cell(model, "fp8_e4m3") == 576 * 61 == 35_136


def test_dsa_fp8_656_layout_plus_132_byte_indexer() -> None:
    """H200: FlashMLA (flashmla_kv) layout, sglang mem_cache/kv_cache_configurator.py::calculate_mla_kv_cache_dim."""
    assert cell("deepseek-v3.2", "fp8_e4m3") == (656 + 132) * 61 == 48_068
    assert cell("deepseek-v3.2", "bfloat16") == (1152 + 132) * 61 == 78_324
    assert cell("glm-5", "bfloat16") == (1152 + 132) * 78 == 100_152
    assert cell("glm-5", "fp8_e4m3") == (656 + 132) * 78 == 61_464


def test_dsa_fp8_on_b200_keeps_the_raw_trtllm_layout() -> None:
    """B200: SGLang defaults DSA with fp8 KV to the trtllm backends (arg_groups/overrides.py, 'trtllm' if major >= 10),
    and calculate_mla_kv_cache_dim returns the raw kv_lora_rank + rope = 576 for them: 576 x 1 B + 132 indexer."""
    assert cell("glm-5", "fp8_e4m3", acc="b200") == (576 + 132) * 78 == 55_224
    assert cell("deepseek-v3.2", "fp8_e4m3", acc="b200") == (576 + 132) * 61 == 43_188
    assert cell("glm-5", "bfloat16", acc="b200") == (1152 + 132) * 78  # bf16: the same 576 elements either way


def test_dsa_indexer_on_npu_with_bf16_kv_uses_kv_dtype() -> None:
    assert cell("deepseek-v3.2", "bfloat16", acc="ascend-910b") == (1152 + 128 * 2) * 61


@pytest.mark.parametrize(("attn_tp", "expected"), [(8, 47_104), (16, 47_104), (4, 2 * 256 * 92 * 2), (1, 376_832)])
def test_glm47_gqa_heads_split_then_replicated(attn_tp: int, expected: int) -> None:
    assert cell("glm-4.7", "bfloat16", attn_tp=attn_tp) == expected


def test_qwen3_four_kv_heads() -> None:
    assert cell("qwen3-235b-a22b", "bfloat16", attn_tp=8) == 1 * 256 * 94 * 2 == 48_128
    assert cell("qwen3-235b-a22b", "bfloat16", attn_tp=2) == 2 * 256 * 94 * 2


def test_mtp_adds_draft_layer_kv() -> None:
    assert cell("deepseek-v3", "bfloat16", mtp=True) == 576 * 2 * 62


def test_kv_dtype_defaults() -> None:
    v32 = CATALOG["deepseek-v3.2"]
    assert resolve_kv_dtype("auto", v32, ACCELERATORS["b200"]) == "fp8_e4m3"
    assert resolve_kv_dtype("auto", v32, ACCELERATORS["h200"]) == "bfloat16"
    assert resolve_kv_dtype("auto", CATALOG["glm-5"], ACCELERATORS["ascend-910c"]) == "bfloat16"
    assert resolve_kv_dtype("auto", CATALOG["kimi-k2.5"], ACCELERATORS["b200"]) == "bfloat16"
    assert resolve_kv_dtype("bf16", CATALOG["kimi-k2.5"], ACCELERATORS["h200"]) == "bfloat16"
    with pytest.raises(PlanError) as e:
        resolve_kv_dtype("fp8_e5m2", v32, ACCELERATORS["h200"])
    assert e.value.constraint == "kv_dtype"
    with pytest.raises(PlanError) as e:
        resolve_kv_dtype("fp8_e4m3", v32, ACCELERATORS["ascend-910b"])
    assert e.value.constraint == "kv_dtype"


# ---- mem_fraction_static heuristic -------------------------------------------------------------------------


def test_mem_fraction_heuristic_h200_tp8_mla() -> None:
    m = mem_fraction_static(ACCELERATORS["h200"], CATALOG["deepseek-v3"], tp=8, attn_dp=1, deepep=False)
    # 512 + 8192*1.5 + 8/8*1024 + 512*2 (decode graphs) + 1536 (MLA prefill graphs) = 16384 MiB
    assert m.reserved_mib == 16_384
    assert m.value == round((143_771 - 16_384) / 143_771, 3) == 0.886
    assert (m.chunked_prefill_size, m.cuda_graph_max_bs) == (8192, 512)


def test_mem_fraction_heuristic_b200_dp8_deepep() -> None:
    m = mem_fraction_static(ACCELERATORS["b200"], CATALOG["deepseek-v3"], tp=8, attn_dp=8, deepep=True)
    # 512 + 16384*1.5 + 1024 + 512*2 + 512*8*3 + 512*8*1.5 + 1536 (MLA prefill graphs) + 1024 (breakable prefill
    # graphs with DeepEP: memory_hook.py::reserve_for_graph_mb) + 2048 (reserve_for_deepep_a2a_mb)
    assert m.reserved_mib == 512 + 24_576 + 1024 + 1024 + 12_288 + 6144 + 1536 + 1024 + 2048 == 50_176
    assert m.value == round((183_359 - m.reserved_mib) / 183_359, 3) == 0.726


def test_mem_fraction_deepep_on_h200_matches_sglang_default() -> None:
    """The plan pinned 0.872 here in v0.1; SGLang's own default is 0.865 (the breakable-prefill DeepEP GiB)."""
    m = mem_fraction_static(ACCELERATORS["h200"], CATALOG["deepseek-v3"], tp=8, attn_dp=1, deepep=True)
    assert m.reserved_mib == 512 + 12_288 + 1024 + 1024 + 1536 + 1024 + 2048 == 19_456
    assert m.value == 0.865


def test_mem_fraction_on_ascend_has_no_prefill_graphs_and_bs_256() -> None:
    """hardware_backend/npu/utils.py::set_default_server_args: <= 64 GiB -> chunked 8192, decode max bs 256 (tp >= 4);
    cuda_graph_config.py::default_prefill_backend: prefill graphs only on CUDA."""
    acc = ACCELERATORS["ascend-910b"]
    m = mem_fraction_static(acc, CATALOG["deepseek-v3"], tp=8, attn_dp=1, deepep=False)
    assert (m.chunked_prefill_size, m.cuda_graph_max_bs) == (8192, 256)
    assert m.reserved_mib == max(512 + 12_288 + 1024 + 256 * 2, 10 * 1024) == 14_336
    assert m.value == round((65_536 - 14_336) / 65_536, 3) == 0.781
    dp = mem_fraction_static(acc, CATALOG["deepseek-v3"], tp=8, attn_dp=8, deepep=True)
    assert dp.reserved_mib == 512 + 12_288 + 1024 + 512 + 256 * 8 * 3 + 2048  # no +1 GiB: no prefill graphs
    assert dp.value == 0.656


def test_mem_fraction_gqa_prefill_graphs() -> None:
    m = mem_fraction_static(
        ACCELERATORS["h200"], CATALOG["glm-4.7"], tp=2, attn_dp=1, deepep=False, cuda_graph_max_bs=8
    )
    assert m.reserved_mib == 512 + 12_288 + 2 / 8 * 1024 + 8 * 2 + 58 * 8  # GQA: 8 MiB per prefill graph size
    m = mem_fraction_static(ACCELERATORS["h200"], CATALOG["glm-4.7"], tp=8, attn_dp=1, deepep=False)
    assert m.reserved_mib == 512 + 12_288 + 1024 + 1024 + 58 * 8


def test_vlm_adjustment_for_kimi_k25() -> None:
    plain = mem_fraction_static(ACCELERATORS["h200"], CATALOG["kimi-k2"], tp=8, attn_dp=1, deepep=False)
    vlm = mem_fraction_static(ACCELERATORS["h200"], CATALOG["kimi-k2.5"], tp=8, attn_dp=1, deepep=False)
    ratio = 27 * 1152**2 / (24 * 1024**2)
    assert vlm.vlm_factor == pytest.approx(0.95 * (1 - 0.1 * (ratio - 1)))
    assert vlm.value == pytest.approx(plain.value * vlm.vlm_factor, abs=1e-3)


# ---- weight shards -----------------------------------------------------------------------------------------


def test_attention_dp_replicates_attention_and_deepep_replicates_shared_experts() -> None:
    spec, prec = CATALOG["kimi-k2.5"], PRECISIONS["int4"]
    tp8, g_tp = per_gpu_weight_bytes(spec, prec, Layout(1, 8, 8, 1, 1, "none"))
    dp8, g_dp = per_gpu_weight_bytes(spec, prec, Layout(1, 8, 8, 8, 8, "deepep"))
    assert g_tp["routed"] == pytest.approx(g_dp["routed"])  # experts split over all 8 either way
    h, q, kv = 7168, 1536, 576  # q_a_proj and kv_a_proj_with_mqa are ReplicatedLinear in both layouts
    rep = 61 * (h * q + h * kv) * 2
    split = 61 * (q * 64 * 192 + 512 * 64 * 256 + 64 * 128 * h) * 2
    assert g_tp["attn"] == pytest.approx(rep + split / 8)
    assert g_dp["attn"] == pytest.approx(rep + split)
    assert g_dp["shared"] == pytest.approx(8 * g_tp["shared"])
    assert dp8 > tp8


def test_group_bytes_sum_to_checkpoint() -> None:
    from moe_operator.planner.weights import summarize

    s = summarize(CATALOG["deepseek-v3"], PRECISIONS["fp8"], serve_mtp=True)
    assert sum(s.by_group.values()) == pytest.approx(s.bytes)
    assert s.checkpoint_bytes > s.bytes  # MTP copies of embed/head are not loaded


# ---- the seeds' scenario: 100 x 128k on 8xH200 / 8xB200 ------------------------------------------------------


def req(model: str, precision: str, acc: str, kv: str = "auto", **kw: object) -> PlanRequest:
    kw.setdefault("context", 131072)
    return PlanRequest(model=model, precision=precision, kv_dtype=kv, sessions=100, accelerator=acc, **kw)  # type: ignore[arg-type]


def test_kimi_k25_int4_uses_attention_dp_without_deepep_on_h200() -> None:
    """Kimi's native INT4 experts cannot run under DeepEP in SGLang 0.5.23 (DeepEPMoE.run_moe_core asserts): the
    plan is SGLang's own one-node recipe, TP8 + attention DP8 with --moe-a2a-backend none, 56 sessions per node."""
    p = plan(req("kimi-k2.5", "int4", "h200", "fp8_e4m3"))
    assert p.nodes_per_group == 1 and p.attn_dp_size == 8 and p.moe_a2a_backend == "none"
    assert p.sessions_per_group == 56 and p.total_nodes == 2 and p.objective == "min-cost"
    deepep = [a for a in p.alternatives if a["moe_a2a_backend"] == "deepep"]
    assert deepep and all(a["rule"] == "deepep-int4-w4a16" and not a["feasible"] for a in deepep)
    assert all("forward_deepgemm_contiguous is deprecated" in a["reason"] for a in deepep)
    no_dp = [a for a in p.alternatives if a["nodes_per_group"] == 1 and a["attn_dp_size"] == 1]
    assert no_dp and all(a["sessions_per_group"] < p.sessions_per_group for a in no_dp)
    # without attention DP the 35 KB/token latent sits on all 8 GPUs: one session costs 4.6 GB on every GPU
    assert p.kv_bytes_per_session_per_gpu == 35_136 * 131_072
    assert p.sessions_per_group == p.attn_dp_size * (p.max_total_tokens_per_dp // 131_072)
    assert p.groups * p.sessions_per_group >= 100


def test_seed_scenario_compare_b200_beats_h200() -> None:
    for model, prec in (("kimi-k2.5", "int4"), ("glm-5", "fp8"), ("glm-4.7", "fp8")):
        h, b = plan(req(model, prec, "h200")), plan(req(model, prec, "b200"))
        assert b.sessions_per_group / b.nodes_per_group >= h.sessions_per_group / h.nodes_per_group
    g5h, g5b = plan(req("glm-5", "fp8", "h200")), plan(req("glm-5", "fp8", "b200"))
    assert (g5h.kv_dtype, g5b.kv_dtype) == ("bfloat16", "fp8_e4m3")
    assert (g5h.kv_bytes_per_token, g5b.kv_bytes_per_token) == (100_152, 55_224)


def test_min_cost_default_beats_min_group_and_names_the_runner_up() -> None:
    """Issue 9 §2: GLM-5 FP8 (bf16 KV) at 100 x 128k on H200 took 13 one-node groups under v0.1's min-group."""
    small = plan(req("glm-5", "fp8", "h200", objective="min-group"))
    cheap = plan(req("glm-5", "fp8", "h200"))
    assert cheap.objective == "min-cost" and small.objective == "min-group"
    assert small.nodes_per_group == 1 and cheap.total_nodes == 4 < small.total_nodes
    assert cheap.cost_per_hour is not None and small.cost_per_hour is not None
    assert cheap.cost_per_hour < small.cost_per_hour
    ru = cheap.runner_up
    assert ru is not None and ru["feasible"] and ru["cost_per_hour"] >= cheap.cost_per_hour
    # v0.1's name for it still works
    assert plan(req("glm-5", "fp8", "h200", objective="min-nodes")).total_nodes == cheap.total_nodes


def test_max_sessions_per_gpu_objective_packs_densest() -> None:
    dense = plan(req("deepseek-v3", "fp8", "h200", objective="max-sessions-per-gpu"))
    for a in dense.alternatives:
        if a["feasible"]:
            gpus = a["nodes_per_group"] * 8
            assert a["sessions_per_group"] / gpus <= dense.sessions_per_group / dense.gpus_per_group


def test_multi_node_groups_need_rdma_and_respect_pool_max_nodes() -> None:
    no_rdma = plan(req("glm-5", "fp8", "h200", rdma=False))
    assert no_rdma.nodes_per_group == 1
    multi = [a for a in no_rdma.alternatives if a["nodes_per_group"] > 1]
    assert multi and all("needs RDMA" in a["reason"] for a in multi)
    capped = plan(req("glm-5", "fp8", "h200", pool_max_nodes=4))
    assert capped.total_nodes <= 4
    assert all(a["total_nodes"] <= 4 for a in capped.alternatives if a["feasible"])
    assert any("maxNodes 4" in a["reason"] for a in capped.alternatives)
    with pytest.raises(PlanError) as e:
        plan(req("glm-5", "fp8", "h200", pool_max_nodes=3))
    assert e.value.constraint == "pool_max_nodes" and "maxNodes 3" in e.value.message


def test_deepep_layouts_respect_the_dispatch_budget() -> None:
    """environ.py SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK = 128: decode graphs and the running batch of a DP
    rank stay within it (Qwen3 at 4k would otherwise plan 335 requests per rank)."""
    for model, prec, acc in (("qwen3-235b-a22b", "fp8", "h200"), ("deepseek-v3", "fp8", "b200")):
        p = plan(req(model, prec, acc, context=4096, objective="max-sessions-per-gpu", max_nodes_per_group=2))
        cands = [p.to_dict(), *p.alternatives]
        deepep = [c for c in cands if c["moe_a2a_backend"] == "deepep" and c["sessions_per_group"]]
        assert deepep
        assert all(c["sessions_per_group"] <= 128 * c["attn_dp_size"] for c in deepep)
    d = plan(req("deepseek-v3", "fp8", "h200", objective="min-group", context=4096, max_nodes_per_group=2))
    if d.moe_a2a_backend == "deepep":
        assert d.cuda_graph_max_bs <= 128 and "--cuda-graph-max-bs-decode" in d.sglang_args


def test_bf16_experts_under_deepep_get_the_deepgemm_runner() -> None:
    p = plan(req("glm-4.7", "bf16", "b200", context=32768, objective="max-sessions-per-gpu"))
    cands = [p.to_dict(), *p.alternatives]
    deepep = [c for c in cands if c["moe_a2a_backend"] == "deepep"]
    assert deepep and all(c["moe_runner_backend"] == "deep_gemm" for c in deepep)
    if p.moe_a2a_backend == "deepep":
        assert p.sglang_args[p.sglang_args.index("--moe-runner-backend") + 1] == "deep_gemm"


def test_chunked_prefill_is_per_dp_rank() -> None:
    p = plan(req("kimi-k2.5", "int4", "h200", "fp8_e4m3"))
    assert p.chunked_prefill_per_rank == 8192 // 8 == 1024 and p.prefill_chunks_per_context == 128


def test_b200_gqa_page_64() -> None:
    assert plan(req("glm-4.7", "fp8", "b200")).page_size == 64  # trtllm_mha
    assert plan(req("glm-4.7", "fp8", "h200")).page_size == 1


def test_expected_occupancy_mode_holds_more_sessions() -> None:
    worst = plan(req("kimi-k2.5", "int4", "h200", "fp8_e4m3"))
    avg = plan(req("kimi-k2.5", "int4", "h200", "fp8_e4m3", avg_context=32768))
    assert avg.mode == "expected_occupancy" and avg.sessions_per_group > worst.sessions_per_group


def test_page_size_flooring() -> None:
    p = plan(req("glm-5", "fp8", "b200"))
    assert p.page_size == 64 and p.max_total_tokens_per_dp % 64 == 0


def test_cost_fields() -> None:
    p = plan(req("kimi-k2.5", "int4", "h200", "fp8_e4m3", cost_per_node_hour=50.0))
    d = p.to_dict()
    assert d["cost_per_hour"] == 50.0 * p.total_nodes
    assert d["cost_per_session_hour"] == pytest.approx(50.0 * p.total_nodes / 100, abs=1e-4)
    nocost = plan(req("glm-5", "w8a8", "ascend-910c")).to_dict()
    assert "cost_per_hour" not in nocost


# ---- infeasible: named constraints -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "constraint", "needle"),
    [
        ({"model": "glm-5", "precision": "fp8", "acc": "ascend-910b"}, "precision_unsupported", "fp8"),
        ({"model": "deepseek-v3", "precision": "nvfp4", "acc": "h200"}, "precision_unsupported", "nvfp4"),
        ({"model": "kimi-k2", "precision": "fp8", "acc": "h200", "context": 200_000}, "context_too_long", "131,072"),
        ({"model": "glm-5", "precision": "bf16", "acc": "ascend-910b"}, "weights_fit", "4 nodes x 8 x 64.0 GiB"),
        (
            {"model": "kimi-k2.5", "precision": "int4", "acc": "h200", "max_groups": 1, "max_nodes_per_group": 1},
            "max_groups",
            "max_groups 1",
        ),
        ({"model": "kimi-k2.5", "precision": "int4", "acc": "h200", "serve_mtp": True}, "mtp", "MTP"),
    ],
)
def test_infeasible_names_constraint(kw: dict, constraint: str, needle: str) -> None:
    r = PlanRequest(
        model=kw["model"],
        precision=kw["precision"],
        accelerator=kw["acc"],
        sessions=100,
        context=kw.get("context", 131072),
        max_groups=kw.get("max_groups"),
        max_nodes_per_group=kw.get("max_nodes_per_group", 4),
        serve_mtp=kw.get("serve_mtp", False),
    )
    with pytest.raises(PlanError) as e:
        plan(r)
    assert e.value.constraint == constraint
    assert needle in e.value.message


def test_weights_fit_message_has_numbers() -> None:
    with pytest.raises(PlanError) as e:
        plan(
            PlanRequest(
                model="kimi-k2", precision="bf16", accelerator="h200", sessions=1, context=4096, max_nodes_per_group=1
            )
        )
    msg = e.value.message
    assert "1.87 TiB" in msg and "1 node x 8 x 140.4 GiB = 1.10 TiB" in msg and "mem-fraction-static" in msg


# ---- custom pools and SGLang args ----------------------------------------------------------------------------


def test_custom_accelerator_from_plain_data() -> None:
    acc = AcceleratorProfile.from_dict(
        {
            "name": "h100",
            "memory_gb": 80,
            "devices_per_node": 8,
            "resource_name": "nvidia.com/gpu",
            "vendor": "nvidia",
            "supported_precisions": ["bf16", "fp8"],
            "usable_mib": 81559,
        }
    )
    assert acc.memory_bytes == 80_000_000_000
    p = plan(PlanRequest(model="deepseek-v3", precision="fp8", accelerator=acc, sessions=10, context=32768))
    assert p.nodes_per_group >= 1 and p.accelerator == "h100"
    with pytest.raises(PlanError):
        AcceleratorProfile.from_dict({"name": "x", "memory_gb": 1, "bogus": 2})


def test_sglang_args_canonical_and_flat() -> None:
    p = plan(req("glm-4.7", "fp8", "b200"))
    assert (p.ep_size, p.moe_a2a_backend) == (8, "none")
    a = p.sglang_args
    assert all(isinstance(x, str) for x in a)
    assert a[:4] == ["--model-path", "zai-org/GLM-4.7-FP8", "--tp-size", "8"]
    flags = [x for x in a if x.startswith("--")]
    assert "--moe-a2a-backend" not in flags and "--attn-dp-size" not in flags
    for f in (
        "--ep-size",
        "--kv-cache-dtype",
        "--mem-fraction-static",
        "--context-length",
        "--max-running-requests",
    ):
        assert f in flags
    kimi = plan(req("kimi-k2.5", "int4", "h200", "fp8_e4m3")).sglang_args
    for f in ("--attn-dp-size", "--trust-remote-code", "--tool-call-parser", "--reasoning-parser"):
        assert f in kimi
    assert "--moe-a2a-backend" not in kimi
    for banned in (
        "--tp",
        "--dp",
        "--enable-dp-attention",
        "--node-rank",
        "--nnodes",
        "--dist-init-addr",
        "--host",
        "--port",
        "--enable-ep-moe",
        "--cuda-graph-max-bs",
    ):
        assert banned not in flags
    assert a[a.index("--mem-fraction-static") + 1] == f"{p.mem_fraction_static:.3f}"
    asc = plan(req("glm-5", "w8a8", "ascend-910c")).sglang_args
    assert asc[-4:] == ["--device", "npu", "--attention-backend", "ascend"]
    assert asc[asc.index("--quantization") + 1] == "modelslim"
    glm = plan(req("glm-5", "fp8", "h200")).sglang_args
    assert glm[1] == "zai-org/GLM-5-FP8" and "--trust-remote-code" not in glm
    assert glm[glm.index("--tool-call-parser") + 1] == "glm47"


def test_plan_to_dict_stable_fields() -> None:
    d = plan(req("glm-4.7", "bf16", "h200")).to_dict()
    for k in (
        "model",
        "precision",
        "kv_dtype",
        "accelerator",
        "weights_bytes",
        "kv_bytes_per_token_model",
        "kv_bytes_per_token",
        "kv_bytes_per_session",
        "nodes_per_group",
        "gpus_per_group",
        "tp_size",
        "ep_size",
        "attn_dp_size",
        "mem_fraction_static",
        "max_total_tokens_per_dp",
        "sessions_per_group",
        "groups",
        "sglang_args",
        "alternatives",
        "cost_per_hour",
        "cost_per_session_hour",
    ):
        assert k in d, k
    assert d["kv_bytes_per_token"] == 47_104 and d["kv_bytes_per_token_model"] == 376_832
    assert all("reason" in a and "layout" in a for a in d["alternatives"])
