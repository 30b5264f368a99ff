"""moe_sim.pd: the compute-aware aggregated vs PD replay (small, fast)."""

from __future__ import annotations

import json

from moe_sim import pd
from moe_sim.offline import Request

CFG = pd.PDConfig(model="kimi-k2.5", accelerator="h200", precision="int4", gpus=8, group_kv_tokens=2_000_000,
                  ttft_slo_s=5.0, itl_slo_s=0.05, max_groups=6, slice_s=0.25)


def steady(n: int = 120, gap: float = 1.0, prompt: int = 8000, out: int = 200) -> list[Request]:
    return [Request(i * gap, prompt, out) for i in range(n)]


def test_uncached_tokens_uses_leading_blocks_seen_before() -> None:
    a = Request(0.0, 1100, 10, (1, 2, 3))
    b = Request(1.0, 1300, 10, (1, 2, 9))  # shares the first two 512-token blocks
    c = Request(2.0, 700, 10)  # no prefix information
    assert pd.uncached_tokens([a, b, c]) == [1100, 1300 - 1024, 700]


def test_single_request_latencies_follow_the_compute_model() -> None:
    from moe_operator.planner import throughput as tp

    r = [Request(0.0, 8000, 101)]
    agg = pd.replay(r, CFG, "aggregated", 0, 1)
    dis = pd.replay(r, CFG, "pd", 1, 1)
    pre = tp.prefill_seconds("kimi-k2.5", "h200", 8, "int4", 8000)
    assert agg.completed == dis.completed == 1
    assert abs(agg.ttft_p50_s - pre) < 1e-6
    xfer = tp.kv_transfer_seconds(8000, tp.kv_bytes_per_token("kimi-k2.5", "h200", "fp8_e4m3"), CFG.link_bytes_per_s)
    assert abs(dis.ttft_p50_s - (pre + xfer)) < 1e-6
    step = tp.decode_step_seconds("kimi-k2.5", "h200", 8, "int4", 1, 8000, "fp8_e4m3")
    # decode starts at the next slice boundary: the average ITL is within one slice / 100 tokens of the step time
    for res in (agg, dis):
        assert step * 0.9 <= res.itl_p50_s <= step + CFG.slice_s / 100 + 1e-3
        assert res.goodput == 1.0


def test_prefill_stalls_decode_in_aggregated_mode_only() -> None:
    # long prompts arriving while others decode: aggregated ITL carries the chunked prefill, PD's does not (the
    # router alternates the two aggregated groups, so each prefills a 30k prompt every 2 s)
    reqs = steady(n=60, gap=1.0, prompt=30000, out=300)
    agg = pd.replay(reqs, CFG, "aggregated", 0, 2)
    dis = pd.replay(reqs, CFG, "pd", 1, 1)
    assert agg.completed == dis.completed == 60
    assert agg.itl_p99_s > 1.5 * dis.itl_p99_s


def test_more_prefill_groups_cut_ttft_and_gpu_hours_count_ramp_and_drain() -> None:
    reqs = steady(n=100, gap=0.5, prompt=20000, out=50)
    one = pd.replay(reqs, CFG, "pd", 1, 1)
    three = pd.replay(reqs, CFG, "pd", 3, 1)
    assert three.ttft_p99_s < one.ttft_p99_s
    assert three.gpus == 32
    assert three.gpu_hours >= 32 * (CFG.cold_start_s + reqs[-1].arrival) / 3600
    assert abs(three.gpu_hours - 32 * (CFG.cold_start_s + three.end_s) / 3600) < 1e-9


def test_kv_admission_waits_and_oversized_requests_are_rejected() -> None:
    cfg = pd.PDConfig(**{**CFG.__dict__, "group_kv_tokens": 20_000})
    reqs = [Request(0.0, 15000, 100), Request(0.1, 15000, 100), Request(0.2, 30000, 10)]
    res = pd.replay(reqs, cfg, "aggregated", 0, 1)
    assert res.rejected == 1 and res.completed == 2
    assert res.ttft_p99_s > res.ttft_p50_s  # the second waited for the first one's KV


def test_goodput_follows_dynamo_definition() -> None:
    # an ITL SLO below the step time: nobody with >1 output token is good; output-1 requests skip the ITL check
    cfg = pd.PDConfig(**{**CFG.__dict__, "itl_slo_s": 1e-4})
    res = pd.replay([Request(0.0, 1000, 50), Request(0.0, 1000, 1)], cfg, "pd", 1, 1)
    assert res.goodput == 0.5


