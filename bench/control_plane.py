"""Control plane at scale: 200 MoEDeployments over 10 namespaces, 1-3 groups each, on 2,000 kwok H200 nodes.

    make up && .venv/bin/python bench/control_plane.py [--deployments 200] [--namespaces 10] [--nodes 2000]
                                                       [--window 120] [-o bench/results/control_plane.json]

Runs on the rig (`make up`; the real kube-apiserver/etcd/controller-manager/scheduler, kwok, LWS). Pauses the demo's
operator and pod-runner while it runs (they come back afterwards), adds its own nodes (`bench-h200-*` under a pool
that selects only them, `bench-cpu-*` for the routers) and removes them at the end. Two operator processes run as
they would in a cluster (`moe-operator run`, leader election on). What it measures and prints:

  apply -> all Ready     from the last CREATE answered to every MoEDeployment Ready=True
  admission              CREATE latency of each MoEDeployment as the client sees it (p50/p99; includes the webhook),
                         and the apiserver's own webhook-duration histogram for validate-moedeployment
  steady state           apiserver_request_total deltas by verb and resource over --window s with the operator on,
                         minus the same window with it off (kwok's, the controllers' and LWS's own traffic cancel),
                         per MoEDeployment; the operator's own request counter by verb (moe_operator_api_requests);
                         object writes/min and events/min
  operator               RSS and CPU of the leader during the window
  restart                a restarted leader: time until every MoEDeployment had its pass, and its writes (target 0)
  failover               SIGKILL the leader: time until the standby holds the Lease and has acted

Workload: Kimi-K2.5 INT4 on H200 at 128k context, sessions 100/200/300 in turn (the planner gives 1/2/3 groups of
2 nodes), every fourth with KV autoscaling on (its pods serve no /metrics here: that path is exercised, not its law).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("MOE_TESTCLUSTER_DIR", ROOT / ".testcluster"))
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "hack/rig")]

import testcluster as rig  # noqa: E402
from kubernetes import client, config  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from operator_proc import OperatorProcess, paused_demo  # noqa: E402

GROUP, VERSION = "moe-operator.io", "v1alpha1"
POOL = "bench-h200"
BENCH_LABEL = "moe-operator.io/bench"
LEASE = ("default", "moe-operator-leader")


def log(msg: str) -> None:
    print(f"[control-plane {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------------------ nodes
def bench_nodes(h200: int, cpu: int) -> list[dict]:
    """The rig's node shapes under their own names and a label only the bench pool selects (the demo's and the
    tests' pools select on the GPU product label, which these nodes do not carry)."""
    out = []
    for i in range(h200):
        n = rig.make_node(rig.POOLS["h200"], i, 6000 + i)  # pod CIDRs 127.24.x.0/24 on: clear of the rig's own
        name = f"bench-h200-{i:04d}"
        labels = {k: v for k, v in n["metadata"]["labels"].items() if k != "nvidia.com/gpu.product"}
        labels.update({"kubernetes.io/hostname": name, BENCH_LABEL: "scale",
                       rig.TOPOLOGY_KEY: f"bench-domain-{i // rig.NODES_PER_DOMAIN}"})
        n["metadata"].update(name=name, labels=labels)
        n["spec"]["providerID"] = f"kwok://{name}"
        out.append(n)
    for i in range(cpu):
        n = rig.make_node(rig.POOLS["cpu"], i, 49000 + i)
        name = f"bench-cpu-{i:03d}"
        n["metadata"]["name"] = name
        n["metadata"]["labels"].update({"kubernetes.io/hostname": name, BENCH_LABEL: "router"})
        n["spec"]["providerID"] = f"kwok://{name}"
        n["status"]["capacity"]["pods"] = n["status"]["allocatable"]["pods"] = "250"
        out.append(n)
    return out


def create_nodes(core: client.CoreV1Api, nodes: list[dict]) -> None:
    def create(node: dict) -> None:
        with contextlib.suppress(client.ApiException):
            core.create_node(node)

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        list(ex.map(create, nodes))


def ready_nodes(core: client.CoreV1Api) -> int:
    items = core.list_node(label_selector=BENCH_LABEL).items
    return sum(1 for n in items for c in n.status.conditions or [] if c.type == "Ready" and c.status == "True")


