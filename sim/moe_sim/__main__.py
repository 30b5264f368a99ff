"""`python -m moe_sim serve ...` (one simulated SGLang server), `... pod-runner ...` (the rig's kubelet
stand-in: simulators and routers for kwok pods) and `... replay ...` (a trace slice sent to a router or server).
Console script: `sglang-sim = moe_sim.__main__:main`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from .engine import SimConfig


def _serve_args(p: argparse.ArgumentParser) -> None:
    d = SimConfig()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--role", choices=("leader", "worker"), default="leader")
    p.add_argument("--model-name", default=d.model_name, help="served model name")
    p.add_argument("--model-path", default="")
    p.add_argument("--max-total-tokens", type=int, default=d.max_total_tokens, help="KV tokens per DP rank")
    p.add_argument("--dp-size", type=int, default=1, help="attention-DP ranks of this server")
    p.add_argument("--tp-size", type=int, default=0, help="default: dp-size")
    p.add_argument("--ep-size", type=int, default=0, help="default: tp-size")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--decode-tps", type=float, default=d.decode_tps, help="tokens/s per request")
    p.add_argument("--prefill-tps", type=float, default=d.prefill_tps, help="uncached prompt tokens/s per request")
    p.add_argument("--cold-start", type=float, default=0.0, help="seconds before /ready turns 200")
    p.add_argument("--max-running-requests", type=int, default=0, help="per server (0: 2048 per DP rank)")
    p.add_argument("--context-length", type=int, default=d.context_length)
    p.add_argument("--default-max-tokens", type=int, default=d.default_max_tokens)
    p.add_argument("--drain-poll", type=float, default=d.drain_poll_s, help="SIGTERM watchdog poll interval (s)")
    p.add_argument("--log-level", default="info")


def config_from_args(a: argparse.Namespace) -> SimConfig:
    return SimConfig(model_name=a.model_name, model_path=a.model_path, max_total_tokens=a.max_total_tokens,
                     dp_size=a.dp_size, tp_size=a.tp_size, ep_size=a.ep_size, nnodes=a.nnodes,
                     node_rank=a.node_rank, decode_tps=a.decode_tps, prefill_tps=a.prefill_tps,
                     cold_start=a.cold_start, max_running_requests=a.max_running_requests,
                     context_length=a.context_length, default_max_tokens=a.default_max_tokens,
                     drain_poll_s=a.drain_poll, host=a.host, port=a.port)


async def _serve(a: argparse.Namespace) -> int:
    from .server import SimServer

    server = SimServer(config_from_args(a), role=a.role)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.sigterm)
    await server.exited.wait()
    return 0


def _replay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace", required=True, help="Mooncake JSONL or Azure LLM CSV trace")
    p.add_argument("--url", required=True, help="base URL of the router or server, e.g. http://127.1.0.5:8000")
    p.add_argument("--model", default="default", help="model name sent in each request")
    p.add_argument("--start", type=float, default=0.0, help="slice start, seconds of trace time")
    p.add_argument("--duration", type=float, default=60.0, help="slice length, seconds of trace time")
    p.add_argument("--rate-scale", type=float, default=1.0, help="divide the slice's arrival times by X")
    p.add_argument("--token-scale", type=float, default=1.0, help="multiply prompt lengths by X")
    p.add_argument("--output-scale", type=float, default=None, help="multiply output lengths by X (default: "
                   "--token-scale)")
    p.add_argument("--max-input-tokens", type=int, default=1 << 20)
    p.add_argument("--max-output-tokens", type=int, default=1 << 16)
    p.add_argument("--log-level", default="warning")


async def _replay(a: argparse.Namespace) -> int:
    import json

    import aiohttp

    from .loadgen import replay, trace_slice

    reqs = trace_slice(a.trace, start_s=a.start, duration_s=a.duration, rate_scale=a.rate_scale,
                       token_scale=a.token_scale, output_scale=a.output_scale, max_input_tokens=a.max_input_tokens,
                       max_output_tokens=a.max_output_tokens)
    async with aiohttp.ClientSession() as session:
        res = await replay(session, a.url.rstrip("/"), reqs, model=a.model)
    print(json.dumps({**res.summary(), "first_failures": res.failures[:5]}, indent=1))
    return 0 if not res.failures else 1


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sglang-sim", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    _serve_args(sub.add_parser("serve", help="run one simulated SGLang server (leader or worker dummy server)"))
    from .runner import add_runner_args

    add_runner_args(sub.add_parser("pod-runner", help="run simulators/routers for the rig's kwok pods"))
    _replay_args(sub.add_parser("replay", help="replay a slice of a request trace against a router or server"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=getattr(logging, a.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.cmd == "serve":
        return asyncio.run(_serve(a))
    if a.cmd == "replay":
        return asyncio.run(_replay(a))
    from .runner import run_pod_runner

    return asyncio.run(run_pod_runner(a))


if __name__ == "__main__":
    sys.exit(main())
