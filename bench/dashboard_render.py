"""The chart's Grafana dashboard against real data, without Grafana (AGPL; not installed here): every panel's PromQL
is run on a local Prometheus that scrapes a small simulated fleet, and key queries are screenshot in Prometheus' own
graph UI with headless Chromium.

    hack/setup-monitoring && .venv/bin/python bench/dashboard_render.py [--warmup 150] [-o bench/results/dashboard]

Fleet (all on 127.0.0.1, nothing needs the rig): three SGLang simulators (`python -m moe_sim serve`,
attention-DP 4, 16k KV tokens per rank) standing for MoEDeployment demo/kimi (groups 0 and 1) and demo/glm
(group 0); the Mooncake conversation trace (tests/fixtures) replayed at them with `moe_sim.loadgen` —
kimi's group 0 at twice the trace's rate (its KV fills, requests queue) until its group 1 "becomes Ready", then both
at the trace's rate. The operator's side is this process: its prometheus_client registry (the real
`moe_operator.metrics` collectors) served on /metrics, fed by a scripted operator that calls the `observe_*`
functions: kimi scales 1 -> 2 groups, glm rolls out with a drain that hits its timeout, reconciles (a few raise),
admission reviews, the leader gauge; its KV utilization is the simulators' own, scraped with the autoscaler's
`moe_operator.autoscale.scrape`.

Prometheus (Debian's binary, a temporary config and TSDB; the chart's rules/moe-operator.rules.yaml loaded) scrapes
the simulators every 5 s with the labels the chart's PodMonitor adds (namespace, pod, moe_deployment, group) and the
operator with honor_labels (as the chart's ServiceMonitor). After --warmup seconds every dashboard query (template
variables at "All", $__rate_interval = 30s) goes to /api/v1/query_range and must return at least one series with a
finite value; the table panel -> series/points is printed and written to <out>/panels.json, and the PNGs of the
graph UI to <out>/*.png. All processes it starts are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client import start_http_server

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from moe_operator import metrics  # noqa: E402
from moe_operator.autoscale.scrape import PodTarget, scrape  # noqa: E402
from moe_sim.loadgen import replay, trace_slice  # noqa: E402

DASHBOARD = ROOT / "charts/moe-operator/dashboards/moe-operator.json"
RULES = ROOT / "charts/moe-operator/rules/moe-operator.rules.yaml"
TRACE = ROOT / "tests/fixtures/mooncake_conversation_first_180s.jsonl"
NS = "demo"
KV_PER_DP = 16384
DP = 4
SCRAPE_S = 5
RATE_INTERVAL = "30s"
SCALE_UP_AT, READY_AT = 20.0, 45.0  # kimi: desired 1 -> 2 groups, then the new group Ready
ROLLOUT_AT, DRAIN_TIMEOUT_AT = 50.0, 80.0  # glm: a rollout whose drain ends by its timeout


@dataclass(frozen=True)
class Sim:
    deployment: str
    group: int
    model: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pod(self) -> str:
        return f"{self.deployment}-{self.group}" if self.group == 0 else f"{self.deployment}-{self.group}-0"


def shown(p: Path) -> str:
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(msg: str) -> None:
    print(f"[dashboard-render {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_http(url: str, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not answer {url} within {timeout:.0f} s")
        time.sleep(0.3)


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes this script starts, each in its own process group, stopped (TERM, then KILL) on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def start(procs: list[subprocess.Popen[bytes]], cmd: list[str], logfile: Path) -> subprocess.Popen[bytes]:
    out = logfile.open("wb")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(p)
    return p


def prometheus_config(sims: list[Sim], operator_port: int) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            # what the chart's PodMonitor yields: the pod's namespace and name, and the two relabelled pod labels
            {"job_name": "sglang", "static_configs": [
                {"targets": [f"127.0.0.1:{s.port}"],
                 "labels": {"namespace": NS, "pod": s.pod, "moe_deployment": s.deployment, "group": str(s.group)}}
                for s in sims]},
            # the chart's ServiceMonitor, honorLabels: the MoEDeployment's namespace beats the target's
            {"job_name": "moe-operator", "honor_labels": True, "static_configs": [
                {"targets": [f"127.0.0.1:{operator_port}"],
                 "labels": {"namespace": "moe-system", "pod": "moe-operator-0"}}]},
        ],
    }


async def drive(session: aiohttp.ClientSession, sim: Sim, phases: list[tuple[float, float, float]], t0: float,
                stop: asyncio.Event) -> dict[str, int]:
    """Replay the trace at `sim` in phases (start_s, end_s, rate_scale), looping the slice within each phase."""
    sent = ok = failed = 0
    tasks = []
    for begin, end, rate in phases:
        await asyncio.sleep(max(0.0, t0 + begin - time.monotonic()))
        phase_stop = asyncio.Event()
        requests = trace_slice(str(TRACE), duration_s=180, rate_scale=rate, token_scale=0.125, output_scale=0.5,
                               max_input_tokens=2048, max_output_tokens=256)

        async def loop(phase_stop: asyncio.Event = phase_stop, requests: list = requests) -> None:
            nonlocal sent, ok, failed
            while not phase_stop.is_set():
                r = await replay(session, sim.url, requests, model=sim.model, stop=phase_stop)
                sent, ok, failed = sent + r.sent, ok + r.ok, failed + len(r.failures)

        tasks.append(asyncio.create_task(loop()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, t0 + end - time.monotonic()))
        phase_stop.set()
        if stop.is_set():
            break
    await asyncio.gather(*tasks)
    return {"sent": sent, "ok": ok, "failed": failed}


async def fake_operator(session: aiohttp.ClientSession, sims: list[Sim], t0: float, stop: asyncio.Event) -> None:
    """The operator's metrics as its reconcile, autoscaler, rollout and webhook would move them."""
    rnd = random.Random(12)
    metrics.LEADER.set(1)
    for verdict in ("allowed", "allowed", "denied"):
        metrics.ADMISSION.labels("MoEDeployment", verdict).inc()
    metrics.ADMISSION.labels("AcceleratorPool", "allowed").inc()
    events: set[str] = set()
    step = 0
    while not stop.is_set():
        t = time.monotonic() - t0
        kimi_desired = 2 if t >= SCALE_UP_AT else 1
        kimi_ready = 2 if t >= READY_AT else 1
        metrics.observe_groups(NS, "kimi", desired=kimi_desired, ready=kimi_ready)
        metrics.observe_groups(NS, "glm", desired=1, ready=1)
        for name, ready in (("kimi", kimi_ready), ("glm", 1)):
            targets = [PodTarget(s.group, s.pod, f"{s.url}/metrics") for s in sims
                       if s.deployment == name and s.group < ready]
            res = await scrape(session, targets)
            used = sum(g.kv_used_tokens for g in res.groups.values())
            total = sum(g.kv_total_tokens for g in res.groups.values())
            event = None
            if name == "kimi" and t >= SCALE_UP_AT and "up" not in events:
                events.add("up")
                event = ("ScaledUp", "1 -> 2 groups: KV 0.93 >= target 0.5 with requests queued")
            metrics.observe_autoscaling(NS, name, {"kvUtilization": used / total if total else 0.0,
                                                   "podsWithoutMetrics": list(res.silent)}, event)
        if t >= ROLLOUT_AT and "rollout" not in events:
            events.add("rollout")
            metrics.observe_rollout(NS, "glm", "RolloutStarted", "pod template changed: rolling 1 group")
            metrics.observe_rollout(NS, "glm", "RolloutDraining", "rollout: draining group 0")
        if t >= DRAIN_TIMEOUT_AT and "timeout" not in events:
            events.add("timeout")
            metrics.observe_rollout(NS, "glm", "RolloutGroupDrained",
                                    "rollout: group 0 drained (drain timeout 30s reached, 3 requests running)")
        for _ in range(2):  # reconciles: ok, now and then a problem or an error
            started = rnd.lognormvariate(math.log(0.04), 0.6)
            metrics.RECONCILE_SECONDS.observe(started)
            if step % 9 == 4:
                metrics.RECONCILES.labels("error").inc()
                metrics.RECONCILE_ERRORS.labels("ApiException" if step % 2 else "TimeoutError").inc()
            else:
                metrics.RECONCILES.labels("problem" if step % 7 == 3 else "ok").inc()
            metrics.API_REQUESTS.labels("get", "leaderworkersets").inc()
            metrics.API_REQUESTS.labels("patch", "moedeployments/status").inc()
            metrics.API_WRITES.inc()
        if step % 5 == 0:
            metrics.ADMISSION.labels("MoEDeployment", "allowed").inc()
        step += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=2.5)


