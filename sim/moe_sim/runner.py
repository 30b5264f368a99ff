"""Pod runner for the test rig: the kubelet stand-in that gives kwok pods real processes.

kwok marks pods Running on fake nodes and hands each a loopback pod IP (127.x.y.z); a process bound to that IP on
this machine *is* the pod. The runner watches pods (one namespace or all) and, for pods Running on nodes matching
`--node-label` (default `type=kwok`) with a 127/8 pod IP:

* SGLang group pods (label `leaderworkerset.sigs.k8s.io/name` and a container whose command/args contain
  `sglang.launch_server`): an in-process simulator (`SimServer`) on `<podIP>:<--port from the args, default 30000>`.
  Role: leader when `leaderworkerset.sigs.k8s.io/worker-index` is "0", else worker (the dummy health server of
  node ranks > 0). All pods of a group share one simulated engine, so a worker's /metrics carries the DP ranks that
  live on its node. Sizes, first match wins:
    - KV tokens per DP rank: annotation `moe-operator.io/sim-max-total-tokens-per-dp`, argv `--max-total-tokens`,
      `--default-max-total-tokens`;
    - DP ranks: annotation `moe-operator.io/sim-dp-size`, argv `--attn-dp-size` (or `--enable-dp-attention
      --dp-size`), 1;
    - cold start: annotation `moe-operator.io/sim-cold-start-seconds`, `--cold-start`;
    - decode speed: annotation `moe-operator.io/sim-decode-tps`, `--decode-tps`;
    - nodes per group: env `LWS_GROUP_SIZE` of the container (set by the LWS webhook), else 1.
  PD disaggregation role (pd_serve.py), from the argv as SGLang parses it: `--disaggregation-mode prefill|decode`
  (absent: aggregated), `--disaggregation-bootstrap-port` (default 8998; a prefill leader binds its bootstrap server
  at `<podIP>:<that port>`, a decode uses it when the router sends `bootstrap_port: null`),
  `--disaggregation-transfer-backend`; KV bytes per token: annotation `moe-operator.io/sim-kv-bytes-per-token`, else
  DeepSeek-V3's MLA geometry (halved with `--kv-cache-dtype fp8*`); link: annotation
  `moe-operator.io/sim-kv-link-gbps`, `--kv-link-gbps`.
  Fault injection, applied live on every pod update: annotation `moe-operator.io/sim-metrics-fault` = `hang` (the
  pod's /metrics accepts and never answers), `error` (HTTP 500), anything else or absent (answers).
  Pod gone (deletionTimestamp, DELETED, phase Failed/Succeeded) = SIGTERM: the leader flips /health and /ready to
  503, drains running requests and exits; workers exit when their leader has (SGLang's rank-0 ShutdownReq). The pod's
  `terminationGracePeriodSeconds` (default 30) bounds the drain, like the kubelet's SIGKILL.
* Router pods (a container whose command is `smg`, the gateway image's binary, or contains `smg.launch_router`): the
  real router, SMG 1.13.0, as a subprocess (`<router python> -m smg.launch_router <the pod's args>`) with `--host` and
  `--prometheus-host` rebound to the pod IP and `KUBECONFIG` pointing at the rig, so its Kubernetes service discovery
  (kube-rs) watches the rig's pods and routes to the simulators at their pod IPs. Stopped with SIGTERM (then SIGKILL
  after the grace period) when the pod goes away. Without a router interpreter (`--router-python`, env
  `SMG_PYTHON`, or `.testcluster/venv-router/bin/python`) router pods are skipped with a warning.

Not done: pod status is kwok's (kwok marks pods Ready without probing, so API readiness does not follow /ready);
container restarts are not simulated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import re
import shlex
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp.http_exceptions import BadHttpMessage
from kubernetes.aio import client, config, watch
from kubernetes.aio.client.exceptions import ApiException

from .engine import Engine, SimConfig
from .pd_serve import parse_pd_args
from .server import SimServer

log = logging.getLogger("moe_sim.runner")


class _QuietProtocolErrors(logging.Filter):
    """SMG probes each worker for gRPC (an HTTP/2 preface) before falling back to HTTP; aiohttp logs every
    such probe as an error with a traceback. Real SGLang (uvicorn) rejects it the same way, quietly."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], BadHttpMessage))

LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
GROUP_INDEX = "leaderworkerset.sigs.k8s.io/group-index"
A_MAX_TOKENS = "moe-operator.io/sim-max-total-tokens-per-dp"
A_DP_SIZE = "moe-operator.io/sim-dp-size"
A_COLD_START = "moe-operator.io/sim-cold-start-seconds"
A_DECODE_TPS = "moe-operator.io/sim-decode-tps"
METRICS_FAULT = "moe-operator.io/sim-metrics-fault"
A_KV_BYTES = "moe-operator.io/sim-kv-bytes-per-token"
A_KV_LINK = "moe-operator.io/sim-kv-link-gbps"
SGLANG_MARK = "sglang.launch_server"
ROUTER_BINARY = "smg"  #: the command of the lightseekorg/smg gateway image (its Rust binary takes the router flags)
ROUTER_MARK = "smg.launch_router"  #: the same router from the pip wheel
DEFAULT_PORT = 30000
ROOT = Path(__file__).resolve().parents[3]


def add_runner_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", str(ROOT / ".testcluster/kubeconfig")))
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", default=None, help="watch one namespace")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch all namespaces (default)")
    p.add_argument("--node-label", default="type=kwok", help="only pods on nodes with this label (k=v; '' = any)")
    p.add_argument("--cold-start", type=float, default=2.0, help="seconds before a leader's /ready turns 200")
    p.add_argument("--default-max-total-tokens", type=int, default=131072, help="KV tokens per DP rank")
    p.add_argument("--decode-tps", type=float, default=SimConfig.decode_tps)
    p.add_argument("--prefill-tps", type=float, default=SimConfig.prefill_tps)
    p.add_argument("--drain-poll", type=float, default=1.0, help="leader SIGTERM watchdog poll interval (s)")
    p.add_argument("--kv-link-gbps", type=float, default=SimConfig.kv_link_gbps,
                   help="PD: prefill->decode KV link bandwidth, Gbit/s")
    p.add_argument("--router-python", default=os.environ.get("SMG_PYTHON", ""),
                   help="python with smg==1.13.0 installed (default: .testcluster/venv-router/bin/python)")
    p.add_argument("--router-log-dir", default="", help="write each router's output to <dir>/<ns>_<pod>.log")
    p.add_argument("--log-level", default="info")


# ---- pod inspection -----------------------------------------------------------------------------------------------

