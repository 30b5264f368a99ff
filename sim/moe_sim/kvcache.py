"""One SGLang KV model for both simulators: a DP rank's KV pool with a radix cache of prefix blocks, admission,
release and the used / evictable accounting. The offline replay (`offline.py`) and the rig's server (`engine.py`)
both hold one `KVPool` per attention-DP rank. There is no clock in here: callers pass the times in.

Rules, and where they come from in SGLang 0.5.23 (`python/sglang/srt/`):

* A pool of `cap` KV tokens per attention-DP rank (`max_total_num_tokens`, the planner's `max_total_tokens_per_dp`);
  a request lives in one rank from admission to release.
* Prefix reuse at block granularity: a request's prompt is a chain of blocks (512 tokens, the Mooncake `hash_ids`
  granularity; equal keys = equal prefix) plus `private` tokens outside any block. It reuses the longest run of
  leading blocks resident in the rank with at least its size: `mem_cache/radix_cache.py` `match_prefix` walks the
  tree from the root and stops at the first mismatch. A resident block shorter than the request's (a partial tail
  block that has since grown) ends the match and is re-prefilled whole; SGLang (page_size 1) would reuse its tokens,
  so this errs by less than a block, and only where a trace reuses an id with a different size (neither the
  generated workloads nor the Mooncake sample do).
* Locking: the blocks of running requests are locked and counted once however many requests share them
  (`inc_lock_ref`, `protected_size`); at release they stay cached as evictable (`dec_lock_ref`, `evictable_size`),
  which is neither used nor available (`used = total - available - evictable`, the scheduler's metrics).
* Admission (`managers/schedule_policy.py` `PrefillAdder.add_one_req`, `mem_cache/prefill_budget.py`
  `remaining_total = available + evictable - reserved`): a request needs its uncached prompt plus its output; the
  evictable blocks it hits are taken out of the evictable budget (the temporary pin `_lock_node(req.last_node)`), so
  they count too. The output is reserved WHOLE until release: SGLang reserves min(max_new_tokens,
  CLIP_MAX_NEW_TOKENS=4096) x new_token_ratio of each running request and retracts when it guessed wrong; retraction
  is not modelled, so an admitted request always completes. `max_running` caps the running requests
  (`max_running_requests`, split over the DP ranks).
  SGLang admits when the need is strictly below `remaining_total` (`check_prefill`); here `<=` (a tie is rare).
* Eviction: when admission needs room, evictable blocks go least recently released first (LRU, `evict_policy.py`
  `LRUStrategy`: a node's `last_access_time`, refreshed when a request matches or inserts it), a request's blocks in
  prompt order. Deviation: SGLang evicts leaves only (`RadixCache.evict` pops `evictable_leaves`, then the parent
  once it has no child), so the tail of a chain goes before its prefix; here the prefix of a chain released at once
  goes first and its tail stays resident but unreachable until evicted too. Releasing in reverse order would give
  SGLang's order; on `simulate --workload agents --policy moe` it raises the prefix hit rate from 0.60 to 0.63 (hpa:
  0.60 -> 0.65, 8.22 -> 7.82 group-hours), so it is left for a change of its own (the benchmarks would move).
* Used KV (`sglang:kv_used_tokens`): locked blocks + private prompt tokens + the tokens generated so far
  (`generated_tokens`): the first token comes out of the prefill forward, and each decode step allocates the KV slot
  of the token it feeds back (`managers/schedule_batch.py` `prepare_for_decode`: `alloc_for_decode(token_per_req=1)`),
  so a request that has produced g tokens holds prompt + g.

A key need not be one 512-token block: the offline replays key a generated request by its runs (`offline.Request`
`runs`: blocks only ever used together, one key of their summed tokens), which gives what keying by the blocks gives.

`BlockIndex` (optional, shared by the pools of one simulation) records which pools each block is resident in, so the
offline router finds the pools with the longest cached prefix of a request without matching every pool's cache
(`BlockIndex.best`; O(ranks x blocks) per request before, which dominated a 50-group day).
"""

from __future__ import annotations

import itertools
import sys
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from operator import attrgetter
from typing import Any

UNLIMITED = sys.maxsize


def generated_tokens(now: float, decode_start: float, output: int, tps: float) -> int:
    """Tokens a request has produced at `now`: the first at `decode_start` (the end of its prefill: SGLang's prefill
    forward samples the first token), then one every 1/tps s, `output` in all."""
    if now < decode_start:
        return 0
    return min(output, 1 + int((now - decode_start) * tps))


class Held:
    """What a pool keeps of a running request: its blocks (to release), private prompt tokens, output length and
    when its first token is out (inf: not yet scheduled, e.g. a PD decode request waiting for its KV)."""

    __slots__ = ("keys", "private", "output", "decode_start")

    def __init__(self, keys: Sequence[Hashable], private: int, output: int, decode_start: float):
        self.keys, self.private, self.output, self.decode_start = keys, private, output, decode_start


