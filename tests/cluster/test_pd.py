"""Prefill/decode disaggregation end to end on the live rig (issue 13's acceptance test): a disaggregated Kimi-K2.5
MoEDeployment on the rig's H200 pool renders decode groups (LWS `pd`) and prefill groups (LWS `pd-prefill`) that the
pod runner serves with PD simulators (moe_sim.pd_serve) at their pod IPs, and SMG 1.13.0 in PD mode in front. A slice
of the Mooncake trace replayed through SMG:

1. every request succeeds, and each was prefilled (and its KV sent) by a prefill server and admitted and decoded by
   a decode server (their /metrics: prefill counters and kv_transfer histograms, PD queue gauges, decode admissions);
2. the decode role scales up on KV load and back down through a drain, 0 failed requests;
3. the prefill role scales up on its backlog (status.prefill.desiredGroups, the prefill LWS's replicas, the new group
   routed and serving in SMG) and back down through a drain (status.prefill.drain set, then cleared), 0 failures;
4. `kubectl get moed` and the Ready condition account for both roles.

Every wait polls (tests/kube.py wait_for) with generous timeouts; nothing asserts on how long something took."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes.aio import client
from prometheus_client.parser import text_string_to_metric_families

from kube import Cluster, wait_for
from moe_sim.loadgen import ReplayRequest, ReplayResult, replay, trace_slice
from operator_proc import OperatorProcess, pod_runner

ROOT = Path(__file__).resolve().parents[2]
ROUTER_PYTHON = os.environ.get("SMG_PYTHON", str(ROOT / ".testcluster/venv-router/bin/python"))
GROUP, VERSION, PLURAL = "moe-operator.io", "v1alpha1", "moedeployments"
LWS_API = ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets")
KV_PER_DP = 65536  # small simulated KV pools: a decode group (attention DP8) holds 524k tokens
#: a simulated prefill server prefills as fast as the planner rates a prefill group (status.prefill.plan
#: promptTokensPerSecondPerGroup, ~31k uncached tokens/s for this spec), one prompt at a time
PREFILL_TPS = 31000
MODEL = "moonshotai/Kimi-K2.5"
TRACE = ROOT / "tests/fixtures/mooncake_conversation_first_180s.jsonl"
NAME = "pd"
ROLE = "moe-operator.io/pd-role"
GROUP_INDEX = "leaderworkerset.sigs.k8s.io/group-index"
WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"


@pytest.fixture
def pd_fleet(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Path]:
    if not Path(ROUTER_PYTHON).exists():
        msg = f"SMG venv missing at {ROUTER_PYTHON} (hack/setup-router)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    with pod_runner(cluster.kubeconfig, namespace, tmp_path, ROUTER_PYTHON, "--cold-start", "0",
                    "--decode-tps", "20", "--prefill-tps", str(PREFILL_TPS),
                    "--default-max-total-tokens", str(KV_PER_DP)) as log:
        yield log


def pd_kimi() -> dict[str, Any]:
    """Kimi-K2.5 INT4 on the rig's H200 pool, disaggregated: decode groups are the aggregated test's (1-node
    attention-DP8, KV autoscaled at a 50 % target, 1..2 groups); prefill groups 1..2, autoscaled on prompt rate and
    backlog at a 50 % target utilization of the planner's prefill throughput (which the simulators prefill at,
    PREFILL_TPS): the trace at 3x its rate needs two prefill groups, at 1x or 1/2x one. The simulators start at once
    (--cold-start 0): kwok marks a pod Ready without probing it, so SMG registers it at once, and a 503 from a
    starting server makes SMG retry the registration only 30 s later."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "MoEDeployment", "metadata": {"name": NAME},
        "spec": {"model": {"catalog": "kimi-k2.5"}, "weights": {"huggingFace": {"repo": MODEL}},
                 "precision": "int4", "sessions": {"target": 200, "contextTokens": 8192}, "pool": "rig-h200",
                 "maxGroups": 2,
                 "autoscaling": {"enabled": True, "minGroups": 1, "maxGroups": 2, "targetKVUtilization": 0.5,
                                 "coldStartSeconds": 3, "scaleDownStabilizationSeconds": 20},
                 "drain": {"timeoutSeconds": 120},
                 "disaggregation": {"prefill": {
                     "promptTokensPerSecond": 8000, "promptTokens": 4000, "ttftSeconds": 1.0,
                     "minGroups": 1, "maxGroups": 2,
                     "autoscaling": {"enabled": True, "targetUtilization": 0.5,
                                     "scaleDownStabilizationSeconds": 20}}}},
    }


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], family: str, sample: str | None = None) -> float:
    f = fams.get(family)
    return sum(s.value for s in f.samples if s.name == (sample or family)) if f is not None else 0.0