def _expand(token: str, env: dict[str, str]) -> str:
    """Kubelet-style $(VAR) expansion; unknown variables stay as written."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), token)


def container_env(pod: Any, c: Any) -> dict[str, str]:
    env: dict[str, str] = {}
    labels = pod.metadata.labels or {}
    for e in c.env or []:
        if e.value is not None:
            env[e.name] = _expand(e.value, env)
        elif e.value_from is not None and e.value_from.field_ref is not None:
            path = e.value_from.field_ref.field_path
            m = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
            if m:
                env[e.name] = labels.get(m.group(1), "")
            elif path == "status.podIP":
                env[e.name] = pod.status.pod_ip or ""
            elif path == "metadata.name":
                env[e.name] = pod.metadata.name
            elif path == "metadata.namespace":
                env[e.name] = pod.metadata.namespace
    return env


def container_argv(pod: Any, c: Any) -> list[str]:
    env = container_env(pod, c)
    argv = [_expand(t, env) for t in [*(c.command or []), *(c.args or [])]]
    # `sh -c "python3 -m sglang.launch_server ..."`: split the script
    if len(argv) >= 3 and argv[0].endswith("sh") and argv[1] == "-c":
        with contextlib.suppress(ValueError):
            return shlex.split(argv[2])
    return argv


def flag(argv: list[str], *names: str) -> str | None:
    for i, t in enumerate(argv):
        for n in names:
            if t == n and i + 1 < len(argv):
                return argv[i + 1]
            if t.startswith(n + "="):
                return t.split("=", 1)[1]
    return None


def has_flag(argv: list[str], name: str) -> bool:
    return any(t == name or t.startswith(name + "=") for t in argv)


def _router_args_at(argv: list[str]) -> int | None:
    """Index of the first router flag in a router container's argv (`smg ...`, `smg launch ...`,
    `python -m smg.launch_router ...`), or None when the container is not a router."""
    if argv and Path(argv[0]).name == ROUTER_BINARY:
        return 2 if len(argv) > 1 and argv[1] == "launch" else 1
    i = next((i for i, t in enumerate(argv) if ROUTER_MARK in t), None)
    return None if i is None else i + 1


def classify(pod: Any) -> tuple[str, Any] | None:
    """("sglang", container) | ("router", container) | None."""
    for c in pod.spec.containers or []:
        joined = " ".join([*(c.command or []), *(c.args or [])])
        if _router_args_at([*(c.command or []), *(c.args or [])]) is not None:
            return "router", c
        if SGLANG_MARK in joined and LWS_NAME in (pod.metadata.labels or {}):
            return "sglang", c
    return None


def _num(annotations: dict[str, str], key: str, conv: Any) -> Any:
    v = annotations.get(key)
    if v is None:
        return None
    try:
        return conv(v)
    except ValueError:
        log.warning("ignoring annotation %s=%r: not a number", key, v)
        return None


def attn_dp(argv: list[str]) -> int:
    v = flag(argv, "--attn-dp-size", "--attention-data-parallel-size")
    if v is not None:
        return int(v)
    if has_flag(argv, "--enable-dp-attention"):
        return int(flag(argv, "--dp-size", "--data-parallel-size", "--dp") or 1)
    return 1


def sim_config(pod: Any, c: Any, opts: argparse.Namespace) -> tuple[SimConfig, str]:
    """The simulator config of an SGLang pod and its role."""
    argv = container_argv(pod, c)
    ann = pod.metadata.annotations or {}
    labels = pod.metadata.labels or {}
    env = container_env(pod, c)

    def first(*vals: Any) -> Any:
        return next(v for v in vals if v is not None)

    max_tokens_flag = flag(argv, "--max-total-tokens")
    dp = first(_num(ann, A_DP_SIZE, int), attn_dp(argv))
    tp = int(first(flag(argv, "--tp-size", "--tp", "--tensor-parallel-size"), dp))
    ep_flag = flag(argv, "--ep-size", "--ep", "--expert-parallel-size")
    index = int(labels.get(WORKER_INDEX, "0") or 0)
    nnodes = int(env.get("LWS_GROUP_SIZE") or flag(argv, "--nnodes") or 1)
    mrr = flag(argv, "--max-running-requests")
    ctx = flag(argv, "--context-length")
    model_path = flag(argv, "--model-path", "--model") or "sim-model"
    pd = parse_pd_args(argv)
    kv_bytes = SimConfig.kv_bytes_per_token
    if (flag(argv, "--kv-cache-dtype") or "").startswith("fp8"):
        kv_bytes //= 2
    cfg = SimConfig(
        model_name=flag(argv, "--served-model-name") or model_path,
        model_path=model_path,
        max_total_tokens=first(_num(ann, A_MAX_TOKENS, int),
                               int(max_tokens_flag) if max_tokens_flag else None, opts.default_max_total_tokens),
        dp_size=dp, tp_size=tp if tp % dp == 0 else dp, ep_size=int(ep_flag) if ep_flag else 0,
        nnodes=max(nnodes, index + 1), node_rank=index,
        decode_tps=first(_num(ann, A_DECODE_TPS, float), opts.decode_tps),
        prefill_tps=opts.prefill_tps,
        cold_start=first(_num(ann, A_COLD_START, float), opts.cold_start),
        max_running_requests=int(mrr) if mrr else 0,
        context_length=int(ctx) if ctx else SimConfig.context_length,
        drain_poll_s=opts.drain_poll,
        host=pod.status.pod_ip,
        port=int(flag(argv, "--port") or DEFAULT_PORT),
        disaggregation_mode=pd.mode,
        disaggregation_bootstrap_port=pd.bootstrap_port,
        disaggregation_transfer_backend=pd.transfer_backend,
        kv_bytes_per_token=first(_num(ann, A_KV_BYTES, int), kv_bytes),
        kv_link_gbps=first(_num(ann, A_KV_LINK, float), getattr(opts, "kv_link_gbps", SimConfig.kv_link_gbps)),
    )
    return cfg, "leader" if index == 0 else "worker"


def router_argv(pod: Any, c: Any) -> list[str]:
    """The router's flags (after `smg` or `-m smg.launch_router`), bound to the pod IP."""
    argv = container_argv(pod, c)
    i = _router_args_at(argv)
    args = argv[i:] if i is not None else []
    ip = pod.status.pod_ip
    out: list[str] = []
    skip = False
    for t in args:
        if skip:
            skip = False
            continue
        if t in ("--host", "--prometheus-host"):
            skip = True
            continue
        if t.startswith(("--host=", "--prometheus-host=")):
            continue
        out.append(t)
    return [*out, "--host", ip, "--prometheus-host", ip]