# An index entry (a list, the cheapest object to make: one per newly resident block): the pools the block is
# resident in (a dict: insertion-ordered), how many of them are routable, and the size every resident copy has (-1
# once copies may differ: then each pool's own size is checked).
POOLS, ROUTABLE, SIZE = 0, 1, 2


class BlockIndex:
    """Block -> the pools it is resident in, shared by the pools of one simulation, plus which pools are routable
    (`set_routable`: Ready and not draining, for the offline router). KVPool.admit / evict / flush maintain it."""

    def __init__(self) -> None:
        self.entries: dict[Hashable, list[Any]] = {}
        self.routable: set[KVPool] = set()  # the routable pools (best() intersects with it in C, not per pool)

    @property
    def routable_pools(self) -> int:
        return len(self.routable)

    def set_routable(self, pool: KVPool, routable: bool) -> None:
        if pool.routable == routable:
            return
        pool.routable = routable
        if routable:
            self.routable.add(pool)
        else:
            self.routable.discard(pool)
        d = 1 if routable else -1
        entries = self.entries
        for key in pool.size:
            entries[key][ROUTABLE] += d

    def holders(self, key: Hashable) -> dict[KVPool, None]:
        """The pools `key` is resident in (routable or not), in the order they got it."""
        e = self.entries.get(key)
        return {} if e is None else e[POOLS]

    def forget(self, pool: KVPool) -> None:
        """`pool` leaves the simulation (a removed group): drop it from every block it holds."""
        self.set_routable(pool, False)
        entries = self.entries
        for key in pool.size:
            e = entries[key]
            del e[POOLS][pool]
            if not e[POOLS]:
                del entries[key]

    def best(self, keys: Sequence[Hashable], sizes: Sequence[int], private: int,
             output: int) -> tuple[KVPool, int, int] | None:
        """The routable pool holding `keys[0]` that can admit the request with the longest cached prefix, then the
        most free KV, ties to the pool that got `keys[0]` first: (pool, cached blocks, uncached prompt tokens); None
        when no such pool can admit it. The same choice as matching every routable pool that holds `keys[0]` in
        the index's order and keeping the first best (tests/unit/test_kvcache.py checks it against that).

        How: a walk along the request's blocks keeps the set of pools still matching. While each block is resident
        in EVERY routable pool (a prefix shared fleet-wide, e.g. a system prompt) the set is implicit and a block
        costs O(1); while the set is large a block costs one C-level subset test; once it is small each pool
        finishes its own match. Depths are then tried deepest first; at a depth the freest pool is checked first,
        the rest only if it cannot admit (a pool that cannot admit at its depth cannot at a shallower one either:
        the need only grows)."""
        entries = self.entries
        e0 = entries.get(keys[0])
        if e0 is None or not e0[ROUTABLE]:
            return None
        holders0: dict[KVPool, None] = e0[POOLS]
        everyone = len(self.routable)
        n = len(keys)
        levels: dict[int, set[KVPool]] = {}  # depth -> the pools whose match ends there
        alive: set[KVPool] | None = None  # None: every routable holder of keys[0] (nothing dropped yet)
        depth = n  # where the pools still alive stop
        rest: tuple[int, set[KVPool]] | None = None  # (i, survivors): the other routable holders end at depth i
        e = e0
        for i in range(n):
            if i:
                got = entries.get(keys[i])
                if got is None:
                    depth = i
                    break
                e = got
            s = sizes[i]
            size = e[SIZE]
            if 0 <= size < s:  # every resident copy is too short
                depth = i
                break
            pools = e[POOLS]
            if alive is None:
                if (i == 0 or e[ROUTABLE] == everyone) and size >= s:
                    continue
                if len(pools) <= _FEW:
                    # the first drop, to the few pools holding block i (a session's own context, past the shared
                    # system prefix): they go on; every other routable holder of keys[0] ends here, a set made
                    # only if no deeper depth admits (its size is the fleet's: two C-level set operations saved
                    # per request)
                    key = keys[i]
                    alive = {p for p in pools if p.routable and p in holders0 and (size >= s or p.size[key] >= s)}
                    rest = (i, alive)
                    if not alive:
                        break
                    continue
                alive = holders0.keys() & self.routable
            if len(alive) > _FEW:
                if size >= s and (i == 0 or e[ROUTABLE] == everyone or alive <= pools.keys()):
                    continue
                key = keys[i]
                survivors = pools.keys() & alive
                if size < s:
                    survivors = {p for p in survivors if p.size[key] >= s}
                if len(survivors) < len(alive):
                    levels[i] = alive - survivors
                alive = survivors
                if not alive:
                    break
                continue
            for p in alive:  # a few pools left: each finishes its own match from block i
                d = i + p.match_from(keys, sizes, i)
                levels.setdefault(d, set()).add(p)
            alive = set()
            break
        if alive is None:
            alive = holders0.keys() & self.routable
        if alive:
            levels.setdefault(depth, set()).update(alive)
        total = sum(sizes) + private
        depths = set(levels)
        if rest is not None:
            depths.add(rest[0])
        for d in sorted(depths, reverse=True):
            members = levels.get(d, set())
            if rest is not None and d == rest[0]:
                members = members | ((holders0.keys() & self.routable) - rest[1])
            if not members:
                continue
            uncached = total - sum(sizes[:d])
            pool = _freest_admissible(members, holders0, keys, d, uncached + output)
            if pool is not None:
                return pool, d, uncached
        return None