# ------------------------------------------------------------------------------------------------------ workload
def pool() -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AcceleratorPool", "metadata": {"name": POOL},
            "spec": {"accelerator": {"profile": "h200"}, "nodeSelector": {BENCH_LABEL: "scale"},
                     "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
                     "rdma": {"resourceName": "rdma/ib", "count": 1}, "topologyKey": rig.TOPOLOGY_KEY,
                     "costPerNodeHour": 30}}


def deployment(i: int, namespaces: int) -> dict:
    spec: dict[str, Any] = {
        "model": {"catalog": "kimi-k2.5"}, "weights": {"huggingFace": {"repo": "moonshotai/Kimi-K2.5"}},
        "precision": "int4", "sessions": {"target": 100 * (1 + i % 3), "contextTokens": 131072}, "pool": POOL,
        "maxGroups": 4,
    }
    if i % 4 == 0:
        spec["autoscaling"] = {"enabled": True, "minGroups": 1, "maxGroups": 4}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "MoEDeployment",
            "metadata": {"name": f"moe-{i:03d}", "namespace": f"bench-{i % namespaces}"}, "spec": spec}


def ready_count(custom: client.CustomObjectsApi) -> tuple[int, int]:
    items = custom.list_cluster_custom_object(GROUP, VERSION, "moedeployments")["items"]
    mine = [o for o in items if o["metadata"]["namespace"].startswith("bench-")]
    ready = sum(1 for o in mine for c in (o.get("status") or {}).get("conditions") or []
                if c["type"] == "Ready" and c["status"] == "True")
    return ready, len(mine)


