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

`index` (optional, shared by the pools of one simulation) maps a block to the pools it is resident in, so a router can
look only at the pools holding a request's first block instead of matching every pool. Its values are dicts used as
insertion-ordered sets: a router iterating them breaks ties the same way in every run (a set of pools iterates in
memory-address order, which changes from run to run).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Hashable, Sequence

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


class KVPool:
    """One attention-DP rank's KV pool and radix block cache (module docstring)."""

    __slots__ = ("cap", "max_running", "index", "size", "locked", "evictable", "locked_tokens", "evictable_tokens",
                 "private_tokens", "reserved_out", "running")

    def __init__(self, cap: int, max_running: int = UNLIMITED,
                 index: dict[Hashable, dict[KVPool, None]] | None = None):
        self.cap, self.max_running, self.index = cap, max_running, index
        self.size: dict[Hashable, int] = {}  # tokens of every resident block (locked or evictable)
        self.locked: dict[Hashable, int] = {}  # block -> number of running requests holding it
        self.evictable: OrderedDict[Hashable, int] = OrderedDict()  # block -> tokens, least recently released first
        self.locked_tokens = 0
        self.evictable_tokens = 0
        self.private_tokens = 0  # private prompt tokens of running requests
        self.reserved_out = 0  # whole outputs of running requests (the admission reservation)
        self.running: dict[Hashable, Held] = {}  # running requests by id

    # ---- admission ----------------------------------------------------------------------------------------------
    def committed(self) -> int:
        """KV promised to running requests: locked blocks, private prompts, reserved outputs."""
        return self.locked_tokens + self.private_tokens + self.reserved_out

    def free(self) -> int:
        """KV that admission may use (evictable cache counts as free)."""
        return self.cap - self.locked_tokens - self.private_tokens - self.reserved_out

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

    def need(self, keys: Sequence[Hashable], sizes: Sequence[int], k: int, private: int,
             output: int) -> tuple[int, int]:
        """(KV tokens admission adds to the committed pool, uncached prompt tokens) for a request whose first `k`
        blocks are cached here: the uncached prompt, the output and the evictable blocks it hits."""
        uncached = sum(sizes[k:]) + private
        if k:
            evictable = self.evictable
            hit_evictable = sum(evictable.get(key, 0) for key in keys[:k]) if evictable else 0
            return uncached + output + hit_evictable, uncached
        return uncached + output, uncached

    def admissible(self, need: int) -> bool:
        return len(self.running) < self.max_running and need <= self.free()

    def admit(self, rid: Hashable, keys: Sequence[Hashable], sizes: Sequence[int], private: int, output: int,
              decode_start: float = float("inf"), k: int = -1) -> int:
        """Lock the request's blocks (growing a shorter resident one), reserve its private prompt and output, evict
        least recently released blocks while the pool is over capacity; returns its cached prompt tokens. `k`: the
        caller's match() for this request, when it has one."""
        if k < 0:
            k = self.match(keys, sizes)
        cached = sum(sizes[:k])
        size, locked, evictable, index = self.size, self.locked, self.evictable, self.index
        added = 0
        for key, s in zip(keys, sizes, strict=True):
            c = locked.get(key)
            if c is not None:
                locked[key] = c + 1
                have = size[key]
                if s > have:  # a shorter resident tail block grows to this request's
                    added += s - have
                    size[key] = s
                continue
            have = evictable.pop(key, -1)
            if have >= 0:
                self.evictable_tokens -= have
                if s > have:
                    size[key] = have = s
            else:
                size[key] = have = s
                if index is not None:
                    holders = index.get(key)
                    if holders is None:
                        index[key] = {self: None}
                    else:
                        holders[self] = None
            locked[key] = 1
            added += have
        self.locked_tokens += added
        self.private_tokens += private
        self.reserved_out += output
        self.running[rid] = Held(keys, private, output, decode_start)
        over = self.locked_tokens + self.private_tokens + self.reserved_out + self.evictable_tokens - self.cap
        while over > 0 and evictable:
            key, s = evictable.popitem(last=False)
            del size[key]
            if index is not None:
                holders = index[key]
                del holders[self]
                if not holders:
                    del index[key]
            self.evictable_tokens -= s
            over -= s
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
            c = locked[key] - 1
            if c:
                locked[key] = c
                continue
            del locked[key]
            s = size[key]
            freed += s
            evictable[key] = s
        self.locked_tokens -= freed
        self.evictable_tokens += freed

    def flush(self) -> None:
        """Drop the evictable cache (SGLang's /flush_cache; locked blocks stay)."""
        for key in self.evictable:
            del self.size[key]
            if self.index is not None:
                holders = self.index[key]
                del holders[self]
                if not holders:
                    del self.index[key]
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


__all__ = ["UNLIMITED", "Held", "KVPool", "generated_tokens"]
