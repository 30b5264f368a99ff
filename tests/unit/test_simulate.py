"""The offline autoscaling simulator (moe_sim.offline) and `moe-operator simulate`."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from moe_sim import kvcache
from moe_sim import offline as sim
from moe_sim import workloads as wl
from moe_sim.offline import Request, SimConfig, Static, load_trace, simulate


def _mooncake(tmp_path, rows):
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(p)


def test_load_traces_and_scales(tmp_path):
    mc = _mooncake(tmp_path, [{"timestamp": 1000, "input_length": 600, "output_length": 10, "hash_ids": [1, 2]},
                              {"timestamp": 3000, "input_length": 100, "output_length": 5, "hash_ids": [7]}])
    reqs = load_trace(mc, rate_scale=2.0)
    assert [r.arrival for r in reqs] == [0.0, 1.0]  # from the first request, divided by 2
    assert reqs[0].blocks == (1, 2) and sim.block_sizes(reqs[0]) == [512, 88]
    two = load_trace(mc, load_scale=2)
    assert len(two) == 4
    assert {r.blocks for r in two} == {(1, 2), (7,), (9, 10), (15,)}  # copies never share prefixes
    az = tmp_path / "a.csv"
    az.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
                  "2023-11-16 18:15:50.9951690,396,109\n")
    reqs = load_trace(str(az))
    assert reqs[1].arrival == pytest.approx(4.314579, abs=1e-5) and reqs[1].blocks is None


def test_a_trace_whose_blocks_do_not_cover_its_prompt_is_refused(tmp_path):
    # 3 blocks of 512 hold at most 1536 tokens: block_sizes would give the last block a negative size (KV out of
    # nothing); 6 blocks for 600 tokens would invent prompt tokens
    for n_in, ids in ((3000, [1, 2, 3]), (600, [1, 2, 3, 4, 5, 6])):
        path = _mooncake(tmp_path, [{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [9]},
                                    {"timestamp": 1, "input_length": n_in, "output_length": 1, "hash_ids": ids}])
        with pytest.raises(ValueError, match=rf"t.jsonl:2: {len(ids)} hash_ids for input_length {n_in}.*"
                                             rf"ceil\({n_in}/512\) = {-(-n_in // 512)}"):
            load_trace(path)


def _cfg(**kw):
    return SimConfig(dp_ranks=2, rank_tokens=10_000, warmup_s=0.0, **kw)


def test_kv_exhaustion_is_measured_and_cold_start_delays_capacity():
    # 4 requests of 9,000 tokens each arrive together; 1 group of 2 ranks holds 2 at a time for 10 s (decode 10/s)
    reqs = [Request(0.0, 8_900, 100) for _ in range(4)]
    r = simulate(reqs, _cfg(decode_tps=10.0, prefill_tps=1e12), Static(1))
    assert r.completed == 4 and r.requests_waited == 2
    assert r.kv_exhaustion_seconds == pytest.approx(10.0)
    assert r.queue_wait_max_s == pytest.approx(10.0)
    r = simulate(reqs, _cfg(decode_tps=10.0, prefill_tps=1e12), Static(2))
    assert r.kv_exhaustion_seconds == 0 and r.requests_waited == 0


def test_group_hours_and_oracle_never_waits_on_a_step():
    reqs = [Request(float(t), 4_000, 200) for t in range(0, 3600, 2)]  # 1 req / 2 s, 10 s each: ~5 in flight
    reqs += [Request(1800.0 + t / 4, 4_000, 200) for t in range(0, 1200)]  # +4 req/s for 5 min
    reqs.sort(key=lambda r: r.arrival)
    cfg = SimConfig(dp_ranks=2, rank_tokens=30_000, cold_start_s=120.0, decode_tps=20.0, warmup_s=60.0)
    res = {p: simulate(reqs, cfg, sim.make_policy(p, reqs, cfg)) for p in sim.POLICIES}
    assert res["static"].group_hours == pytest.approx(res["static"].peak_groups * reqs[-1].arrival / 3600)
    assert res["oracle"].kv_exhaustion_seconds == 0
    assert res["oracle"].group_hours < res["static"].group_hours
    assert res["moe"].group_hours < res["keda2"].group_hours  # keda2's queue trigger overshoots to the max
    assert all(r.completed == len(reqs) for r in res.values())


def test_cli_json(tmp_path, capsys):
    from moe_operator.cli import main

    rows = [{"timestamp": i * 500, "input_length": 1500, "output_length": 50, "hash_ids": [0, i + 1, i + 2]}
            for i in range(200)]
    path = _mooncake(tmp_path, rows)
    assert main(["simulate", "--trace", path, "--model", "kimi-k2.5", "--precision", "int4", "--accelerator",
                 "h200", "--policy", "keda", "--cold-start", "60", "-o", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("group_hours", "kv_exhaustion_seconds", "queue_wait_p50_s", "queue_wait_p99_s", "scale_events",
              "peak_groups", "requests"):
        assert k in out
    assert out["requests"] == 200
    p = out["parameters"]
    assert p["cold_start_s"] == 60 and p["decode_tps"] == sim.DEFAULT_DECODE_TPS and p["group"]["gpus"] == 8
    assert main(["simulate", "--trace", str(tmp_path / "missing"), "--model", "kimi-k2.5", "--precision", "int4",
                 "--accelerator", "h200"]) == 2


def test_cli_stream_replays_the_workload_as_its_list(capsys):
    # --stream generates while it replays (a week does not fit as a list): the same result as the list, planned
    # for the same context; policies that replay the whole trace more than once are refused with the reason
    from moe_operator.cli import main

    base = ["simulate", "--workload", "agents", "--workload-param", "peak_sessions_per_min=4",
            "--workload-param", "plateau_s=600", "--workload-param", "context_limit=32768", "--model", "kimi-k2.5",
            "--precision", "int4", "--accelerator", "h200", "--context", "32768", "--cold-start", "60", "-o", "json"]
    outs = []
    for extra in ([], ["--stream"]):
        assert main(base + extra) == 0
        out = json.loads(capsys.readouterr().out)
        out.pop("wall_s")
        outs.append(out)
    assert outs[1]["parameters"].pop("stream") is True and outs[0]["parameters"].pop("stream") is False
    assert outs[0] == outs[1] and outs[0]["requests"] > 100
    assert main(base + ["--stream", "--policy", "oracle"]) == 2
    assert "--policy oracle/static and --pd replay the whole trace" in capsys.readouterr().err
    assert main(base[:1] + ["--trace", "x.jsonl"] + base[5 + 4:] + ["--stream"]) == 2
    assert "--stream needs --workload" in capsys.readouterr().err


def test_cli_import_is_light():
    import subprocess
    import sys

    code = ("import sys, moe_sim.cli as c; "
            "heavy = ('moe_operator.planner', 'moe_sim.offline'); "
            "print(any(m.startswith(heavy) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _step_trace():
    reqs = [Request(float(t), 4_000, 200) for t in range(0, 3600, 2)]  # ~5 in flight
    reqs += [Request(1800.0 + t / 4, 4_000, 200) for t in range(0, 1200)]  # +4 req/s for 5 min
    reqs.sort(key=lambda r: r.arrival)
    return reqs, SimConfig(dp_ranks=2, rank_tokens=30_000, cold_start_s=120.0, decode_tps=20.0, warmup_s=60.0)


def test_the_oracle_is_the_cheapest_zero_exhaustion_schedule_it_searches():
    reqs, cfg = _step_trace()
    curve = sim.demand_curve(reqs, cfg.decode_tps, cfg.prefill_tps, sim.ORACLE_SLOT_S)
    best = sim.cheapest_oracle(reqs, cfg, curve)
    res = simulate(reqs, cfg, best)
    assert res.kv_exhaustion_seconds_after_warmup == 0
    # every cheaper sizing in the searched family exhausts (that is why it was not chosen)
    for u in (x for x in sim.ORACLE_UTILIZATIONS if x > best.utilization):
        cheaper = simulate(reqs, cfg, sim.oracle_at(curve, cfg, u))
        assert cheaper.kv_exhaustion_seconds_after_warmup > 0, u
    # and it is cheaper than sizing at the 0.7 target, which v0.1 used
    assert best.utilization >= 0.7
    assert res.group_hours <= simulate(reqs, cfg, sim.oracle_at(curve, cfg, 0.7)).group_hours


def test_static_is_the_smallest_fleet_without_exhaustion():
    reqs, cfg = _step_trace()
    st = sim.smallest_static(reqs, cfg)
    assert simulate(reqs, cfg, st).kv_exhaustion_seconds_after_warmup == 0
    assert simulate(reqs, cfg, Static(st.groups - 1)).kv_exhaustion_seconds_after_warmup > 0


def test_no_policy_but_the_oracle_starts_from_the_future():
    # quiet for the first 10 minutes, then a burst: the oracle starts warm for it, the others from what the warm-up
    # showed (one group), so they must scale on their own
    reqs = [Request(float(t), 2_000, 100) for t in range(0, 3600, 10)]
    reqs += [Request(600.0 + t / 8, 8_000, 200) for t in range(0, 2400)]
    reqs.sort(key=lambda r: r.arrival)
    cfg = SimConfig(dp_ranks=2, rank_tokens=30_000, cold_start_s=600.0, decode_tps=20.0, warmup_s=120.0)
    pols = {p: sim.make_policy(p, reqs, cfg) for p in ("moe", "hpa", "keda", "keda2", "oracle")}
    assert {p: pols[p].initial() for p in ("moe", "hpa", "keda", "keda2")} == dict.fromkeys(
        ("moe", "hpa", "keda", "keda2"), 1)
    assert pols["oracle"].initial() > 1  # its foresight covers the burst one cold start ahead


def test_keda_queries_every_sync_and_keda2_adds_a_queue_trigger():
    from moe_operator.autoscale.law import GroupSample

    k, k2 = sim.KEDA(0.7, 1, 64, 2), sim.KEDA2(0.7, 1, 64, 2)
    quiet = sim.View(0.0, [GroupSample(700_000, 1_000_000, 5, 0)] * 2, 2, 0, 1_000_000)
    assert k.decide(quiet) == 2 and k2.decide(quiet) == 2
    # 15 s later KV is at 0.9 per group: the default KEDA sees it at once (no 30 s metric cache)
    busy = sim.View(15.0, [GroupSample(900_000, 1_000_000, 5, 0)] * 2, 2, 0, 1_000_000)
    assert k.decide(busy) == 3
    # 40 requests queued with little KV in use: only the queue trigger sees it (5 queued per group)
    queued = sim.View(30.0, [GroupSample(300_000, 1_000_000, 5, 40), GroupSample(300_000, 1_000_000, 5, 0)], 2,
                      0, 1_000_000)
    assert sim.KEDA(0.7, 1, 64, 2).decide(queued) == 1  # KV in use alone says 0.6 groups: it even scales down
    assert sim.KEDA2(0.7, 1, 64, 2).decide(queued) == 6  # ceil(40 / 5) = 8, HPA's scale-up limit 2 + 4 = 6


def test_a_streamed_trace_replays_exactly_as_its_list():
    # simulate() reads an iterator one request ahead and keeps only the unfinished requests (a week does not fit
    # as a list): the end of the trace, and with it the last tick and sample, is known only when it is read
    w = wl.AgentWorkload(peak_sessions_per_min=10, ramp_up_s=600, plateau_s=900, ramp_down_s=600, context_limit=24_576,
                         seed=5)
    reqs = wl.generate(w)
    cfg = SimConfig(dp_ranks=2, rank_tokens=60_000, cold_start_s=120.0)
    for policy in ("moe", "keda2"):
        a = asdict(simulate(reqs, cfg, sim.make_policy(policy, reqs, cfg)))
        b = asdict(simulate(wl.stream(w), cfg, sim.make_policy(policy, reqs, cfg)))
        a.pop("wall_s"), b.pop("wall_s")
        assert a == b, policy
        assert a["timeline"][-1][0] <= a["span_s"] == reqs[-1].arrival
    empty = simulate(iter(()), cfg, sim.Static(1))
    assert (empty.requests, empty.span_s, empty.timeline) == (0, 0.0, [(0.0, 1, 0)])
    with pytest.raises(ValueError, match="sorted by arrival: request 1"):
        simulate(iter([reqs[1], reqs[0]]), cfg, sim.Static(1))


def test_a_trace_keyed_by_runs_replays_exactly_as_its_blocks(monkeypatch):
    # Request.runs: the generator's runs of blocks used only whole; the KV replay keys by them (O(runs) per request).
    # The same trace as plain Mooncake blocks must replay identically, tick for tick, through evictions (a run
    # partly evicted block by block is unreachable, as the whole run is): every field of the result but wall time.
    w = wl.AgentWorkload(peak_sessions_per_min=10, ramp_up_s=600, plateau_s=900, ramp_down_s=600, context_limit=24_576,
                         swarm_prob=0.05, swarm_min=3, swarm_max=6, seed=5)
    reqs = wl.generate(w)
    plain = [Request(r.arrival, r.input_len, r.output_len, r.blocks) for r in reqs]
    assert all(p.runs is None and p == r for p, r in zip(plain, reqs, strict=True))
    assert sum(len(r.runs[0]) for r in reqs) * 4 < sum(len(r.blocks) for r in reqs)  # runs are the cheaper key
    evicted = []

    class Counting(kvcache.KVPool):
        __slots__ = ()

        def admit(self, rid, keys, sizes, private, output, decode_start=float("inf"), k=-1):
            new = sum(1 for key in keys if key not in self.size)
            before = len(self.size)
            got = super().admit(rid, keys, sizes, private, output, decode_start, k)
            evicted.append(before + new - len(self.size))
            return got

    monkeypatch.setattr(sim, "KVPool", Counting)
    cfg = SimConfig(dp_ranks=2, rank_tokens=60_000, cold_start_s=120.0)
    for policy in ("moe", "hpa"):
        a = asdict(simulate(reqs, cfg, sim.make_policy(policy, reqs, cfg)))
        b = asdict(simulate(plain, cfg, sim.make_policy(policy, plain, cfg)))
        a.pop("wall_s"), b.pop("wall_s")
        assert a == b, policy
        assert 0 < a["cache_hit_rate"] < 1
    assert sum(evicted) > 1000  # the caches were full: eviction ran, partial runs included