# ------------------------------------------------------------------------------------------------------- metrics
def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def apiserver_metrics() -> dict:
    r = subprocess.run([str(STATE / "bin/kubectl"), "--kubeconfig", str(STATE / "kubeconfig"), "get", "--raw",
                        "/metrics"], capture_output=True, text=True, check=True)
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(r.stdout):
        for s in fam.samples:
            if s.name in ("apiserver_request_total", "apiserver_admission_webhook_admission_duration_seconds_bucket"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def requests_by(before: dict, after: dict) -> Counter:
    """apiserver_request_total delta by (verb, resource[/subresource])."""
    c: Counter = Counter()
    for (name, labels), v in after.items():
        if name != "apiserver_request_total":
            continue
        lab = dict(labels)
        res = lab.get("resource", "") + (f"/{lab['subresource']}" if lab.get("subresource") else "")
        c[(lab.get("verb", ""), res)] += v - before.get((name, labels), 0.0)
    return c


def webhook_quantiles(before: dict, after: dict, qs: tuple[float, ...] = (0.5, 0.99),
                      name: str = "validate-moedeployment", operation: str | None = "CREATE") -> dict[str, float]:
    """Quantiles of the apiserver's duration histogram of one webhook (name prefix; linear within a bucket)."""
    buckets: dict[float, float] = {}
    for (metric, labels), v in after.items():
        lab = dict(labels)
        if (metric == "apiserver_admission_webhook_admission_duration_seconds_bucket"
                and lab.get("name", "").startswith(name) and operation in (None, lab.get("operation"))):
            le = float(lab["le"])
            buckets[le] = buckets.get(le, 0.0) + v - before.get((metric, labels), 0.0)
    return bucket_quantiles(buckets, qs)


def every_webhook(before: dict, after: dict) -> dict[str, dict[str, float]]:
    """{webhook name: {n, p50, p99} in ms} for every webhook the apiserver called between the two scrapes — LWS's
    (Go, controller-runtime) beside the operator's: a control for what the apiserver and the machine add."""
    out = {}
    for wh in sorted({dict(lab)["name"] for (m, lab) in after
                      if m == "apiserver_admission_webhook_admission_duration_seconds_bucket"}):
        count = sum(v - before.get((m, lab), 0.0) for (m, lab), v in after.items()
                    if m == "apiserver_admission_webhook_admission_duration_seconds_bucket"
                    and dict(lab)["name"] == wh and dict(lab)["le"] == "+Inf")
        if count:
            out[wh] = {"n": count, **{k: 1000 * v for k, v in webhook_quantiles(before, after, name=wh,
                                                                                 operation=None).items()}}
    return out


def served_quantiles(before: dict, after: dict, qs: tuple[float, ...] = (0.5, 0.99),
                     webhook: str = "validate-moedeployment") -> dict[str, float]:
    """Quantiles of the operator's own moe_operator_admission_duration_seconds (time inside its webhook server)."""
    name = "moe_operator_admission_duration_seconds_bucket"
    buckets = {float(dict(lab)["le"]): v - before.get((n, lab), 0.0) for (n, lab), v in after.items()
               if n == name and dict(lab).get("webhook") == webhook}
    return bucket_quantiles(buckets, qs)


def bucket_quantiles(buckets: dict[float, float], qs: tuple[float, ...]) -> dict[str, float]:
    """Quantiles of a cumulative histogram {le: count}, linear within a bucket."""
    if not buckets or max(buckets.values()) == 0:
        return {}
    edges = sorted(buckets)
    total = buckets[edges[-1]]
    out = {}
    for q in qs:
        target, lo, prev = q * total, 0.0, 0.0
        for le in edges:
            if buckets[le] >= target:
                hi = le if le != float("inf") else lo
                frac = (target - prev) / (buckets[le] - prev) if buckets[le] > prev else 1.0
                out[f"p{int(q * 100)}"] = lo + (hi - lo) * frac
                break
            lo, prev = le, buckets[le]
    return out


class DirectProbe(threading.Thread):
    """Admission reviews posted straight to the leader's webhook (no apiserver in between), every `every` s, under
    the webhook id `probe` (no handler: kopf allows it): the round trip of the webhook server alone — TLS, HTTP,
    the interpreter — to tell its share of the apiserver's webhook duration from the apiserver's own."""

    def __init__(self, port: int, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.url, self.every, self.stop, self.rtt = f"https://127.0.0.1:{port}/probe", every, threading.Event(), []
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname, self.ctx.verify_mode = False, ssl.CERT_NONE  # the operator's self-signed cert

    def run(self) -> None:
        review = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "probe", "operation": "CREATE", "dryRun": True, "userInfo": {"username": "bench"},
            "kind": {"group": GROUP, "version": VERSION, "kind": "MoEDeployment"},
            "resource": {"group": GROUP, "version": VERSION, "resource": "moedeployments"},
            "object": deployment(0, 1)}}).encode()
        while not self.stop.wait(self.every):
            s = time.perf_counter()
            req = urllib.request.Request(self.url, data=review, headers={"Content-Type": "application/json"})
            with contextlib.suppress(OSError), urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
                r.read()
                self.rtt.append(time.perf_counter() - s)

    def quantiles(self) -> dict[str, float]:
        xs = sorted(self.rtt)
        return {"n": len(xs), "p50": 1000 * xs[len(xs) // 2], "p99": 1000 * xs[int(0.99 * (len(xs) - 1))]} if xs else {}


def proc_stats(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds user+system) of one process."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


def op_metric(op: OperatorProcess, name: str, **labels: str) -> float:
    m = scrape(f"http://127.0.0.1:{op.ports[1]}/metrics")
    return sum(v for (n, lab), v in m.items() if n == name and all(dict(lab).get(k) == x for k, x in labels.items()))


def op_requests(op: OperatorProcess) -> Counter:
    m = scrape(f"http://127.0.0.1:{op.ports[1]}/metrics")
    c: Counter = Counter()
    for (n, lab), v in m.items():
        if n == "moe_operator_api_requests_total":
            d = dict(lab)
            c[(d["verb"], d["resource"])] += v
    return c


def lease_holder(coord: client.CoordinationV1Api) -> str:
    try:
        return coord.read_namespaced_lease(LEASE[1], LEASE[0]).spec.holder_identity or ""
    except client.ApiException:
        return ""


def wait(what: str, check: Any, timeout: float, every: float = 0.5) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(every)
    raise TimeoutError(f"{what}: not after {timeout:.0f}s")


# ------------------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--deployments", type=int, default=200)
    p.add_argument("--namespaces", type=int, default=10)
    p.add_argument("--nodes", type=int, default=2000)
    p.add_argument("--cpu-nodes", type=int, default=4)
    p.add_argument("--window", type=float, default=120.0, help="steady-state window, seconds (operator on, then off)")
    p.add_argument("--only-apply", action="store_true", help="stop after the apply burst (admission only)")
    p.add_argument("-o", "--out", default=str(ROOT / "bench/results/control_plane.json"))
    a = p.parse_args(argv)
    # a SIGTERM (or a SIGINT where nohup ignores it) still runs the clean-up below: SystemExit unwinds the finally
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if subprocess.run([str(ROOT / "hack/testcluster"), "status"], capture_output=True).returncode != 0:
        print("the rig is not up: run `make up` first", file=sys.stderr)
        return 2
    config.load_kube_config(str(STATE / "kubeconfig"))
    core, custom, coord = client.CoreV1Api(), client.CustomObjectsApi(), client.CoordinationV1Api()
    logs = STATE / "logs"
    res: dict[str, Any] = {"deployments": a.deployments, "namespaces": a.namespaces, "nodes": a.nodes,
                           "node_lease_seconds": rig.NODE_LEASE_SECONDS}
    ops = [OperatorProcess(STATE / "kubeconfig", logs, identity=f"bench-operator-{x}",
                           webhook_port=29545 + 10 * k, metrics_port=29546 + 10 * k, liveness_port=29547 + 10 * k)
           for k, x in enumerate("ab")]
    with paused_demo(STATE):
        try:
            run(a, core, custom, coord, ops, res)
        finally:
            cleanup(a, core, custom, ops)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2, sort_keys=True))
    if not a.only_apply:
        report(res)
    return 0