def substitute(expr: str) -> str:
    for var, val in (("$__rate_interval", RATE_INTERVAL), ("$__interval", "15s"), ("${namespace}", ".*"),
                     ("$namespace", ".*"), ("${deployment}", ".*"), ("$deployment", ".*")):
        expr = expr.replace(var, val)
    return expr


def check_panels(prom: str, dash: dict[str, Any], start_s: float, end_s: float) -> list[dict[str, Any]]:
    rows = []
    queries = [(p["title"], t["refId"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    queries += [(f"annotation: {a['name']}", "-", a["expr"]) for a in dash["annotations"]["list"] if "expr" in a]
    for title, ref, expr in queries:
        q = urllib.parse.urlencode({"query": substitute(expr), "start": start_s, "end": end_s, "step": SCRAPE_S})
        data = get_json(f"{prom}/api/v1/query_range?{q}")
        assert data["status"] == "success", (title, data)
        series = data["data"]["result"]
        finite = [float(v) for s in series for _, v in s["values"] if math.isfinite(float(v))]
        rows.append({"panel": title, "ref": ref, "series": len(series), "finite_points": len(finite),
                     "max": max(finite) if finite else None,
                     "legend": sorted({", ".join(f"{k}={v}" for k, v in sorted(s["metric"].items()))
                                       for s in series})[:4]})
    for v in dash["templating"]["list"]:  # the variables' label_values(...) queries
        if v["type"] != "query":
            continue
        inner, label = v["query"][len("label_values("):-1].rsplit(",", 1)
        q = urllib.parse.urlencode({"match[]": substitute(inner.strip()), "start": start_s, "end": end_s})
        values = get_json(f"{prom}/api/v1/label/{label.strip()}/values?{q}")["data"]
        rows.append({"panel": f"variable: {v['name']}", "ref": "-", "series": len(values), "finite_points": 0,
                     "max": None, "legend": values})
    return rows


SHOTS = [  # file, [(expr, ...)] for one graph page (g0, g1, ...)
    ("kv_per_group.png", ["panel:KV utilization per group"]),
    # (the simulator's inter-token latency is its fixed decode rate, 1/20 s: that panel is checked, not pictured)
    ("ttft_p99.png", ["panel:Time to first token p50 / p99#B", "panel:Time to first token p50 / p99#A"]),
    ("groups_desired_ready.png", ["panel:Groups: desired vs Ready#A", "panel:Groups: desired vs Ready#B"]),
    ("running_queued.png", ["panel:Running requests per group", "panel:Queued requests per group"]),
]


def shot_exprs(dash: dict[str, Any], refs: list[str]) -> list[str]:
    out = []
    for ref in refs:
        title, _, rid = ref.removeprefix("panel:").partition("#")
        panel = next(p for p in dash["panels"] if p["title"] == title)
        target = next(t for t in panel["targets"] if not rid or t["refId"] == rid)
        out.append(" ".join(substitute(target["expr"]).split()))  # one line for the UI's query box
    return out


def screenshot(chromium: str, url: str, png: Path, profile: Path, height: int) -> None:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size=1400,{height}",
           "--virtual-time-budget=10000", f"--screenshot={png}", url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, start_new_session=True)
    if p.returncode != 0 or not png.exists():
        raise SystemExit(f"chromium failed ({p.returncode}): {p.stderr[-2000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=float, default=150.0, help="seconds of data before the panels are queried")
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "bench/results/dashboard")
    args = ap.parse_args()
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    for tool in (prometheus, chromium):
        if not Path(tool).exists():
            raise SystemExit(f"{tool} missing: run hack/setup-monitoring")
    dash = json.loads(DASHBOARD.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    sims = [Sim("kimi", 0, "moonshotai/Kimi-K2.5", free_port()), Sim("kimi", 1, "moonshotai/Kimi-K2.5", free_port()),
            Sim("glm", 0, "zai-org/GLM-4.7", free_port())]
    with tempfile.TemporaryDirectory(prefix="dashboard-render-") as tmp, processes() as procs:
        work = Path(tmp)
        for s in sims:
            start(procs, [sys.executable, "-m", "moe_sim", "serve", "--host", "127.0.0.1", "--port",
                          str(s.port), "--dp-size", str(DP), "--max-total-tokens", str(KV_PER_DP), "--model-name",
                          s.model, "--decode-tps", "20", "--log-level", "warning"], work / f"sim-{s.pod}.log")
        operator_port = free_port()
        start_http_server(operator_port, addr="127.0.0.1")  # the default registry: moe_operator.metrics' collectors
        prom_port = free_port()
        prom = f"http://127.0.0.1:{prom_port}"
        (work / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(sims, operator_port)))
        start(procs, [prometheus, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
                      f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=1h"],
              work / "prometheus.log")
        for s in sims:
            wait_http(f"{s.url}/health", f"simulator {s.pod}")
        wait_http(f"{prom}/-/ready", "prometheus")
        log(f"fleet up: sims {[s.port for s in sims]}, operator metrics :{operator_port}, prometheus {prom}")

        async def run_load() -> dict[str, dict[str, int]]:
            stop = asyncio.Event()
            t0 = time.monotonic()
            connector = aiohttp.TCPConnector(limit=0)  # the simulators queue, not the client pool
            async with aiohttp.ClientSession(connector=connector) as session:
                far = 1e9
                loads = {
                    "kimi-0": drive(session, sims[0], [(0, READY_AT, 2.0), (READY_AT, far, 1.0)], t0, stop),
                    "kimi-1": drive(session, sims[1], [(READY_AT, far, 1.0)], t0, stop),
                    "glm-0": drive(session, sims[2], [(0, far, 0.7)], t0, stop),
                }
                tasks = {k: asyncio.create_task(v) for k, v in loads.items()}
                op = asyncio.create_task(fake_operator(session, sims, t0, stop))
                while time.monotonic() - t0 < args.warmup:
                    await asyncio.sleep(15)
                    up = get_json(f"{prom}/api/v1/query?query=up")["data"]["result"]
                    log(f"t={time.monotonic() - t0:5.0f}s  targets up: "
                        f"{sum(r['value'][1] == '1' for r in up)}/{len(up)}")
                stop.set()
                out = {k: await t for k, t in tasks.items()}
                await op
                return out

        t_start = time.time()
        load = asyncio.run(run_load())
        t_end = time.time()
        log(f"load done: {load}")
        rows = check_panels(prom, dash, t_start, t_end)
        alerts = get_json(f"{prom}/api/v1/alerts")["data"]["alerts"]

        profile = work / "chromium"
        range_m = math.ceil((time.time() - t_start) / 60)
        shots = []
        for name, refs in SHOTS:
            exprs = shot_exprs(dash, refs)
            params: dict[str, str] = {}
            for i, e in enumerate(exprs):
                params |= {f"g{i}.expr": e, f"g{i}.tab": "0", f"g{i}.range_input": f"{range_m}m",
                           f"g{i}.stacked": "0", f"g{i}.end_input": "", f"g{i}.moment_input": ""}
            url = f"{prom}/graph?{urllib.parse.urlencode(params)}"
            png = args.out / name
            screenshot(chromium, url, png, profile, 740 * len(exprs) + 100)
            shots.append({"png": shown(png), "queries": exprs, "url": url.replace(prom, "<prom>")})
            log(f"screenshot {shown(png)} ({png.stat().st_size} bytes)")

    width = max(len(r["panel"]) for r in rows)
    print(f"\n{'panel'.ljust(width)}  ref  series  points  max")
    for r in rows:
        mx = "" if r["max"] is None else f"{r['max']:.4g}"
        print(f"{r['panel'].ljust(width)}  {r['ref']:>3}  {r['series']:>6}  {r['finite_points']:>6}  {mx}")
    print("\nalerts (Prometheus evaluating the chart's rules):",
          ", ".join(f"{a['labels']['alertname']}[{a['state']}]"
                    f"{a['labels'].get('name', a['labels'].get('moe_deployment', ''))}" for a in alerts) or "none")
    empty = [r for r in rows if r["series"] == 0 or (r["ref"] != "-" and r["finite_points"] == 0)]
    result = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)),
              "window_s": round(t_end - t_start), "scrape_interval_s": SCRAPE_S, "rate_interval": RATE_INTERVAL,
              "load": load, "panels": rows, "alerts": [{"alert": a["labels"]["alertname"], "state": a["state"],
                                                         "labels": a["labels"]} for a in alerts],
              "screenshots": shots, "empty": [r["panel"] for r in empty],
              "elapsed_s": round(time.monotonic() - began)}
    (args.out / "panels.json").write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {shown(args.out / 'panels.json')}; {len(rows)} queries, {len(empty)} empty; "
        f"{result['elapsed_s']} s")
    if empty:
        print("EMPTY:", [r["panel"] + " " + r["ref"] for r in empty], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
