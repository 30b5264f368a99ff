"""moe_sim.kvcache: the one SGLang KV model (pool, radix block cache, admission, used) both simulators share."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moe_sim import Engine
from moe_sim import SimConfig as ServerConfig
from moe_sim.clock import VirtualClock
from moe_sim.kvcache import ROUTABLE, SIZE, BlockIndex, KVPool, generated_tokens
from moe_sim.offline import Request, SimConfig, Static, block_sizes, simulate


def test_prefix_reuse_counts_shared_blocks_once_and_evicts_lru() -> None:
    kv = KVPool(2000)
    a_keys, a_sizes = (1, 2), [512, 512]
    assert kv.match(a_keys, a_sizes) == 0
    assert kv.need(a_keys, a_sizes, 0, 0, 100) == (1124, 1024)
    assert kv.admit("a", a_keys, a_sizes, 0, 100, decode_start=0.0) == 0
    b_keys, b_sizes = (1, 2, 3), [512, 512, 512]
    k = kv.match(b_keys, b_sizes)
    assert k == 2 and kv.need(b_keys, b_sizes, k, 0, 50) == (562, 512)  # shared blocks are counted once
    assert kv.admit("b", b_keys, b_sizes, 0, 50, decode_start=0.0) == 1024
    # 10 s at 1 token/s after the first token: 11 tokens each (the first comes out of the prefill)
    assert kv.used(10.0, 1.0) == 1536 + 11 + 11
    kv.release("a")
    kv.release("b")
    assert kv.used(100.0, 1.0) == 0 and kv.evictable_tokens == 1536 and kv.free() == 2000
    # a hit on evictable blocks takes them out of the evictable budget: they count in the need
    assert kv.need(b_keys, b_sizes, 3, 0, 10) == (1546, 0)
    kv.admit("c", (8, 9), [512, 476], 0, 0)  # needs 524 of the cache: the least recently released blocks go
    assert list(kv.evictable) == [3] and kv.locked_tokens + kv.evictable_tokens == 1500
    # in prompt order (the documented deviation from SGLang's leaf-first eviction): block 3 stays, unreachable
    assert kv.match(b_keys, b_sizes) == 0


def test_a_shorter_resident_block_is_a_miss_and_grows() -> None:
    kv = KVPool(4000)
    kv.admit("a", ("p", "t"), [512, 100], 0, 10)
    assert kv.match(("p", "t"), [512, 300]) == 1  # the resident tail holds 100 of the 300 tokens asked
    assert kv.admit("b", ("p", "t"), [512, 300], 0, 10) == 512
    assert kv.locked_tokens == 812  # the shared tail grew to the larger request's size, counted once
    kv.release("a")
    kv.release("b")
    assert kv.evictable_tokens == 812 and kv.locked_tokens == 0


def test_private_tokens_reserved_output_and_the_running_cap() -> None:
    kv = KVPool(1000, max_running=2)
    kv.admit(1, (), [], 300, 100, decode_start=5.0)
    assert kv.committed() == 400 and kv.used(4.9, 10.0) == 300 and kv.used(5.0, 10.0) == 301
    assert kv.used(1e9, 10.0) == 400  # never more than the output
    kv.admit(2, (), [], 100, 100)  # not scheduled yet (inf): nothing generated
    assert kv.used(1e9, 10.0) == 500
    assert not kv.admissible(1)  # two running: the cap, however much KV is free
    kv.release(1)
    assert kv.admissible(800) and not kv.admissible(801)
    kv.set_decode_start(2, 0.0)
    assert kv.used(0.0, 10.0) == 101


def test_the_index_follows_residency_and_routability() -> None:
    index = BlockIndex()
    p1, p2 = KVPool(1000, index=index), KVPool(1000, index=index)
    index.set_routable(p1, True)
    p2.admit("x", (7,), [512], 0, 0)
    p1.admit("y", (7,), [512], 0, 0)
    assert list(index.holders(7)) == [p2, p1] and index.entries[7][ROUTABLE] == 1 and index.entries[7][SIZE] == 512
    index.set_routable(p2, True)
    assert index.entries[7][ROUTABLE] == 2 and index.routable_pools == 2
    p1.release("y")
    p1.admit("z", (8,), [900], 0, 0)  # evicts 7 from p1
    assert list(index.holders(7)) == [p2] and index.entries[7][ROUTABLE] == 1
    p2.release("x")
    p2.flush()
    assert 7 not in index.entries
    index.forget(p1)
    assert index.entries == {} and index.routable_pools == 1


@pytest.mark.parametrize("first", [0, 1])
def test_best_breaks_ties_to_the_pool_that_cached_the_first_block_first(first: int) -> None:
    index = BlockIndex()
    pools = [KVPool(4000, index=index) for _ in range(3)]
    for p in pools:
        index.set_routable(p, True)
    pools[2].admit("a", (1,), [512], 0, 0)  # holds only the first block: the others' match is a level of its own
    a, b = pools[first], pools[1 - first]  # a caches the chain first (both orders: set order would ignore it)
    for rid, p in (("b", a), ("c", b)):
        p.admit(rid, (1, 2), [512, 512], 0, 0)
        p.release(rid)
    assert a.free() == b.free() and index.best((1, 2, 3), [512, 512, 512], 0, 10) == (a, 2, 512)
    a.admit("d", (9,), [100], 0, 0)  # a now has less free KV: b
    assert index.best((1, 2), [512, 512], 0, 10) == (b, 2, 0)


def _brute_best(index: BlockIndex, keys: tuple[int, ...], sizes: list[int], output: int) -> Any:
    """The offline router's rule written out: match every routable pool holding keys[0], in the index's order."""
    best = None
    for p in index.holders(keys[0]):
        if not p.routable:
            continue
        k = p.match(keys, sizes)
        need, miss = p.need(keys, sizes, k, 0, output)
        if p.admissible(need) and (best is None or (sum(sizes) - miss, p.free()) > best[0]):
            best = ((sum(sizes) - miss, p.free()), (p, k, miss))
    return None if best is None else best[1]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_best_is_the_brute_force_choice(data: st.DataObject) -> None:
    # chains over a small tree of block ids (shared prefixes, forks), some tails of another size (partial blocks),
    # pools of equal or different sizes (ties in free KV), some not routable; admissions and releases in any order
    index = BlockIndex()
    cap = st.sampled_from([1600, 2600, 2600, 4000])
    pools = [KVPool(data.draw(cap), max_running=data.draw(st.sampled_from([2, 3, 99])), index=index)
             for _ in range(data.draw(st.integers(2, 7)))]
    for p in pools:
        index.set_routable(p, data.draw(st.booleans()) or data.draw(st.booleans()))

    def ids(path: list[int]) -> tuple[int, ...]:  # block i's id names the path to it: equal ids, equal prefix
        return tuple(10 ** (i + 1) + sum(d * 3 ** j for j, d in enumerate(path[:i + 1])) for i in range(len(path)))

    chain = st.lists(st.integers(0, 1), min_size=1, max_size=4).map(ids)
    running: list[tuple[KVPool, int]] = []
    for step in range(data.draw(st.integers(1, 60))):
        keys = data.draw(chain)
        sizes = [512] * (len(keys) - 1) + [data.draw(st.sampled_from([512, 512, 100, 300]))]
        out = data.draw(st.sampled_from([0, 50, 200, 800]))
        got = index.best(keys, sizes, 0, out)
        assert got == _brute_best(index, keys, sizes, out)
        for p in pools:  # free() is kept by admit/release: it must stay what it stands for
            assert p.free() == p.cap - p.locked_tokens - p.private_tokens - p.reserved_out
        action = data.draw(st.integers(0, 5))
        if action < 3 and got is not None:
            p, k, _ = got
            p.admit(step, keys, sizes, 0, out, k=k)
            running.append((p, step))
        elif action == 3:  # somewhere else (the router's fallback, or a rank of another policy)
            p = data.draw(st.sampled_from(pools))
            if p.admissible(p.need(keys, sizes, p.match(keys, sizes), 0, out)[0]):
                p.admit(step, keys, sizes, 0, out)
                running.append((p, step))
        elif action == 4 and running:
            p, rid = running.pop(data.draw(st.integers(0, len(running) - 1)))
            p.release(rid)
        elif action == 5:
            p = data.draw(st.sampled_from(pools))
            index.set_routable(p, not p.routable)


def test_generated_tokens() -> None:
    assert generated_tokens(0.99, 1.0, 5, 20.0) == 0
    assert generated_tokens(1.0, 1.0, 5, 20.0) == 1
    assert generated_tokens(1.05, 1.0, 5, 20.0) == 2
    assert generated_tokens(100.0, 1.0, 5, 20.0) == 5


def _trace() -> list[Request]:
    """Sessions growing over shared prefixes, one at a time (no overlap), in a pool that must evict."""
    reqs, t = [], 0.0
    for s in range(6):
        base = (100 * s + 1, 100 * s + 2)
        for turn in range(3):
            blocks = (0,) + base + tuple(100 * s + 10 + i for i in range(turn + 1))
            reqs.append(Request(t, 512 * (len(blocks) - 1) + 200, 8, blocks))
            t += 10.0
    return reqs


def test_the_offline_replay_and_the_rig_engine_reuse_the_same_prefixes() -> None:
    reqs = _trace()
    cap = 6000
    res = simulate(reqs, SimConfig(dp_ranks=1, rank_tokens=cap, warmup_s=0.0, decode_tps=20.0, prefill_tps=8192.0),
                   Static(1))
    clock = VirtualClock()
    engine = Engine(ServerConfig(max_total_tokens=cap, dp_size=1, decode_tps=20.0, prefill_tps=8192.0), clock)

    async def replay() -> list[int]:
        cached = []
        for r in reqs:
            await asyncio.sleep(r.arrival - clock.now())
            sim = engine.make_request(input_tokens=r.input_len, hash_ids=list(r.blocks or ()),
                                      max_new_tokens=r.output_len)
            assert [s for _, s in sim.blocks] == block_sizes(r)
            await engine.complete(sim)
            cached.append(sim.cached_tokens)
        return cached

    cached = clock.run(replay())
    assert 0 < sum(cached) < sum(r.input_len for r in reqs)  # some reuse, some eviction
    assert res.completed == len(reqs)
    assert res.cache_hit_rate == pytest.approx(sum(cached) / sum(r.input_len for r in reqs))