def run(a: argparse.Namespace, core: client.CoreV1Api, custom: client.CustomObjectsApi,
        coord: client.CoordinationV1Api, ops: list[OperatorProcess], res: dict[str, Any]) -> None:
    leader, standby = ops
    kubectl = [str(STATE / "bin/kubectl"), "--kubeconfig", str(STATE / "kubeconfig")]
    subprocess.run([*kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")], check=True,
                   capture_output=True)
    subprocess.run([*kubectl, "wait", "--for=condition=Established", "crd/moedeployments.moe-operator.io",
                    "crd/acceleratorpools.moe-operator.io"], check=True, capture_output=True)
    t0 = time.monotonic()
    create_nodes(core, bench_nodes(a.nodes, a.cpu_nodes))
    res["nodes_ready_s"] = wait("bench nodes Ready", lambda: ready_nodes(core) >= a.nodes + a.cpu_nodes, 900, 2)
    log(f"{a.nodes + a.cpu_nodes} nodes Ready in {time.monotonic() - t0:.0f}s")
    leader.start()
    leader.wait_live(120)
    wait("leader", lambda: lease_holder(coord) == leader.identity, 60)
    if not _exists_pool(custom):
        custom.create_cluster_custom_object(GROUP, VERSION, "acceleratorpools", pool())
    wait("no bench namespace still terminating (an earlier run's)", lambda: not [
        x for x in core.list_namespace(label_selector=BENCH_LABEL).items if x.status.phase == "Terminating"], 1200, 5)
    for n in range(a.namespaces):
        with contextlib.suppress(client.ApiException):
            core.create_namespace({"metadata": {"name": f"bench-{n}", "labels": {BENCH_LABEL: "ns"}}})
    wait("namespaces' default ServiceAccounts", lambda: all(
        _has_sa(core, f"bench-{n}") for n in range(a.namespaces)), 120)

    # ------------------------------------------------------------------ apply: admission latency, time to Ready
    before = apiserver_metrics()
    lat: list[float] = []

    def create(i: int) -> None:
        obj = deployment(i, a.namespaces)
        s = time.perf_counter()
        custom.create_namespaced_custom_object(GROUP, VERSION, obj["metadata"]["namespace"], "moedeployments", obj)
        lat.append(time.perf_counter() - s)

    op_before = scrape(f"http://127.0.0.1:{leader.ports[1]}/metrics")
    probe = DirectProbe(leader.ports[0])
    probe.start()
    t_apply = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(create, range(a.deployments)))
    applied, applied_wall = time.monotonic(), time.time()
    after = apiserver_metrics()
    op_after = scrape(f"http://127.0.0.1:{leader.ports[1]}/metrics")
    probe.stop.set()
    probe.join(15)
    res["webhook_direct_ms"] = probe.quantiles()
    log(f"webhook round trip, posted directly (no apiserver) during the burst: {res['webhook_direct_ms']}")
    res["webhook_served_ms"] = {k: 1000 * v for k, v in served_quantiles(op_before, op_after).items()}
    res["webhook_thread_s"] = {st: sum(v - op_before.get((n, lab), 0.0) for (n, lab), v in op_after.items()
                                      if n == "moe_operator_admission_thread_seconds" and dict(lab)["state"] == st)
                               for st in ("running", "runqueue")}
    res["webhook_thread_s"]["wall"] = applied - t_apply
    log(f"inside the webhook server p50/p99 {res['webhook_served_ms']}; webhook thread {res['webhook_thread_s']}")
    lat.sort()
    res["apply_s"] = applied - t_apply
    res["create_latency_ms"] = {"p50": 1000 * statistics.median(lat), "p99": 1000 * lat[int(0.99 * (len(lat) - 1))],
                                "max": 1000 * lat[-1]}
    res["webhook_ms"] = {k: 1000 * v for k, v in webhook_quantiles(before, after).items()}
    log(f"applied {a.deployments} in {res['apply_s']:.1f}s; CREATE p50 {res['create_latency_ms']['p50']:.0f} ms "
        f"p99 {res['create_latency_ms']['p99']:.0f} ms; webhook (apiserver's view) {res['webhook_ms']}")
    res["webhooks_burst_ms"] = every_webhook(before, after)
    log(f"every webhook the apiserver called during the burst (its view): {res['webhooks_burst_ms']}")
    if a.only_apply:
        return
    try:
        res["ready_after_apply_s"] = wait("all Ready", lambda: ready_count(custom)[0] >= a.deployments, 300, 1)
    except TimeoutError:
        # LWS exclusive placement can deadlock two groups whose leaders land in one topology domain at once (the
        # race JobSet repairs in its pod reconciler, kubernetes-sigs/jobset#341; LWS does not): count, go on
        res["ready_after_apply_s"] = None
    res["ready_at_timeout"] = ready_count(custom)[0]
    res["lag_after_lws_available_s"] = status_lag(custom)
    res["lws_timeline_s"] = lws_timeline(core, custom, applied_wall)
    log(f"per LWS, s after the apply: {res['lws_timeline_s']}")
    pods = core.list_pod_for_all_namespaces(label_selector="moe-operator.io/deployment").items
    res["pods"] = sum(1 for p_ in pods if p_.metadata.namespace.startswith("bench-"))
    log(f"{res['ready_at_timeout']}/{a.deployments} Ready {res['ready_after_apply_s']}s after the apply "
        f"({res['pods']} pods)")

    # ------------------------------------------------------------------------------ steady state, operator on
    time.sleep(30)  # autoscaler first steps, pool refresh, resume passes settle
    res["admission_quiet"] = quiet_admission(custom, a.namespaces)
    log(f"admission with the fleet up and quiet (server dry-run CREATE): client p50 "
        f"{res['admission_quiet']['client_p50_ms']:.0f} ms p99 {res['admission_quiet']['client_p99_ms']:.0f} ms, "
        f"webhook p99 {res['admission_quiet']['webhook_ms'].get('p99', float('nan')):.0f} ms")
    res["on"] = window(a.window, leader, custom)
    # -------------------------------------------------------------------------- restart: resync with 0 writes
    leader.stop()
    t = time.monotonic()
    leader.start()
    leader.wait_live(120)
    wait("leader again", lambda: lease_holder(coord) == leader.identity, 60, 0.1)
    wait("every MoEDeployment reconciled after the restart",
         lambda: op_metric(leader, "moe_operator_reconcile_total") >= a.deployments, 600, 0.2)
    res["restart_resync_s"] = time.monotonic() - t
    time.sleep(5)
    res["restart_writes"] = op_metric(leader, "moe_operator_api_writes_total")
    log(f"restart: every MoEDeployment reconciled {res['restart_resync_s']:.1f}s after the process started, "
        f"{res['restart_writes']:.0f} writes")
    # ------------------------------------------------------------------------------------------------ failover
    standby.start()
    standby.wait_live(120)
    time.sleep(3)
    leader.kill()
    t = time.monotonic()
    wait("standby takes the Lease", lambda: lease_holder(coord) == standby.identity, 60, 0.1)
    res["failover_lease_s"] = time.monotonic() - t
    wait("standby acts", lambda: op_metric(standby, "moe_operator_reconcile_total") > 0 or
         op_metric(standby, "moe_operator_leader") == 1, 60, 0.1)
    res["failover_s"] = time.monotonic() - t
    log(f"failover: Lease taken {res['failover_lease_s']:.1f}s after SIGKILL of the leader")
    # ----------------------------------------------------------------------------- steady state, operator off
    standby.stop()
    time.sleep(10)
    res["off"] = window(a.window, None, custom)
    standby.start()  # for the clean-up: finalizers need an operator
    standby.wait_live(120)


