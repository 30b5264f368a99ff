"""Replay a slice of a request trace against an OpenAI-compatible endpoint (the router, or one SGLang server).

Each trace request (Mooncake JSONL or Azure CSV, read by `moe_sim.offline.load_trace`) becomes a chat completion
sent at its (rate-scaled) arrival time. Prompts are text built from the trace's prefix blocks: every `hash_id`
maps to one deterministic chunk of `block_tokens x token_scale` tokens (4 characters per token, what the simulator
and a rough tokenizer count), so requests that share leading blocks in the trace share a leading text prefix on the
wire — the router's cache-aware policy and SGLang's radix cache see the trace's reuse. `token_scale` shrinks
prompts and outputs so a production trace fits the small KV pools of a simulated rig; the caps keep every request
admissible.

Used by the cluster tests (load through the real router) and by `sglang-sim replay` for manual runs."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from moe_sim.offline import Request, load_trace

CHARS_PER_TOKEN = 4
TRACE_BLOCK_TOKENS = 512  # Mooncake's hash_ids are 512-token blocks


@dataclass(frozen=True)
class ReplayRequest:
    at: float  # seconds after the replay starts
    prompt: str
    max_tokens: int


@dataclass
class ReplayResult:
    sent: int = 0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        lat = sorted(self.latencies_s)
        p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0)  # noqa: E731
        return {"sent": self.sent, "ok": self.ok, "failed": len(self.failures),
                "latency_p50_s": round(p(0.5), 3), "latency_p99_s": round(p(0.99), 3)}


def _chunk(block_id: int, tokens: int) -> str:
    """Deterministic text of `tokens` tokens for one trace block (distinct blocks give distinct text)."""
    seed = hashlib.blake2b(str(block_id).encode(), digest_size=6).hexdigest()  # 12 chars
    unit = f"{seed} "  # 13 chars
    n = tokens * CHARS_PER_TOKEN
    return (unit * (n // len(unit) + 1))[:n]


def prompt_for(r: Request, token_scale: float, max_input_tokens: int, salt: int) -> str:
    """Prompt text of ~input_len x token_scale tokens (capped), leading blocks from the trace's hash_ids."""
    want = max(1, min(max_input_tokens, round(r.input_len * token_scale)))
    per_block = max(1, round(TRACE_BLOCK_TOKENS * token_scale))
    parts: list[str] = []
    have = 0
    for b in r.blocks or ():
        if have >= want:
            break
        take = min(per_block, want - have)
        parts.append(_chunk(b, take))
        have += take
    if have < want:  # no (or too few) prefix blocks: a private tail, unique per request
        parts.append(_chunk(-1 - salt, want - have))
    return "".join(parts)


def trace_slice(path: str, *, start_s: float = 0.0, duration_s: float = 60.0, rate_scale: float = 1.0,
                token_scale: float = 1.0, output_scale: float | None = None, max_input_tokens: int = 1 << 20,
                max_output_tokens: int = 1 << 16) -> list[ReplayRequest]:
    """The requests of [start_s, start_s + duration_s) of the trace (trace time), arrival times divided by
    rate_scale and shifted to start at 0; prompts scaled by token_scale, outputs by output_scale (default: the
    same)."""
    out_scale = token_scale if output_scale is None else output_scale
    if duration_s <= 0 or rate_scale <= 0 or token_scale <= 0 or out_scale <= 0:
        raise ValueError("duration, rate scale, token scale and output scale must be > 0")
    out = []
    for i, r in enumerate(load_trace(path)):
        if r.arrival < start_s:
            continue
        if r.arrival >= start_s + duration_s:
            break
        out.append(ReplayRequest(
            at=(r.arrival - start_s) / rate_scale,
            prompt=prompt_for(r, token_scale, max_input_tokens, salt=i),
            max_tokens=max(1, min(max_output_tokens, round(r.output_len * out_scale))),
        ))
    return out


async def replay(session: aiohttp.ClientSession, url: str, requests: Sequence[ReplayRequest], *, model: str,
                 stop: asyncio.Event | None = None, timeout_s: float = 300.0,
                 result: ReplayResult | None = None) -> ReplayResult:
    """Send each request at its time (`url` is the server's base URL). Stops sending when `stop` is set; always
    waits for the requests already sent. A request counts as ok when it returns 200 and decodes to its length."""
    res = result if result is not None else ReplayResult()
    t0 = time.monotonic()
    tasks: list[asyncio.Task[None]] = []

    async def one(rq: ReplayRequest) -> None:
        payload = {"model": model, "max_tokens": rq.max_tokens, "messages": [{"role": "user", "content": rq.prompt}]}
        sent = time.monotonic()
        try:
            async with session.post(f"{url}/v1/chat/completions", json=payload,
                                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                data = await r.json(content_type=None)
            choice = (data.get("choices") or [{}])[0] if isinstance(data, dict) else {}
            if r.status == 200 and choice.get("finish_reason") == "length":
                res.ok += 1
                res.latencies_s.append(time.monotonic() - sent)
            else:
                res.failures.append(f"HTTP {r.status}: {str(data)[:200]}")
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            res.failures.append(f"{type(exc).__name__}: {exc}")

    for rq in requests:
        if stop is not None and stop.is_set():
            break
        delay = t0 + rq.at - time.monotonic()
        if delay > 0:
            if stop is None:
                await asyncio.sleep(delay)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                    break
                except TimeoutError:
                    pass
        res.sent += 1
        tasks.append(asyncio.create_task(one(rq)))
    await asyncio.gather(*tasks)
    return res