def phase(duration_s: float, rate: float) -> list[ReplayRequest]:
    """The first `duration_s` of Kimi's production conversation trace (Mooncake) at `rate` x its arrival rate,
    prompts built from its prefix blocks scaled by 1/2 (at most 7,000 tokens: the 8k context), outputs by 1/2 (at
    most 256). Four times test_autoscaling's prompts against four times its KV pools: the same decode load, and
    enough prompt tokens for the prefill role (the simulators' cost is per request, not per token)."""
    return trace_slice(str(TRACE), duration_s=duration_s, rate_scale=rate, token_scale=0.5, output_scale=0.5,
                       max_input_tokens=7000, max_output_tokens=256)


def check(res: ReplayResult, name: str) -> None:
    assert res.sent and res.ok == res.sent and not res.failures, \
        f"{name}: {len(res.failures)} of {res.sent} requests failed: {res.failures[:5]}"


async def test_pd_trace_through_smg_scales_both_roles_and_drains_them_with_zero_failures(
        api: client.ApiClient, namespace: str, operator: OperatorProcess, pd_fleet: Path,
        cluster: Cluster) -> None:
    co = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    await co.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, pd_kimi())
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    t0 = time.monotonic()
    timeline: list[str] = []  # what changed when, for the failure message (and -s)

    async def status() -> dict[str, Any]:
        obj = await co.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME)
        st = dict(obj.get("status") or {})
        pf = st.get("prefill") or {}
        line = (f"decode {st.get('readyGroups')}/{st.get('desiredGroups')} drain={st.get('drain')} "
                f"kv={st.get('kvUtilization')}; prefill {pf.get('readyGroups')}/{pf.get('desiredGroups')} "
                f"drain={pf.get('drain')} rate={pf.get('promptTokensPerSecond')} backlog={pf.get('backlogTokens')}")
        if not timeline or not timeline[-1].endswith(line):
            timeline.append(f"{time.monotonic() - t0:6.1f}s {line}")
        return st

    async def lws_replicas(name: str) -> int | None:
        try:
            obj = await co.get_namespaced_custom_object(*LWS_API[:2], namespace, LWS_API[2], name)
        except client.ApiException:
            return None
        return int(obj["spec"]["replicas"])

    async def leaders(role: str) -> dict[int, str]:
        """group index -> leader pod IP of one role's Running leaders."""
        pods = (await core.list_namespaced_pod(namespace, label_selector=f"{ROLE}={role}")).items
        return {int(p.metadata.labels[GROUP_INDEX]): p.status.pod_ip for p in pods
                if p.metadata.labels.get(WORKER_INDEX) == "0" and p.status.phase == "Running" and p.status.pod_ip
                and not p.metadata.deletion_timestamp}

    async def metrics(ip: str) -> dict[str, Any]:
        async with http.get(f"http://{ip}:30000/metrics") as r:
            r.raise_for_status()
            return families(await r.text())

    async def router() -> str | None:
        pods = (await core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/component=router")).items
        ip = next((p.status.pod_ip for p in pods if p.status.phase == "Running" and p.status.pod_ip), None)
        return f"http://{ip}:8000" if ip else None

    async def workers(url: str) -> list[dict[str, Any]]:
        async with http.get(f"{url}/workers") as r:
            r.raise_for_status()
            return list((await r.json()).get("workers") or [])

    async def routed(url: str, role: str, ip: str) -> bool:
        """SMG lists the server at `ip` as a healthy worker of `role`."""
        return any(w.get("is_healthy") and f"//{ip}:" in str(w.get("url"))
                   and role in json.dumps(w.get("worker_type", "")).lower() for w in await workers(url))

    async def describe() -> str:
        st = await status()
        keys = ("desiredGroups", "readyGroups", "kvUtilization", "drain", "lastScaleReason", "prefill")
        shown = {k: st.get(k) for k in keys}
        if isinstance(shown.get("prefill"), dict):
            shown["prefill"] = {k: v for k, v in shown["prefill"].items() if k != "plan"}
        pods = (await core.list_namespaced_pod(namespace)).items
        lines = [f"  {p.metadata.name} {p.status.phase} {p.status.pod_ip} {p.metadata.labels.get(ROLE)}"
                 for p in pods]
        try:
            url = await router()
            ws = [(w.get("url"), w.get("worker_type"), w.get("is_healthy")) for w in await workers(url)] \
                if url else "no router"
        except (aiohttp.ClientError, TimeoutError) as exc:
            ws = f"{type(exc).__name__}: {exc}"
        log = await asyncio.to_thread(pd_fleet.read_text, errors="replace")
        return ("timeline:\n" + "\n".join(timeline) + f"\nstatus: {shown}\nSMG workers: {ws}\n" + "\n".join(lines)
                + f"\npod runner log:\n{log[-2000:]}\noperator log:\n{operator.tail(3000)}")

    watcher: asyncio.Task[None] | None = None
    try:
        # ---- both roles up, SMG pairing one prefill and one decode server ---------------------------------------
        async def ready() -> bool:
            st = await status()
            pf = st.get("prefill") or {}
            cond = next((c for c in st.get("conditions", []) if c["type"] == "Ready"), {})
            return (st.get("readyGroups") == st.get("desiredGroups") == 1
                    and pf.get("readyGroups") == pf.get("desiredGroups") == 1 and cond.get("status") == "True")

        await wait_for(ready, timeout=120, what="1 decode + 1 prefill group ready", describe=describe)
        url = await wait_for(router, timeout=90, what="a running router pod", describe=describe)
        (p0,), (d0,) = (await leaders("prefill")).values(), (await leaders("decode")).values()  # one group each

        async def pair_routed() -> bool:
            return await routed(url, "prefill", p0) and await routed(url, "decode", d0)

        await wait_for(pair_routed, timeout=90, what="SMG routing to the prefill and the decode server",
                       describe=describe)
        st = await status()
        cond = next(c for c in st["conditions"] if c["type"] == "Ready")
        assert "1/1 decode groups ready" in cond["message"] and "1/1 prefill groups ready" in cond["message"], cond
        assert st["prefill"]["groupSummary"] == "1/1" and st["prefill"]["plan"]["promptTokensPerSecondPerGroup"] > 0

        # ---- (1) a first trace slice at its own rate: every request prefilled by a prefill server (which sent its KV),
        # admitted and decoded by a decode server. Counted over every leader of each role (an autoscaler step during
        # the slice may add one: it starts from 0), so the sums are exact whatever either autoscaler does meanwhile
        async def role_metrics(role: str) -> dict[str, dict[str, Any]]:
            return {ip: await metrics(ip) for ip in (await leaders(role)).values()}

        before = {role: await role_metrics(role) for role in ("prefill", "decode")}
        warm = await replay(http, url, phase(10, 1.0), model=MODEL, timeout_s=300)
        check(warm, "first slice")
        after = {role: await role_metrics(role) for role in ("prefill", "decode")}

        def grew(role: str, family: str, suffix: str = "_total") -> float:
            sample = family + suffix
            return sum(value(f, family, sample) - value(before[role].get(ip, {}), family, sample)
                       for ip, f in after[role].items())

        n = warm.sent
        # the prefill prefilled each request (one token each: SGLang cuts a prefill request to max_new_tokens=1) and
        # sent its KV over the link, observed once per request in the kv_transfer histograms
        assert grew("prefill", "sglang:num_requests") == n
        assert grew("prefill", "sglang:generation_tokens") == n
        assert grew("prefill", "sglang:prompt_tokens") > 0
        for h in ("sglang:kv_transfer_latency_ms", "sglang:kv_transfer_total_mb", "sglang:kv_transfer_speed_gb_s"):
            assert grew("prefill", h, "_count") == n, h
        # the decode admitted each into its KV pool (one queue-time observation at admission), handshook with the
        # prefill's bootstrap server and decoded the answer the client got
        assert grew("decode", "sglang:queue_time_seconds", "_count") == n
        assert grew("decode", "sglang:kv_transfer_bootstrap_ms", "_count") == n
        assert grew("decode", "sglang:num_requests") == n
        assert grew("decode", "sglang:generation_tokens") >= n
        # nothing left half-way in either role's PD queues, nothing failed
        gauges = {"prefill": ("sglang:num_prefill_bootstrap_queue_reqs", "sglang:num_prefill_inflight_queue_reqs"),
                  "decode": ("sglang:num_decode_prealloc_queue_reqs", "sglang:num_decode_transfer_queue_reqs")}
        for role, fams_by_ip in after.items():
            for fams in fams_by_ip.values():
                for g in gauges[role]:
                    assert g in fams and value(fams, g) == 0, (role, g, value(fams, g))
                for c in ("sglang:num_bootstrap_failed_reqs", "sglang:num_transfer_failed_reqs"):
                    assert value(fams, c, c + "_total") == 0, (role, c)

        served: dict[tuple[str, int], float] = {}  # (role, group) -> most requests its leader reported served

        async def watch_served() -> None:
            while True:
                for role in ("prefill", "decode"):
                    try:
                        for g, ip in (await leaders(role)).items():
                            n_ = value(await metrics(ip), "sglang:num_requests", "sglang:num_requests_total")
                            served[(role, g)] = max(n_, served.get((role, g), 0.0))
                    except (aiohttp.ClientError, TimeoutError, client.ApiException):
                        pass  # a pod starting or gone; the next round sees it
                await asyncio.sleep(1.0)

        watcher = asyncio.create_task(watch_served())

        # ---- (2)+(3) rising: 3x the trace's rate; prompt tokens/s and decode KV both run past one group ---------
        async def both_scaled_up() -> bool:
            st = await status()
            pf = st.get("prefill") or {}
            if not (st.get("desiredGroups") == st.get("readyGroups") == 2
                    and pf.get("desiredGroups") == pf.get("readyGroups") == 2
                    and await lws_replicas(NAME) == 2 and await lws_replicas(f"{NAME}-prefill") == 2):
                return False
            new_p, new_d = (await leaders("prefill")).get(1), (await leaders("decode")).get(1)
            # the new groups are routable in SMG: listed as healthy workers of their role
            return bool(new_p and new_d and await routed(url, "prefill", new_p) and await routed(url, "decode", new_d))

        stop_high = asyncio.Event()
        high_task = asyncio.create_task(replay(http, url, phase(180, 3.0), model=MODEL, stop=stop_high,
                                               timeout_s=300))
        try:
            await wait_for(both_scaled_up, timeout=150, interval=1.0,
                           what="a second decode and a second prefill group, Ready and routed", describe=describe)
            up = await status()
        finally:
            stop_high.set()
            high = await high_task
        assert "-> 2 groups" in up.get("lastScaleReason", ""), up.get("lastScaleReason")
        assert "needs 2 group(s)" in up["prefill"].get("lastScaleReason", ""), up["prefill"]

        # ---- falling: half the trace's rate, through both drains and past them ------------------------------------
        seen_prefill_drain: list[dict[str, Any]] = []

        async def both_scaled_down() -> bool:
            st = await status()
            pf = st.get("prefill") or {}
            if pf.get("drain"):
                seen_prefill_drain.append(pf["drain"])
            return (st.get("desiredGroups") == 1 and not st.get("drain") and await lws_replicas(NAME) == 1
                    and pf.get("desiredGroups") == 1 and not pf.get("drain")
                    and await lws_replicas(f"{NAME}-prefill") == 1)

        stop_low = asyncio.Event()
        low_task = asyncio.create_task(replay(http, url, phase(180, 0.5), model=MODEL, stop=stop_low, timeout_s=300))
        try:
            await wait_for(both_scaled_down, timeout=240, interval=0.5,
                           what="the second decode and prefill groups drained and removed", describe=describe)
            await asyncio.sleep(5)  # the remaining pair keeps serving
        finally:
            stop_low.set()
            low = await low_task
        watcher.cancel()
        check(high, "rising phase")
        # SMG sent the added groups of both roles their share: each prefilled, resp. decoded, requests
        assert served.get(("prefill", 1), 0) > 0 and served.get(("decode", 1), 0) > 0, served
        check(low, "falling phase")
        assert high.sent >= 50 and low.sent >= 5, (high.summary(), low.summary())

        st = await status()
        # decode: drained because the group went idle once SMG dropped it, not by the drain timeout
        assert "drained (0 running requests)" in st.get("lastScaleReason", ""), st.get("lastScaleReason")
        # prefill: status.prefill.drain named group 1 while it drained, and it ended idle
        assert seen_prefill_drain and all(d["group"] == 1 for d in seen_prefill_drain), seen_prefill_drain
        assert "prefill group 1 drained (idle)" in st["prefill"].get("lastScaleReason", ""), st["prefill"]
        events = (await core.list_namespaced_event(namespace)).items
        reasons = {e.reason for e in events if e.involved_object.name == NAME}
        assert {"ScaledUp", "Draining", "ScaledDown", "PrefillScaledUp", "PrefillDraining",
                "PrefillScaledDown"} <= reasons, reasons

        # ---- (4) kubectl get moed: both roles in the columns and in Ready ------------------------------------------
        async def settled() -> bool:
            s = await status()
            pf = s.get("prefill") or {}
            return s.get("groupSummary") == "1/1" and pf.get("groupSummary") == "1/1" and any(
                c["type"] == "Ready" and c["status"] == "True" for c in s.get("conditions", []))

        await wait_for(settled, timeout=60, what="1/1 decode and 1/1 prefill groups, Ready", describe=describe)
        table = cluster.kubectl("-n", namespace, "get", "moed", NAME).stdout.split("\n")
        row = dict(zip(table[0].split(), table[1].split(), strict=True))
        assert (row["GROUPS"], row["PREFILL"], row["READY"]) == ("1/1", "1/1", "True"), table
        cond = next(c for c in (await status())["conditions"] if c["type"] == "Ready")
        assert cond["reason"] == "AllGroupsReady" and "1/1 prefill groups ready" in cond["message"], cond
    finally:
        if watcher is not None:
            watcher.cancel()
        await http.close()
        print("\n".join(timeline))
    await co.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME)

    async def gone() -> bool:
        return not (await co.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL))["items"]

    await wait_for(gone, timeout=30, what="MoEDeployment deleted")