def _ts(cond: dict | None) -> float | None:
    import datetime as dt

    t = (cond or {}).get("lastTransitionTime")
    return dt.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() if t else None


def status_lag(custom: client.CustomObjectsApi) -> dict[str, float]:
    """How long after its LeaderWorkerSet turned Available each MoEDeployment said Ready (1 s resolution): the part
    of apply -> Ready that is the operator's, apart from the LWS controller's own pace."""
    lags = []
    for m in custom.list_cluster_custom_object(GROUP, VERSION, "moedeployments")["items"]:
        ns, name = m["metadata"]["namespace"], m["metadata"]["name"]
        if not ns.startswith("bench-"):
            continue
        lws = custom.get_namespaced_custom_object("leaderworkerset.x-k8s.io", "v1", ns, "leaderworkersets", name)
        avail = _ts(next((c for c in (lws.get("status") or {}).get("conditions") or [] if c["type"] == "Available"),
                         None))
        ready = _ts(next((c for c in (m.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"),
                         None))
        if avail is not None and ready is not None:
            lags.append(ready - avail)
    lags.sort()
    return {"p50": statistics.median(lags), "max": lags[-1], "n": len(lags)} if lags else {}


def lws_timeline(core: client.CoreV1Api, custom: client.CustomObjectsApi, applied_at: float) -> dict[str, Any]:
    """Where apply -> Ready goes, per LeaderWorkerSet (seconds after the apply finished, 1 s resolution): when the
    operator created it, when the last of its pods turned Ready (scheduler, StatefulSets, kwok), when LWS said
    Available — and Available minus last pod Ready, the LWS controller's own lag."""
    ready_at: dict[tuple[str, str], float] = {}
    for pod in core.list_pod_for_all_namespaces(label_selector="leaderworkerset.sigs.k8s.io/name").items:
        ns, lws = pod.metadata.namespace or "", (pod.metadata.labels or {})["leaderworkerset.sigs.k8s.io/name"]
        cond = next((c for c in (pod.status.conditions or []) if c.type == "Ready" and c.status == "True"), None)
        if ns.startswith("bench-") and cond and cond.last_transition_time:
            t = cond.last_transition_time.timestamp()
            ready_at[(ns, lws)] = max(ready_at.get((ns, lws), t), t)
    rows: dict[str, list[float]] = {"created": [], "pods_ready": [], "available": [], "available_after_pods": []}
    for ns in {k[0] for k in ready_at}:
        for lws in custom.list_namespaced_custom_object("leaderworkerset.x-k8s.io", "v1", ns,
                                                        "leaderworkersets")["items"]:
            key = (ns, lws["metadata"]["name"])
            avail = _ts(next((c for c in (lws.get("status") or {}).get("conditions") or []
                              if c["type"] == "Available" and c["status"] == "True"), None))
            created = _ts({"lastTransitionTime": lws["metadata"]["creationTimestamp"]})
            if avail is None or created is None or key not in ready_at:
                continue
            rows["created"].append(created - applied_at)
            rows["pods_ready"].append(ready_at[key] - applied_at)
            rows["available"].append(avail - applied_at)
            rows["available_after_pods"].append(avail - ready_at[key])
    out: dict[str, Any] = {"n": len(rows["created"])}
    for k, xs in rows.items():
        xs.sort()
        if xs:
            out[k] = {"p50": statistics.median(xs), "max": xs[-1]}
    return out


def quiet_admission(custom: client.CustomObjectsApi, namespaces: int, n: int = 100) -> dict[str, Any]:
    """Admission latency once the fleet is up: n sequential server-side dry-run CREATEs (each goes through the
    webhook, nothing is stored)."""
    before = apiserver_metrics()
    lat = []
    for i in range(n):
        obj = deployment(1000 + i, namespaces)
        s = time.perf_counter()
        custom.create_namespaced_custom_object(GROUP, VERSION, obj["metadata"]["namespace"], "moedeployments", obj,
                                               dry_run="All")
        lat.append(time.perf_counter() - s)
    lat.sort()
    return {"client_p50_ms": 1000 * statistics.median(lat), "client_p99_ms": 1000 * lat[int(0.99 * (n - 1))],
            "webhook_ms": {k: 1000 * v for k, v in webhook_quantiles(before, apiserver_metrics()).items()}}


def _exists_pool(custom: client.CustomObjectsApi) -> bool:
    try:
        custom.get_cluster_custom_object(GROUP, VERSION, "acceleratorpools", POOL)
        return True
    except client.ApiException:
        return False


def _has_sa(core: client.CoreV1Api, ns: str) -> bool:
    try:
        core.read_namespaced_service_account("default", ns)
        return True
    except client.ApiException:
        return False


def window(seconds: float, op: OperatorProcess | None, custom: client.CustomObjectsApi) -> dict[str, Any]:
    """Deltas over one steady-state window."""
    log(f"steady-state window {seconds:.0f}s, operator {'on' if op else 'off'}")
    before = apiserver_metrics()
    w0 = op_metric(op, "moe_operator_api_writes_total") if op else 0.0
    r0 = op_requests(op) if op else Counter()
    rec0 = op_metric(op, "moe_operator_reconcile_total") if op else 0.0
    ev0 = _events(custom)
    st0 = proc_stats(op.proc.pid) if op and op.proc else (0.0, 0.0)
    t0 = time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    out: dict[str, Any] = {"seconds": dt, "apiserver": {f"{v} {r}": n for (v, r), n in
                                                        requests_by(before, apiserver_metrics()).items() if n}}
    by = _events(custom)
    by.subtract(ev0)
    out["events_by_reason"] = {k: v for k, v in by.most_common(8) if v}
    out["events"] = sum(v for v in by.values() if v > 0)
    out["operator_events"] = sum(v for k, v in by.items() if v > 0 and k.startswith("moe-operator"))
    if op:
        st1 = proc_stats(op.proc.pid) if op.proc else (0.0, 0.0)
        out["operator_writes"] = op_metric(op, "moe_operator_api_writes_total") - w0
        out["operator_requests"] = {f"{v} {r}": n for (v, r), n in (op_requests(op) - r0).items() if n}
        out["reconciles"] = op_metric(op, "moe_operator_reconcile_total") - rec0
        out["rss_mib"], out["cpu_percent"] = st1[0], 100 * (st1[1] - st0[1]) / dt
    return out


def _events(custom: client.CustomObjectsApi) -> Counter:
    """Events in the bench namespaces by (reporting component, reason), their count fields summed (a repeated event
    is a PATCH of `count`)."""
    core = client.CoreV1Api()
    c: Counter = Counter()
    for e in core.list_event_for_all_namespaces().items:
        if e.metadata.namespace.startswith("bench-"):
            who = e.reporting_component or (e.source.component if e.source else "") or "?"
            c[f"{who} {e.reason}"] += int(e.count or 1)
    return c


def cleanup(a: argparse.Namespace, core: client.CoreV1Api, custom: client.CustomObjectsApi,
            ops: list[OperatorProcess]) -> None:
    log("clean-up: MoEDeployments (the operator releases their finalizers), their pods, the pool, the nodes")
    for n in range(a.namespaces):
        with contextlib.suppress(client.ApiException):
            custom.delete_collection_namespaced_custom_object(GROUP, VERSION, f"bench-{n}", "moedeployments")
    with contextlib.suppress(TimeoutError):
        wait("bench MoEDeployments gone", lambda: ready_count(custom)[1] == 0, 300, 2)
    # the namespaces stay (empty; reused by the next run): the namespace controller takes minutes over 10 of them on
    # 2 cores, and nothing here depends on it. `kubectl delete ns -l moe-operator.io/bench=ns` removes them.
    with contextlib.suppress(TimeoutError):
        wait("bench pods gone", lambda: not [p for p in core.list_pod_for_all_namespaces(
            label_selector="moe-operator.io/deployment").items if p.metadata.namespace.startswith("bench-")], 300, 2)
    with contextlib.suppress(client.ApiException):
        custom.delete_cluster_custom_object(GROUP, VERSION, "acceleratorpools", POOL)
    for op in ops:
        op.stop()
    # a DELETE of 2,000 nodes outlives the apiserver's 60 s request timeout on 2 cores (504) and goes on server-side
    for _ in range(10):
        with contextlib.suppress(client.ApiException):
            core.delete_collection_node(label_selector=BENCH_LABEL)
        if not core.list_node(label_selector=BENCH_LABEL, limit=1).items:
            return


def report(res: dict[str, Any]) -> None:
    on, off = res.get("on", {}), res.get("off", {})
    n = res["deployments"]
    print(f"\n## Control plane at scale: {n} MoEDeployments in {res['namespaces']} namespaces, {res['pods']} group "
          f"and router pods, {res['nodes']} kwok H200 nodes (node Lease {res['node_lease_seconds']} s)\n")
    print("| measure | value | target |\n|---|---|---|")
    rows = [
        ("apply -> all Ready", (f"{res['ready_after_apply_s']:.1f} s" if res["ready_after_apply_s"] is not None
                                else f"{res['ready_at_timeout']}/{n} after 300 s") +
         f" after the apply finished ({res['apply_s']:.1f} s to apply)", "< 60 s"),
        ("MoEDeployment Ready after its LWS turned Available, p50 / max",
         f"{res['lag_after_lws_available_s'].get('p50', float('nan')):.0f} / "
         f"{res['lag_after_lws_available_s'].get('max', float('nan')):.0f} s (1 s resolution)", ""),
        ("per LWS (s after the apply, p50 / max): created; last pod Ready; Available; Available - last pod Ready",
         "; ".join(f"{res['lws_timeline_s'].get(k, {}).get('p50', float('nan')):.0f} / "
                   f"{res['lws_timeline_s'].get(k, {}).get('max', float('nan')):.0f}"
                   for k in ("created", "pods_ready", "available", "available_after_pods")), ""),
        ("admission during the burst, inside the operator's webhook server p50 / p99",
         " / ".join(f"{res['webhook_served_ms'].get(k, float('nan')):.0f}" for k in ("p50", "p99")) + " ms",
         "p99 < 100 ms"),
        ("same, posted to the webhook directly (new TLS connection each, no apiserver) p50 / p99",
         " / ".join(f"{res['webhook_direct_ms'].get(k, float('nan')):.0f}" for k in ("p50", "p99")) + " ms", ""),
        ("same, the apiserver's view of LWS's own (Go) webhooks, p50 / p99 (control)",
         "; ".join(f"{k} {v.get('p50', float('nan')):.0f} / {v.get('p99', float('nan')):.0f} ms"
                   for k, v in res["webhooks_burst_ms"].items() if "moe-operator" not in k), ""),
        ("CREATE latency p50 / p99 (client, incl. webhook)",
         f"{res['create_latency_ms']['p50']:.0f} / {res['create_latency_ms']['p99']:.0f} ms", ""),
        ("admission, fleet up and quiet: client p50 / p99; webhook p99",
         f"{res['admission_quiet']['client_p50_ms']:.0f} / {res['admission_quiet']['client_p99_ms']:.0f} ms; "
         f"{res['admission_quiet']['webhook_ms'].get('p99', float('nan')):.0f} ms", "p99 < 100 ms"),
        ("admission webhook during the apply burst p50 / p99 (apiserver histogram)",
         " / ".join(f"{res['webhook_ms'].get(k, float('nan')):.0f}" for k in ("p50", "p99")) + " ms", "p99 < 100 ms"),
    ]
    att = Counter({k: v for k, v in on.get("apiserver", {}).items()})
    att.subtract(off.get("apiserver", {}))
    total = sum(v for k, v in att.items() if not k.startswith("WATCH")) / on["seconds"]
    mine = sum(v for k, v in on.get("operator_requests", {}).items()) / on["seconds"]
    rows += [
        ("API requests/s attributable (on - off, non-watch)", f"{total:.2f} ({total / n:.4f} per MoEDeployment)",
         "<= 0.2 per MoEDeployment"),
        ("operator's own client requests/s", f"{mine:.3f} ({mine / n:.4f} per MoEDeployment)", ""),
        ("object writes/min (steady)", f"{60 * on['operator_writes'] / on['seconds']:.1f}", "0"),
        ("events/min (steady): all / the operator's", f"{60 * on['events'] / on['seconds']:.1f} / "
         f"{60 * on['operator_events'] / on['seconds']:.1f}", ""),
        ("reconciles/min (steady)", f"{60 * on['reconciles'] / on['seconds']:.1f}", ""),
        ("operator RSS / CPU", f"{on['rss_mib']:.0f} MiB / {on['cpu_percent']:.1f} %", "< 250 MiB"),
        ("restart: all reconciled / writes", f"{res['restart_resync_s']:.1f} s / {res['restart_writes']:.0f}",
         "0 writes"),
        ("failover (SIGKILL -> standby holds the Lease)", f"{res['failover_lease_s']:.1f} s", "< 15 s"),
    ]
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    print("\nattributable apiserver requests/s by verb and resource (on - off):")
    for k, v in sorted(att.items(), key=lambda kv: -abs(kv[1])):
        if abs(v) / on["seconds"] >= 0.01:
            print(f"  {k:50s} {v / on['seconds']:8.3f}")
    print("events in the window by (component, reason):", on.get("events_by_reason"))
    print("operator's own requests/s:", {k: round(v / on["seconds"], 3) for k, v in
                                         on.get("operator_requests", {}).items()})


if __name__ == "__main__":
    sys.exit(main())
