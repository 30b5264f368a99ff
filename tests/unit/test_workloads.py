"""The agent-session workload generator (moe_sim.workloads): Mooncake-consistent prefix ids, growing contexts,
the arrival profile, swarms, and a JSONL that the trace loader reads back."""

from __future__ import annotations

import math

from moe_sim import workloads as wl
from moe_sim.offline import BLOCK_TOKENS, load_trace

SMALL = wl.AgentWorkload(peak_sessions_per_min=6, ramp_up_s=300, plateau_s=600, ramp_down_s=300, seed=7)


def test_requests_carry_exactly_their_prompt_in_blocks_and_fit_the_context():
    reqs = wl.generate(SMALL)
    assert len(reqs) > 200
    assert all(r.blocks is not None and len(r.blocks) == math.ceil(r.input_len / BLOCK_TOKENS) for r in reqs)
    assert all(r.input_len + r.output_len <= SMALL.context_limit for r in reqs)
    assert [r.arrival for r in reqs] == sorted(r.arrival for r in reqs)
    assert wl.generate(SMALL) == reqs  # seeded: the same workload every time


def test_runs_are_used_whole_and_expand_to_the_blocks():
    # Request.runs is what the KV replay keys by: a run (its first id, its tokens) must mean the same blocks in
    # every request that holds it, and the blocks of a run must never appear outside it
    reqs = wl.generate(wl.with_overrides(SMALL, swarm_prob=0.1, swarm_min=3, swarm_max=5))
    run_of: dict[int, tuple[int, int]] = {}
    for r in reqs:
        keys, sizes = r.runs
        assert sum(sizes) == r.input_len and all(s % BLOCK_TOKENS == 0 for s in sizes[:-1])
        at = 0
        for k, s in zip(keys, sizes, strict=True):
            n = -(-s // BLOCK_TOKENS)
            assert r.blocks[at:at + n] == tuple(range(k, k + n))
            for b in r.blocks[at:at + n]:
                assert run_of.setdefault(b, (k, s)) == (k, s)
            at += n
        assert at == len(r.blocks)


def test_a_turn_adds_one_run_of_full_blocks():
    # the appends between two requests of a context (output, tool result, message) are one run: every later
    # request holds all of them; a run per append (the generator before 2026-12-03) doubles the replay's keys
    reqs = wl.generate(SMALL)
    by_full = {r.runs[0][:-1] if r.input_len % BLOCK_TOKENS else r.runs[0]: r for r in reqs}
    nxt = 0
    for r in reqs:
        keys = r.runs[0] if r.input_len % BLOCK_TOKENS == 0 else r.runs[0][:-1]
        for cut in range(len(keys) - 1, 0, -1):  # the longest earlier turn this one extends
            if keys[:cut] in by_full and by_full[keys[:cut]].arrival < r.arrival:
                assert cut == len(keys) - 1, (len(keys), cut)  # one new run since the previous turn
                nxt += 1
                break
    assert nxt > len(reqs) // 2


def test_the_stream_is_the_trace_one_request_at_a_time():
    for w in (SMALL, wl.with_overrides(SMALL, swarm_prob=0.2, swarm_min=3, swarm_max=8)):
        reqs = wl.generate(w)
        it = wl.stream(w)
        assert iter(it) is it and not isinstance(it, list)
        assert list(it) == reqs
        assert [r.runs for r in wl.stream(w)] == [r.runs for r in reqs]


def test_a_session_grows_turn_by_turn_over_its_own_prefix():
    reqs = wl.generate(SMALL)
    # the system prefix is shared by every session
    sys_blocks = SMALL.system_prefix_tokens // BLOCK_TOKENS
    assert len({r.blocks[:sys_blocks] for r in reqs}) == 1
    # a request whose full blocks extend an earlier request's full blocks is that session's next turn
    by_prefix = {r.blocks[: r.input_len // BLOCK_TOKENS]: r for r in reqs}
    grown = 0
    for r in reqs:
        full = r.input_len // BLOCK_TOKENS
        for k in range(full - 1, sys_blocks, -1):
            prev = by_prefix.get(r.blocks[:k])
            if prev is not None and prev is not r:
                assert prev.arrival < r.arrival and prev.input_len < r.input_len
                grown += 1
                break
    assert grown > len(reqs) // 2  # most requests are later turns of a session
    assert max(r.input_len for r in reqs) > 60_000  # contexts grow well past the repository context


def test_the_ramp_profile_shapes_session_arrivals():
    w = wl.AgentWorkload(peak_sessions_per_min=30, seed=3)
    assert w.rate(0) == 0 and w.rate(900) == 0.25 and w.rate(3000) == 0.5 and w.rate(w.span_s) == 0
    d = wl.AgentWorkload(profile="diurnal", peak_sessions_per_min=60)
    assert abs(d.rate(16 * 3600) - 1.0) < 1e-9 and abs(d.rate(4 * 3600) - 0.15) < 1e-9
    starts = wl._session_starts(w, __import__("random").Random(1))
    ramp, plateau = [s for s in starts if s < 1800], [s for s in starts if 1800 <= s < 5400]
    assert 0.3 < len(ramp) / (len(plateau) / 2) < 0.7  # the ramp holds half the plateau's rate on average


def test_a_swarm_fans_out_over_the_orchestrators_context():
    w = wl.with_overrides(SMALL, swarm_prob=1.0, swarm_min=20, swarm_max=20, peak_sessions_per_min=0.5)
    reqs = wl.generate(w)
    # 20 sub-agents start at one instant from one context: 20 requests with the same arrival and full blocks
    by_t: dict[float, list] = {}
    for r in reqs:
        by_t.setdefault(r.arrival, []).append(r)
    fan = max(by_t.values(), key=len)
    assert len(fan) >= 20
    shared = min(r.input_len for r in fan) // BLOCK_TOKENS - 1
    assert len({r.blocks[:shared] for r in fan}) == 1


def test_jsonl_round_trips_through_the_trace_loader(tmp_path):
    reqs = wl.generate(SMALL)
    path = tmp_path / "agents.jsonl"
    assert wl.write_jsonl(reqs, str(path)) == len(reqs)
    back = load_trace(str(path))  # load_trace checks ceil(input_length / 512) ids per record
    assert len(back) == len(reqs)
    assert [(r.input_len, r.output_len) for r in back] == [(r.input_len, r.output_len) for r in reqs]
    assert back[-1].arrival == round(reqs[-1].arrival * 1000) / 1000 - round(reqs[0].arrival * 1000) / 1000


def test_unknown_parameters_are_refused():
    import pytest

    with pytest.raises(ValueError, match="unknown workload parameter"):
        wl.with_overrides(SMALL, sessions_per_min=3)