def test_smallest_fleets_meet_the_target() -> None:
    reqs = steady(n=150, gap=0.4, prompt=12000, out=150)
    res = pd.compare(reqs, CFG)
    agg, dis = res["aggregated"], res["pd"]
    assert agg.goodput >= CFG.goodput_target and dis.goodput >= CFG.goodput_target
    assert agg.searched and dis.searched
    if agg.decode_groups > 1:  # one fewer group misses the target
        assert pd.replay(reqs, CFG, "aggregated", 0, agg.decode_groups - 1).goodput < CFG.goodput_target
    assert dis.prefill_groups >= 1 and dis.decode_groups >= 1


def test_cli_pd_prints_both_modes(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from moe_operator.cli import main

    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"timestamp": i * 800, "input_length": 4000, "output_length": 80,
                                        "hash_ids": list(range(i * 8, i * 8 + 8))}) + "\n" for i in range(40)))
    args = ["simulate", "--pd", "--trace", str(path), "--model", "kimi-k2.5", "--precision", "int4",
            "--accelerator", "h200", "--max-groups", "4", "--ttft-slo", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "aggregated" in out and "PD" in out and "GPU-hours" in out
    assert main([*args, "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"aggregated", "pd", "parameters"}
    assert data["pd"]["prefill_groups"] >= 1


# -- per-role autoscaling with the operator's own laws (autoscale/law.py, autoscale/prefill.py) ------------------

ACFG = pd.PDConfig(**{**CFG.__dict__, "cold_start_s": 60.0, "max_groups": 8, "slice_s": 0.5})


def burst(quiet: float = 1800.0) -> list[Request]:
    """Light steady load, a 4-minute prompt burst (long uncached prompts) at t = 300 s, then light load again."""
    reqs = [Request(i * 4.0, 3000, 60) for i in range(int((600 + quiet) / 4))]
    reqs += [Request(300.0 + i * 0.5, 40000, 20) for i in range(480)]
    return sorted(reqs, key=lambda r: r.arrival)


def _scaling(reqs: list[Request], cfg: pd.PDConfig, **kw: object) -> pd.Autoscale:
    return pd.autoscale_params(reqs, cfg, None, 1, 1, stabilization_s=120.0, prefill_stabilization_s=60.0,
                               **kw)  # type: ignore[arg-type]


def test_autoscale_params_follow_prefill_step() -> None:
    # prefill_step.prefill_params: the backlog is spread over max(TTFT, cold start) with the cold start measured
    reqs = burst(quiet=300.0)
    sc = _scaling(reqs, ACFG)
    assert sc.prefill is not None
    assert sc.prefill.cold_start_seconds == ACFG.cold_start_s
    assert sc.prefill.ttft_seconds == ACFG.ttft_slo_s
    assert sc.law.cold_start_s == ACFG.cold_start_s


def test_autoscaled_prefill_grows_on_a_prompt_burst_and_shrinks_after_it() -> None:
    # the operator's drain rule (prefill_step: a drain is cancelled only when the law's need is back at the current
    # count): after the burst the pool shrinks, one drained group per stabilization window
    reqs = burst()
    res = pd.replay(reqs, ACFG, "pd", 0, 0, None, _scaling(reqs, ACFG))
    assert res.autoscaled and res.completed == len(reqs)
    before = [n for t, n, *_ in res.timeline if t < 300]
    assert max(before) == 1
    assert res.prefill_groups >= 3  # the peak, during the burst
    assert res.timeline[-1][1] == 1 < res.prefill_groups  # shrank after it, back to minGroups
    after = [n for t, n, *_ in res.timeline if t > 300 + 240 + ACFG.cold_start_s]
    assert after == sorted(after, reverse=True)  # the quiet tail only shrinks
    # a drain: the group left routing, then was released once idle (a later step); none was cancelled (the law
    # holds at desired == current right after starting a drain, which is no reason to cancel)
    leave = [t for t, role, why in res.reasons if role == "prefill" and "leaves routing" in why]
    gone = [t for t, role, why in res.reasons if role == "prefill" and "drained" in why]
    assert leave and gone and min(gone) > min(leave)
    assert len(gone) == res.prefill_groups - res.timeline[-1][1]
    assert not [why for _, role, why in res.reasons if role == "prefill" and "cancelled" in why]
    # GPU-hours count the groups while they start and drain: more than the smallest fleet all along
    assert res.gpu_hours > 2 * ACFG.gpus * (ACFG.cold_start_s + reqs[-1].arrival) / 3600


def test_autoscaled_decode_grows_with_kv() -> None:
    cfg = pd.PDConfig(**{**ACFG.__dict__, "group_kv_tokens": 400_000})
    reqs = [Request(i * 0.5, 20000, 400) for i in range(1200)]  # ~0.6 groups of KV after a minute, then more
    res = pd.replay(reqs, cfg, "pd", 0, 0, None, _scaling(reqs, cfg))
    assert res.decode_groups >= 2
    grew = [t for t, role, why in res.reasons if role == "decode" and "->" in why]
    assert grew
    agg = pd.replay(reqs, cfg, "aggregated", 0, 0, None, _scaling(reqs, cfg))
    assert agg.decode_groups >= 2 and agg.prefill_groups == 0


def test_autoscaled_replay_is_deterministic_and_static_is_unchanged() -> None:
    reqs = burst(quiet=300.0)
    a = pd.replay(reqs, ACFG, "pd", 0, 0, None, _scaling(reqs, ACFG))
    b = pd.replay(reqs, ACFG, "pd", 0, 0, None, _scaling(reqs, ACFG))
    a.wall_s = b.wall_s = 0.0
    assert a == b
    s1 = pd.replay(reqs, ACFG, "pd", 2, 1)
    assert not s1.autoscaled and s1.prefill_groups == 2 and s1.decode_groups == 1
    assert abs(s1.gpu_hours - 24 * (ACFG.cold_start_s + max(s1.end_s, reqs[-1].arrival)) / 3600) < 1e-9


def test_cli_pd_autoscale_prints_four_modes(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from moe_operator.cli import main

    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"timestamp": i * 800, "input_length": 4000, "output_length": 80,
                                        "hash_ids": list(range(i * 8, i * 8 + 8))}) + "\n" for i in range(40)))
    args = ["simulate", "--pd", "--autoscale", "--trace", str(path), "--model", "kimi-k2.5", "--precision", "int4",
            "--accelerator", "h200", "--max-groups", "4", "--ttft-slo", "5", "--cold-start", "60"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "aggregated-auto" in out and "PD-auto" in out
    assert main([*args, "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"aggregated", "pd", "aggregated_autoscaled", "pd_autoscaled"}
    assert data["pd_autoscaled"]["autoscaled"] and data["pd_autoscaled"]["timeline"]


def test_requests_without_a_prefix_go_to_the_least_loaded_group() -> None:
    # SMG cache_aware: no match above cache_threshold -> the worker with the fewest requests in flight; a static fleet
    # shares uneven arrivals evenly (a float-residue fault once sent every arrival to one group)
    import random

    rnd = random.Random(7)
    reqs = [Request(i * 0.5, rnd.randint(2000, 10000), 2000) for i in range(400)]
    four = pd.replay(reqs, CFG, "aggregated", 0, 4)
    assert four.completed == 400 and sum(four.admitted_per_group) == 400
    assert max(four.admitted_per_group) <= 1.5 * min(four.admitted_per_group), four.admitted_per_group


def _sessions(n_sessions: int, turns: int, gap: float, ctx_blocks: int, grow: int, out: int) -> list[Request]:
    """Sessions whose every turn repeats the last turn's context and adds `grow` blocks (ids unique per session)."""
    reqs = []
    for s in range(n_sessions):
        blocks: list[int] = [s * 100_000 + b for b in range(ctx_blocks)]
        for t in range(turns):
            reqs.append(Request(s * 0.1 + t * gap, len(blocks) * 512, out, tuple(blocks)))
            blocks = blocks + [s * 100_000 + len(blocks) + b for b in range(grow)]
    return sorted(reqs, key=lambda r: r.arrival)


def test_cache_aware_routing_pins_a_session_to_the_group_holding_its_prefix() -> None:
    reqs = _sessions(n_sessions=4, turns=6, gap=30.0, ctx_blocks=40, grow=4, out=50)
    res = pd.replay(reqs, CFG, "aggregated", 0, 4)
    assert res.completed == len(reqs)
    # every session's first turn goes to an idle group (least load), its later turns follow their prefix there
    assert res.admitted_per_group == [6, 6, 6, 6]
    # each later turn reuses all but its 4 new blocks: 1 - (first turns + new blocks) / all prompt tokens
    prompt = sum(r.input_len for r in reqs)
    assert abs(res.cache_hit - (1 - (4 * 40 + 4 * 5 * 4) * 512 / prompt)) < 1e-9


def test_spill_gate_sends_a_matching_request_to_the_least_loaded_group() -> None:
    # SMG 1.13.0's spill gate: a matched worker is skipped when its load exceeds the fleet mean by the margin
    # (min(64, max(4, 2 sqrt(mean)))) AND 1.5x the mean. Long requests of one prefix (none finishes within the second
    # they arrive in, and no load poll falls inside it): group 0 takes 9 (at 9 in flight: 9 > 4.5 + 4.24), the 10th
    # goes to group 1; from then on both trees hold the prefix and the less loaded holder wins: 50 / 50.
    # (SMG <= 1.9's fleet-wide max - min > 64 rule split the same 100 requests 65 / 35.)
    def run(n: int) -> list[int]:
        reqs = [Request(i * 0.01, 40 * 512, 4000, tuple(range(40))) for i in range(n)]
        res = pd.replay(reqs, CFG, "aggregated", 0, 2)
        assert res.completed == n
        return res.admitted_per_group

    assert run(9) == [9, 0]
    assert run(10) == [9, 1]
    assert run(100) == [50, 50]


def test_with_dp_aware_the_router_balances_dp_ranks_not_groups() -> None:
    from dataclasses import replace

    # the operator renders --dp-aware for attention-DP plans: SMG's workers are the groups' DP ranks (2 per group
    # here: g0r0, g0r1, g1r0, g1r1), each with its own load and tree, and the spill gate compares a rank with the
    # mean rank. g0r0 takes 6 (6 > 1.5 + 4), the 7th spills to g0r1, which catches up; at 9 + 9 g0r0 spills to g1r0,
    # which catches up; then three ranks at x and one at 0 never spill again (x > 1.5 x 0.75x fails), so the three
    # share the rest in turn: 34 + 33 on group 0, 33 on group 1, where per group the same requests split 50 / 50.
    reqs = [Request(i * 0.01, 40 * 512, 4000, tuple(range(40))) for i in range(100)]
    res = pd.replay(reqs, replace(CFG, router_ranks=2), "aggregated", 0, 2)
    assert res.completed == 100
    assert res.admitted_per_group == [67, 33]


def test_overload_protection_leaves_a_group_with_a_full_kv_out() -> None:
    from dataclasses import replace

    # 25k-token groups; 9 requests of one 20k-token prefix pin to group 0 (the spill gate lets 9 through, above),
    # which runs one at a time (the prefix + 4k output fill it). At the load poll at t = 10 s its KV token usage is
    # >= 0.8, so SMG leaves it out and the second burst all goes to group 1: 9 / 20. Without the protection the
    # second burst would spill once, fill group 1 up to 9 and then alternate: 15 / 14.
    first = [Request(i * 0.01, 40 * 512, 4000, tuple(range(40))) for i in range(9)]
    second = [Request(10.5 + i * 0.01, 40 * 512, 4000, tuple(range(40))) for i in range(20)]
    res = pd.replay(first + second, replace(CFG, group_kv_tokens=25_000), "aggregated", 0, 2)
    assert res.completed == 29
    assert res.admitted_per_group == [9, 20]


def test_sglang_admits_on_an_estimate_and_retracts_when_the_outputs_outgrow_the_pool() -> None:
    from dataclasses import replace

    # 40 requests of 2k prompt + 4k output in a 150k-token pool: the whole outputs (240k) do not fit, SGLang's
    # estimate (new_token_ratio 0.7 of the running requests' outputs, decaying) admits more than fit, decoding runs
    # the pool out and the scheduler retracts the youngest; every request still completes
    cfg = replace(CFG, group_kv_tokens=150_000)
    reqs = [Request(i * 0.05, 2000, 4000) for i in range(40)]
    res = pd.replay(reqs, cfg, "aggregated", 0, 1)
    assert res.completed == 40 and res.retracted > 0
    whole = pd.replay(reqs, replace(cfg, group_kv_tokens=40 * 6000), "aggregated", 0, 1)
    assert whole.retracted == 0 and whole.completed == 40
    # a retracted request is prefilled again and decodes its rest later: the small pool finishes later
    assert res.end_s > whole.end_s


def test_latency_targets_make_the_law_scale_on_compute() -> None:
    # KV is never short here (2M tokens per group, < 0.5M in use); the prefill chunks stall decode on one group
    from dataclasses import replace

    cfg = replace(CFG, cold_start_s=60.0)
    reqs = steady(n=2400, gap=0.25, prompt=6000, out=200)
    kv_only = pd.replay(reqs, cfg, "aggregated", 0, 0, None, pd.autoscale_params(reqs, cfg, None, 1, 1))
    lat = pd.replay(reqs, cfg, "aggregated", 0, 0, None, pd.autoscale_params(reqs, cfg, None, 1, 1, latency=True))
    assert lat.decode_groups > kv_only.decode_groups
    assert lat.goodput > kv_only.goodput + 0.2
    assert any("latency" in why for _, _, why in lat.reasons)
