"""Trace replay load generator (moe_sim.loadgen): slicing, prompts that keep the trace's prefix sharing,
and a replay against an in-process simulator."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from moe_sim import SimConfig
from moe_sim.loadgen import prompt_for, replay, trace_slice
from moe_sim.offline import Request
from moe_sim.server import SimServer

TRACE = Path(__file__).resolve().parents[1] / "fixtures" / "mooncake_conversation_first_180s.jsonl"


def test_shared_trace_blocks_give_a_shared_text_prefix() -> None:
    a = prompt_for(Request(0.0, 2048, 10, (0, 1, 2, 3)), 0.25, 10_000, salt=1)
    b = prompt_for(Request(0.0, 2048, 10, (0, 1, 7, 8)), 0.25, 10_000, salt=2)
    per_block = 128 * 4  # 512 tokens x 0.25, 4 characters per token
    assert len(a) == len(b) == 512 * 4
    assert a[:2 * per_block] == b[:2 * per_block] and a[2 * per_block:3 * per_block] != b[2 * per_block:3 * per_block]
    # no prefix blocks: a private prompt, different per request
    assert prompt_for(Request(0.0, 100, 1), 1.0, 10_000, salt=1) != prompt_for(Request(0.0, 100, 1), 1.0, 10_000, 2)


def test_slice_scales_time_and_tokens_with_caps() -> None:
    reqs = trace_slice(str(TRACE), start_s=30, duration_s=60, rate_scale=3, token_scale=0.125,
                       max_input_tokens=2048, max_output_tokens=64)
    assert 150 < len(reqs) < 250  # ~3.1 requests/s in this part of the trace
    assert reqs[0].at >= 0 and reqs[-1].at < 20.0  # 60 s of trace time at 3x
    assert all(len(r.prompt) <= 2048 * 4 and 1 <= r.max_tokens <= 64 for r in reqs)
    assert [r.at for r in reqs] == sorted(r.at for r in reqs)


async def test_replay_against_the_simulator_reuses_prefixes() -> None:
    server = SimServer(SimConfig(model_name="m", max_total_tokens=32768, dp_size=1, decode_tps=2000.0))
    ts = TestServer(server.app)
    await ts.start_server()
    server.start_background()
    try:
        # full-size blocks (the simulator's radix cache matches whole 512-token blocks), at most 8 per prompt
        reqs = trace_slice(str(TRACE), duration_s=20, rate_scale=20, token_scale=1.0, max_input_tokens=4096,
                           max_output_tokens=32)
        async with aiohttp.ClientSession() as session:
            res = await replay(session, str(ts.make_url("")).rstrip("/"), reqs, model="m")
        assert res.sent == len(reqs) > 20 and res.ok == res.sent and not res.failures, res.failures[:3]
        assert server.engine.ranks[0].cache_hit_rate() > 0.0  # the trace's shared blocks hit the radix cache
    finally:
        await ts.close()
        await server.close()