_FEW = 4  # at most this many pools still matching: walk each one's blocks instead of intersecting sets


def _freest_admissible(members: set[KVPool], order: dict[KVPool, None], keys: Sequence[Hashable], d: int,
                       base: int) -> KVPool | None:
    """The pool of `members` with the most free KV (ties: the first in `order`) that can admit a request needing
    `base` tokens plus the evictable blocks among the first `d` of `keys` it hits there."""
    if len(members) == 1:
        cands = list(members)
    elif len(members) == len(order):  # every holder (e.g. a new session: the shared system prefix only)
        cands = list(order)
    else:
        cands = [p for p in order if p in members]
    top = max(cands, key=_AVAIL)  # the first of the freest
    if top.admissible(base + top.hit_evictable(keys, d)):
        return top
    cands.sort(key=_AVAIL, reverse=True)  # stable: ties keep the order
    for p in cands:
        if p.avail < base:  # nor can any pool after it (the evictable blocks it hits only add to the need)
            break
        if p is not top and p.admissible(base + p.hit_evictable(keys, d)):
            return p
    return None


class KVPool:
    """One attention-DP rank's KV pool and radix block cache (module docstring)."""

    __slots__ = ("cap", "max_running", "index", "routable", "size", "locked", "evictable", "locked_tokens",
                 "evictable_tokens", "private_tokens", "reserved_out", "running", "avail")

    def __init__(self, cap: int, max_running: int = UNLIMITED, index: BlockIndex | None = None):
        self.cap, self.max_running, self.index = cap, max_running, index
        self.routable = False  # BlockIndex.set_routable
        self.size: dict[Hashable, int] = {}  # tokens of every resident block (locked or evictable)
        self.locked: dict[Hashable, int] = {}  # block -> number of running requests holding it
        self.evictable: OrderedDict[Hashable, int] = OrderedDict()  # block -> tokens, least recently released first
        self.locked_tokens = 0
        self.evictable_tokens = 0
        self.private_tokens = 0  # private prompt tokens of running requests
        self.reserved_out = 0  # whole outputs of running requests (the admission reservation)
        self.running: dict[Hashable, Held] = {}  # running requests by id
        self.avail = cap  # free(), kept up to date by admit and release (the router reads it for every pool)

    # ---- admission ----------------------------------------------------------------------------------------------
    def committed(self) -> int:
        """KV promised to running requests: locked blocks, private prompts, reserved outputs."""
        return self.locked_tokens + self.private_tokens + self.reserved_out

    def free(self) -> int:
        """KV that admission may use (evictable cache counts as free): cap - locked - private - reserved out."""
        return self.avail

    def match(self, keys: Sequence[Hashable], sizes: Sequence[int]) -> int:
        """How many leading blocks are resident here with at least the request's size."""
        size = self.size
        k = 0
        for key in keys:
            if size.get(key, 0) >= sizes[k]:
                k += 1
            else:
                break
        return k

    def match_from(self, keys: Sequence[Hashable], sizes: Sequence[int], i: int) -> int:
        """match() of keys[i:] (the blocks before i known to match)."""
        size = self.size
        k = i
        for j in range(i, len(keys)):
            if size.get(keys[j], 0) >= sizes[j]:
                k += 1
            else:
                break
        return k - i

    def hit_evictable(self, keys: Sequence[Hashable], k: int) -> int:
        """Tokens of the evictable blocks among the first `k` of `keys`: admission takes them out of the cache."""
        evictable = self.evictable
        if not k or not evictable:
            return 0
        return sum(map(evictable.get, keys[:k], itertools.repeat(0)))

    def need(self, keys: Sequence[Hashable], sizes: Sequence[int], k: int, private: int,
             output: int) -> tuple[int, int]:
        """(KV tokens admission adds to the committed pool, uncached prompt tokens) for a request whose first `k`
        blocks are cached here: the uncached prompt, the output and the evictable blocks it hits."""
        uncached = sum(sizes[k:]) + private
        return uncached + output + self.hit_evictable(keys, k), uncached

    def admissible(self, need: int) -> bool:
        return len(self.running) < self.max_running and need <= self.avail

    def admit(self, rid: Hashable, keys: Sequence[Hashable], sizes: Sequence[int], private: int, output: int,
              decode_start: float = float("inf"), k: int = -1) -> int:
        """Lock the request's blocks (growing a shorter resident one), reserve its private prompt and output, evict
        least recently released blocks while the pool is over capacity; returns its cached prompt tokens. `k`: the
        caller's match() for this request, when it has one."""
        if k < 0:
            k = self.match(keys, sizes)
        cached = sum(sizes[:k])
        size, locked, evictable, index = self.size, self.locked, self.evictable, self.index
        entries = index.entries if index is not None else None
        routable = 1 if self.routable else 0
        added = from_cache = 0  # (locals: these loops run for every block of every request)
        for key in keys[:k]:  # the match: resident with at least this request's size, so no growth, no index change
            c = locked.get(key)
            if c is not None:
                locked[key] = c + 1
            else:
                have = evictable.pop(key)
                from_cache += have
                added += have
                locked[key] = 1
        for key, s in zip(keys[k:], sizes[k:], strict=True):
            c = locked.get(key)
            if c is not None:
                locked[key] = c + 1
                if s > size[key]:  # a shorter resident tail block grows to this request's
                    added += s - size[key]
                    size[key] = s
                    if entries is not None:
                        _grown(entries[key], s)
                continue
            have = evictable.pop(key, -1)
            if have >= 0:
                from_cache += have
                if s > have:
                    size[key] = have = s
                    if entries is not None:
                        _grown(entries[key], s)
            else:
                size[key] = have = s
                if entries is not None:
                    e = entries.get(key)
                    if e is None:
                        entries[key] = [{self: None}, routable, s]
                    else:
                        e[POOLS][self] = None
                        e[ROUTABLE] += routable
                        if e[SIZE] != s:
                            e[SIZE] = -1
            locked[key] = 1
            added += have
        self.locked_tokens += added
        self.private_tokens += private
        self.reserved_out += output
        self.avail -= added + private + output
        evictable_tokens = self.evictable_tokens - from_cache
        self.running[rid] = Held(keys, private, output, decode_start)
        over = self.locked_tokens + self.private_tokens + self.reserved_out + evictable_tokens - self.cap
        while over > 0 and evictable:
            key, s = evictable.popitem(last=False)
            del size[key]
            if entries is not None:
                e = entries[key]
                pools = e[POOLS]
                del pools[self]
                if not pools:
                    del entries[key]
                else:
                    e[ROUTABLE] -= routable
            evictable_tokens -= s
            over -= s
        self.evictable_tokens = evictable_tokens
        return cached

    def set_decode_start(self, rid: Hashable, t: float) -> None:
        self.running[rid].decode_start = t

    def release(self, rid: Hashable) -> None:
        """The request finished (or was aborted): its blocks become evictable once no running request holds them,
        most recently released last."""
        h = self.running.pop(rid)
        self.private_tokens -= h.private
        self.reserved_out -= h.output
        locked, evictable, size = self.locked, self.evictable, self.size
        freed = 0
        for key in h.keys:
            c = locked.pop(key)
            if c > 1:
                locked[key] = c - 1
                continue
            s = size[key]
            freed += s
            evictable[key] = s
        self.locked_tokens -= freed
        self.evictable_tokens += freed
        self.avail += freed + h.private + h.output

    def flush(self) -> None:
        """Drop the evictable cache (SGLang's /flush_cache; locked blocks stay)."""
        for key in self.evictable:
            del self.size[key]
            if self.index is not None:
                e = self.index.entries[key]
                del e[POOLS][self]
                if not e[POOLS]:
                    del self.index.entries[key]
                elif self.routable:
                    e[ROUTABLE] -= 1
        self.evictable.clear()
        self.evictable_tokens = 0

    # ---- observations -------------------------------------------------------------------------------------------
    def used(self, now: float, tps: float) -> int:
        """`sglang:kv_used_tokens`: locked blocks + private prompts + the tokens generated so far."""
        gen = 0
        for h in self.running.values():
            start = h.decode_start
            if now >= start:
                g = 1 + int((now - start) * tps)
                gen += g if g < h.output else h.output
        return self.locked_tokens + self.private_tokens + gen


_AVAIL = attrgetter("avail")  # KVPool.free as a C-level key


def _grown(e: list[Any], size: int) -> None:
    """A resident copy grew to `size`: the copies agree only if it is the only one."""
    e[SIZE] = size if len(e[POOLS]) == 1 else -1


__all__ = ["UNLIMITED", "BlockIndex", "Held", "KVPool", "generated_tokens"]