# ---- runtime ------------------------------------------------------------------------------------------------------

@dataclass
class Group:
    engine: Engine
    leader: SimServer | None = None
    leader_exited: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False


@dataclass
class PodProc:
    key: str  # ns/name
    uid: str
    kind: str
    grace: float
    server: SimServer | None = None
    group: Group | None = None
    proc: asyncio.subprocess.Process | None = None
    task: asyncio.Task[Any] | None = None
    stopping: bool = False


class PodRunner:
    def __init__(self, api: client.ApiClient, opts: argparse.Namespace):
        self.api, self.opts = api, opts
        self.core = client.CoreV1Api(api)
        self.pods: dict[str, PodProc] = {}  # uid -> running thing
        self.groups: dict[tuple[str, str, str], Group] = {}
        self.node_ok: dict[str, bool] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        rp = opts.router_python or str(ROOT / ".testcluster/venv-router/bin/python")
        self.router_python = rp if Path(rp).exists() else ""
        self.kubeconfig = str(Path(opts.kubeconfig).resolve())

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    async def _node_matches(self, node: str) -> bool:
        if not self.opts.node_label:
            return True
        if node not in self.node_ok:
            k, _, v = self.opts.node_label.partition("=")
            try:
                n = await self.core.read_node(node)
                labels = (n.metadata.labels if n.metadata else None) or {}
                self.node_ok[node] = labels.get(k) == v
            except ApiException:
                return False
        return self.node_ok[node]

    # ---- events -------------------------------------------------------------------------------------------------
    async def on_pod(self, typ: str, pod: Any) -> None:
        uid = pod.metadata.uid
        gone = (typ == "DELETED" or pod.metadata.deletion_timestamp is not None
                or pod.status.phase in ("Failed", "Succeeded"))
        if gone:
            if uid in self.pods:
                self.stop(self.pods[uid])
            return
        if uid in self.pods:
            self._apply_faults(self.pods[uid], pod)
            return
        if pod.status.phase != "Running" or not pod.status.pod_ip:
            return
        kind = classify(pod)
        if kind is None or not await self._node_matches(pod.spec.node_name or ""):
            return
        try:
            if not ipaddress.ip_address(pod.status.pod_ip).is_loopback:
                log.warning("%s/%s: pod IP %s is not loopback, not served", pod.metadata.namespace,
                            pod.metadata.name, pod.status.pod_ip)
                return
        except ValueError:
            return
        grace = float(pod.spec.termination_grace_period_seconds if pod.spec.termination_grace_period_seconds
                      is not None else 30)
        pp = PodProc(key=f"{pod.metadata.namespace}/{pod.metadata.name}", uid=uid, kind=kind[0], grace=grace)
        self.pods[uid] = pp
        if kind[0] == "sglang":
            self._start_sim(pp, pod, kind[1])
        else:
            self._start_router(pp, pod, kind[1])

    def _start_sim(self, pp: PodProc, pod: Any, c: Any) -> None:
        try:
            cfg, role = sim_config(pod, c, self.opts)
        except (ValueError, TypeError) as e:
            log.error("%s: cannot simulate: %s", pp.key, e)
            return
        labels = pod.metadata.labels or {}
        gkey = (pod.metadata.namespace, labels.get(LWS_NAME, ""), labels.get(GROUP_INDEX, "0"))
        group = self.groups.get(gkey)
        if group is None or group.stopping:
            group = self.groups[gkey] = Group(engine=Engine(cfg))
        pp.group = group
        server = SimServer(cfg, role=role, engine=group.engine, leader_exited=group.leader_exited,
                           name=f"{pp.key} ({role} {cfg.host}:{cfg.port})")
        pp.server = server
        if role == "leader":
            group.leader = server

            async def mark_exit() -> None:
                await server.exited.wait()
                group.leader_exited.set()

            self._spawn(mark_exit())
        self._apply_faults(pp, pod)
        pp.task = self._spawn(self._bind(pp, server))

    @staticmethod
    def _apply_faults(pp: PodProc, pod: Any) -> None:
        if pp.server is None:
            return
        fault = (pod.metadata.annotations or {}).get(METRICS_FAULT, "")
        fault = fault if fault in ("hang", "error") else ""
        if fault != pp.server.metrics_fault:
            log.info("%s: /metrics fault %r", pp.key, fault or "none")
            pp.server.metrics_fault = fault

    async def _bind(self, pp: PodProc, server: SimServer) -> None:
        """Bind, retrying while an old process (a draining predecessor on the same IP) still holds the port."""
        for attempt in range(240):
            try:
                await server.start()
                log.info("%s: simulator %s on %s:%d (dp=%d, %d KV tokens/rank, cold start %.1fs%s)", pp.key,
                         server.role, server.cfg.host, server.cfg.port, server.cfg.dp_size,
                         server.cfg.max_total_tokens, server.cfg.cold_start,
                         "" if server.cfg.disaggregation_mode == "null" else
                         f", PD {server.cfg.disaggregation_mode}, bootstrap port "
                         f"{server.cfg.disaggregation_bootstrap_port}")
                return
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    log.error("%s: cannot bind %s:%d: %s", pp.key, server.cfg.host, server.cfg.port, e)
                    return
                if attempt % 20 == 0:
                    log.info("%s: %s:%d in use, retrying", pp.key, server.cfg.host, server.cfg.port)
                await asyncio.sleep(0.5)

    def _start_router(self, pp: PodProc, pod: Any, c: Any) -> None:
        if not self.router_python:
            log.warning("%s: router pod skipped: no SMG interpreter (--router-python)", pp.key)
            return
        args = router_argv(pod, c)
        pp.task = self._spawn(self._run_router(pp, args))

    def _router_output(self, pp: PodProc) -> Any:
        if not self.opts.router_log_dir:
            return asyncio.subprocess.DEVNULL
        Path(self.opts.router_log_dir).mkdir(parents=True, exist_ok=True)
        return open(Path(self.opts.router_log_dir) / (pp.key.replace("/", "_") + ".log"), "ab")

    async def _run_router(self, pp: PodProc, args: list[str]) -> None:
        # kube-rs (the router's service discovery) reads KUBECONFIG like kubectl does
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
        out = self._router_output(pp)
        try:
            pp.proc = await asyncio.create_subprocess_exec(
                self.router_python, "-m", ROUTER_MARK, *args, env=env, stdout=out,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            log.info("%s: smg pid %d: %s", pp.key, pp.proc.pid, " ".join(args))
            rc = await pp.proc.wait()
            log.info("%s: smg exited rc=%s", pp.key, rc)
        finally:
            if out is not asyncio.subprocess.DEVNULL:
                out.close()

    def stop(self, pp: PodProc) -> None:
        """The pod is going away: SIGTERM semantics, SIGKILL after its grace period."""
        if pp.stopping:
            return
        pp.stopping = True
        log.info("%s: pod gone, stopping %s", pp.key, pp.kind)
        self._spawn(self._stop(pp))

    async def _stop(self, pp: PodProc) -> None:
        try:
            if pp.server is not None:
                server, group = pp.server, pp.group
                assert group is not None
                if server.role == "leader":
                    group.stopping = True
                elif group.leader is None or group.leader.exited.is_set():
                    group.leader_exited.set()
                if pp.task is not None and not pp.task.done():  # never bound
                    pp.task.cancel()
                server.sigterm()
                try:
                    await asyncio.wait_for(server.exited.wait(), pp.grace)
                except TimeoutError:
                    log.warning("%s: drain exceeded the %.0fs grace period, killed", pp.key, pp.grace)
                    await server.close()
            elif pp.proc is not None and pp.proc.returncode is None:
                pp.proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(pp.proc.wait(), min(pp.grace, 10.0))
                except TimeoutError:
                    pp.proc.kill()
                    await pp.proc.wait()
        finally:
            self.pods.pop(pp.uid, None)
            for k, g in list(self.groups.items()):
                if g is pp.group and not any(p.group is g for p in self.pods.values()):
                    del self.groups[k]

    async def shutdown(self) -> None:
        """The runner itself stops: kill everything now."""
        for pp in list(self.pods.values()):
            if pp.server is not None:
                await pp.server.close()
            if pp.proc is not None and pp.proc.returncode is None:
                pp.proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(pp.proc.wait(), 5)
                except TimeoutError:
                    pp.proc.kill()
        for t in list(self.tasks):
            t.cancel()

    # ---- list + watch -------------------------------------------------------------------------------------------
    async def run(self) -> None:
        ns = self.opts.namespace
        while True:
            try:
                if ns:
                    lst = await self.core.list_namespaced_pod(ns)
                else:
                    lst = await self.core.list_pod_for_all_namespaces()
                live = {p.metadata.uid for p in lst.items if p.metadata}
                for pp in list(self.pods.values()):
                    if pp.uid not in live:
                        self.stop(pp)
                for p in lst.items:
                    await self.on_pod("ADDED", p)
                func = self.core.list_namespaced_pod if ns else self.core.list_pod_for_all_namespaces
                kwargs: dict[str, Any] = {"namespace": ns} if ns else {}
                w = watch.Watch()
                rv = lst.metadata.resource_version if lst.metadata else None
                async with w.stream(func, resource_version=rv, timeout_seconds=120,
                                    **kwargs) as events:
                    async for ev in events:
                        if ev["type"] in ("ERROR", "BOOKMARK"):
                            if ev["type"] == "ERROR":
                                break
                            continue
                        await self.on_pod(ev["type"], ev["object"])
            except ApiException as e:
                if e.status != 410:
                    log.warning("pod watch: %s", e)
                    await asyncio.sleep(1)
            except (TimeoutError, OSError) as e:
                log.warning("pod watch: %s", e)
                await asyncio.sleep(1)


async def run_pod_runner(opts: argparse.Namespace) -> int:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=opts.kubeconfig, client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        logging.getLogger("aiohttp.server").addFilter(_QuietProtocolErrors())
        runner = PodRunner(api, opts)
        if not runner.router_python:
            log.warning("no SMG interpreter: router pods will not be served")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        main = loop.create_task(runner.run())
        log.info("pod runner watching %s", opts.namespace or "all namespaces")
        print("pod-runner: ready", file=sys.stderr, flush=True)
        await stop.wait()
        main.cancel()
        await runner.shutdown()
    return 0
