"""KV-cache autoscaling end to end on the live rig: SGLang simulators at the group pods' IPs, the real router (SMG)
discovering routable leaders, the operator scraping /metrics. A slice of the Mooncake trace replayed through the router
raises KV occupancy -> a group is added and becomes Ready; the load falls -> the highest group is drained and removed
with 0 failed requests; a group whose /metrics hangs does not freeze scaling of the others."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from kubernetes.aio import client

from kube import Cluster, wait_for
from moe_sim.loadgen import ReplayRequest, replay, trace_slice
from operator_proc import OperatorProcess, pod_runner

ROOT = Path(__file__).resolve().parents[2]
ROUTER_PYTHON = os.environ.get("SMG_PYTHON", str(ROOT / ".testcluster/venv-router/bin/python"))
GROUP, VERSION, PLURAL = "moe-operator.io", "v1alpha1", "moedeployments"
KV_PER_DP = 16384  # small simulated KV pools (8 DP ranks: 131k tokens per group), so a trace slice fills a group
PROMPT = "x" * 8000  # ~2000 prompt tokens for the simulator (len/4), whatever the router forwards
MODEL = "moonshotai/Kimi-K2.5"
TRACE = ROOT / "tests/fixtures/mooncake_conversation_first_180s.jsonl"


@pytest.fixture
def live_fleet(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Path]:
    if not Path(ROUTER_PYTHON).exists():
        msg = f"SMG venv missing at {ROUTER_PYTHON} (hack/setup-router)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    with pod_runner(cluster.kubeconfig, namespace, tmp_path, ROUTER_PYTHON, "--cold-start", "3",
                    "--decode-tps", "20", "--default-max-total-tokens", str(KV_PER_DP)) as log:
        yield log


def autoscaled_kimi(name: str, *, min_groups: int, max_groups: int, stabilization_s: int,
                    drain_timeout_s: int) -> dict:
    """Kimi-K2.5 INT4 on the rig's H200 pool (1-node attention-DP8 groups), autoscaled at a 50 % KV target, 5 s cold
    start."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "MoEDeployment", "metadata": {"name": name},
        "spec": {"model": {"catalog": "kimi-k2.5"}, "weights": {"huggingFace": {"repo": "moonshotai/Kimi-K2.5"}},
                 # 200 x 8k does not fit 2 plain-TP8 groups (76 each), so the min-cost plan is one node with attention
                 # DP8 (440 per group): 8 simulated DP ranks of KV_PER_DP tokens per group, as the load below expects
                 "precision": "int4", "sessions": {"target": 200, "contextTokens": 8192}, "pool": "rig-h200",
                 "maxGroups": max_groups,
                 "autoscaling": {"enabled": True, "minGroups": min_groups, "maxGroups": max_groups,
                                 "targetKVUtilization": 0.5, "coldStartSeconds": 5,
                                 "scaleDownStabilizationSeconds": stabilization_s},
                 "drain": {"timeoutSeconds": drain_timeout_s}},
    }


async def get_moed(api: client.ApiClient, ns: str, name: str) -> dict:
    return await client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


async def router_url(core: client.CoreV1Api, namespace: str) -> str | None:
    """The URL of a Running router pod that answers /v1/models, else None (for wait_for)."""
    pods = (await core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/component=router")).items
    ip = next((p.status.pod_ip for p in pods if p.status.phase == "Running" and p.status.pod_ip), None)
    if not ip:
        return None
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://{ip}:8000/v1/models",
                                                       timeout=aiohttp.ClientTimeout(total=2)) as r:
            return f"http://{ip}:8000" if r.status == 200 else None
    except (TimeoutError, aiohttp.ClientError):
        return None


async def test_kv_load_adds_a_group_and_falling_load_drains_one_with_zero_failures(
        api: client.ApiClient, namespace: str, operator: OperatorProcess, live_fleet: Path) -> None:
    co = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    await co.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, autoscaled_kimi(
        "auto", min_groups=1, max_groups=2, stabilization_s=20, drain_timeout_s=120))

    async def status() -> dict:
        return (await get_moed(api, namespace, "auto")).get("status", {})

    async def describe() -> str:
        st = await status()
        pods = (await core.list_namespaced_pod(namespace)).items
        keys = ("desiredGroups", "readyGroups", "kvUtilization", "drain", "lastScaleReason")
        shown = {k: st.get(k) for k in keys}
        lines = [f"  {p.metadata.name} {p.status.phase} {p.status.pod_ip} {p.metadata.labels}" for p in pods]
        log = await asyncio.to_thread(live_fleet.read_text, errors="replace")
        return f"status: {shown}\n" + "\n".join(lines) + f"\npod runner log:\n{log[-2000:]}"

    async def one_group_ready() -> bool:
        st = await status()
        return st.get("readyGroups") == 1 and st.get("desiredGroups") == 1

    await wait_for(one_group_ready, timeout=90, what="1 ready group", describe=describe)
    url = await wait_for(lambda: router_url(core, namespace), timeout=90, what="the router answering",
                         describe=describe)

    # load: the first 180 s of Kimi's production conversation trace (Mooncake), prompts built from its prefix
    # blocks and scaled by 1/8 (outputs by 1/2) to fit the rig's small KV pools (8 DP ranks x 16k tokens per
    # group). At 3x its rate that is ~99k KV tokens in use on average (75 % of one group, target 50 %); at half
    # its rate ~16k (6 % of two groups)
    def phase(rate: float) -> list[ReplayRequest]:
        return trace_slice(str(TRACE), duration_s=180, rate_scale=rate, token_scale=0.125, output_scale=0.5,
                           max_input_tokens=2048, max_output_tokens=256)

    async def scaled_up() -> bool:
        st = await status()
        return st.get("desiredGroups") == 2 and st.get("readyGroups") == 2

    async def scaled_down() -> bool:
        st = await status()
        lws = await co.get_namespaced_custom_object("leaderworkerset.x-k8s.io", "v1", namespace,
                                                    "leaderworkersets", "auto")
        return st.get("desiredGroups") == 1 and lws["spec"]["replicas"] == 1 and not st.get("drain")

    async with aiohttp.ClientSession() as session:
        # rising: the slice at 3x its rate (~9 requests/s for 60 s): KV of one group runs out, requests queue
        fast = asyncio.create_task(replay(session, url, phase(3.0), model=MODEL))
        await wait_for(scaled_up, timeout=90, what="a second group added and Ready", describe=describe)
        up_reason = (await status()).get("lastScaleReason", "")
        high = await fast
        # falling: the same slice at half its rate (~1.5 requests/s), through the drain and the scale-down and a
        # few seconds past it (the remaining group must keep serving)
        stop = asyncio.Event()
        low = asyncio.create_task(replay(session, url, phase(0.5), model=MODEL, stop=stop))
        try:
            await wait_for(scaled_down, timeout=150, interval=1.0, what="the drained group removed",
                           describe=describe)
            await asyncio.sleep(5)
        finally:
            stop.set()
            low_result = await low
    st = await status()
    # drained because the group went idle once the routers dropped it (routing.py), not by the drain timeout
    assert "drained (0 running requests)" in st.get("lastScaleReason", ""), st.get("lastScaleReason")
    assert "-> 2 groups" in up_reason, up_reason
    for name, res in (("rising", high), ("falling", low_result)):
        assert res.ok == res.sent and not res.failures, \
            f"{name} phase: {len(res.failures)} of {res.sent} requests failed: {res.failures[:5]}"
    assert high.sent > 500 and low_result.sent >= 5, (high.summary(), low_result.summary())
    events = (await core.list_namespaced_event(namespace)).items
    reasons = {e.reason for e in events if e.involved_object.name == "auto"}
    assert {"ScaledUp", "Draining", "ScaledDown"} <= reasons, reasons
    await co.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "auto")

    async def gone() -> bool:
        return not (await co.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL))["items"]

    await wait_for(gone, timeout=30, what="MoEDeployment deleted")



async def test_a_silent_metrics_endpoint_does_not_freeze_scaling_of_the_other_groups(
        api: client.ApiClient, namespace: str, operator: OperatorProcess, live_fleet: Path) -> None:
    co = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    await co.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, autoscaled_kimi(
        "quiet", min_groups=2, max_groups=3, stabilization_s=600, drain_timeout_s=600))

    async def status() -> dict:
        return (await get_moed(api, namespace, "quiet")).get("status", {})

    async def describe() -> str:
        st = await status()
        keys = ("desiredGroups", "readyGroups", "kvUtilization", "podsWithoutMetrics", "lastScaleReason")
        log = await asyncio.to_thread(live_fleet.read_text, errors="replace")
        return f"status: { {k: st.get(k) for k in keys} }\npod runner log:\n{log[-1500:]}"

    async def two_groups_ready() -> bool:
        st = await status()
        return st.get("readyGroups") == 2 and st.get("desiredGroups") == 2

    await wait_for(two_groups_ready, timeout=90, what="2 ready groups", describe=describe)
    pods = (await core.list_namespaced_pod(namespace, label_selector="leaderworkerset.sigs.k8s.io/name=quiet")).items
    by_group = {p.metadata.labels["leaderworkerset.sigs.k8s.io/group-index"]: p for p in pods}
    silent, loaded = by_group["1"], by_group["0"]
    # group 1's exporter wedges: its /metrics accepts connections and never answers
    await core.patch_namespaced_pod(silent.metadata.name, namespace, {"metadata": {"annotations": {
        "moe-operator.io/sim-metrics-fault": "hang"}}})

    async def reported_silent() -> bool:
        return silent.metadata.name in ((await status()).get("podsWithoutMetrics") or [])

    await wait_for(reported_silent, timeout=60, what="the silent pod in status.podsWithoutMetrics",
                   describe=describe)

    # load group 0 straight at its leader (not through the router, so the load cannot land on the silent group):
    # 48 x 2.4k tokens against 8 DP ranks x 16k KV tokens -> ~88 %, well above the 50 % target
    url = f"http://{loaded.status.pod_ip}:30000/v1/chat/completions"

    async def leader_serving() -> bool:  # kwok marks the pod Ready at once; the simulator has a cold start
        try:
            async with aiohttp.ClientSession() as s, s.get(f"http://{loaded.status.pod_ip}:30000/ready") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(leader_serving, timeout=60, what="group 0's leader serving", describe=describe)

    async def one(session: aiohttp.ClientSession, i: int) -> int:
        # distinct prompts: identical ones would share their prefix KV in the radix cache and barely use any
        payload = {"model": MODEL, "max_tokens": 400, "messages": [{"role": "user", "content": f"{i:08d}" + PROMPT}]}
        async with session.post(url, json=payload, timeout=aiohttp.ClientTimeout(total=300)) as r:
            await r.read()
            return r.status

    async with aiohttp.ClientSession() as session:
        load = [asyncio.create_task(one(session, i)) for i in range(48)]

        async def scaled_to_three() -> bool:
            st = await status()
            return st.get("desiredGroups") == 3

        try:
            await wait_for(scaled_to_three, timeout=60, what="a third group while group 1's /metrics hangs",
                           describe=describe)
        finally:
            for t in load:
                t.cancel()
            await asyncio.gather(*load, return_exceptions=True)
    st = await status()
    assert "-> 3 groups" in st.get("lastScaleReason", ""), st.get("lastScaleReason")
    assert silent.metadata.name in (st.get("podsWithoutMetrics") or []), st

    async def lws_at_three() -> bool:
        lws = await co.get_namespaced_custom_object("leaderworkerset.x-k8s.io", "v1", namespace, "leaderworkersets",
                                                    "quiet")
        return lws["spec"]["replicas"] == 3

    await wait_for(lws_at_three, timeout=30, what="the LeaderWorkerSet at 3 replicas", describe=describe)
    events = (await core.list_namespaced_event(namespace)).items
    warnings = [e for e in events if e.involved_object.name == "quiet" and e.reason == "MetricsMissing"]
    assert warnings and warnings[0].type == "Warning" and silent.metadata.name in warnings[0].message, warnings


async def test_rollout_under_load_drains_each_group_and_fails_no_request(
        api: client.ApiClient, namespace: str, operator: OperatorProcess, live_fleet: Path) -> None:
    """Issue 12 §1: a pod-template change on 2 serving groups under trace load through the router: each group leaves
    routing and finishes its requests before LWS replaces it (the partition moves one group at a time), 0 failed or
    cut requests, and both groups end on the new revision."""
    co = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    body = autoscaled_kimi("roll", min_groups=2, max_groups=2, stabilization_s=600, drain_timeout_s=120)
    body["spec"]["autoscaling"] = {"enabled": False}
    body["spec"]["replicas"] = 2
    await co.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    async def status() -> dict:
        return (await get_moed(api, namespace, "roll")).get("status", {})

    async def describe() -> str:
        st = await status()
        pods = (await core.list_namespaced_pod(namespace)).items
        shown = {k: st.get(k) for k in ("desiredGroups", "readyGroups", "updatedGroups", "rollout")}
        lines = [f"  {p.metadata.name} {p.status.phase} {p.status.pod_ip} {p.metadata.labels}" for p in pods]
        return f"status: {shown}\n" + "\n".join(lines)

    async def two_ready() -> bool:
        st = await status()
        return st.get("readyGroups") == 2 and st.get("updatedGroups") == 2

    await wait_for(two_ready, timeout=90, what="2 ready groups", describe=describe)
    url = await wait_for(lambda: router_url(core, namespace), timeout=90, what="the router answering",
                         describe=describe)
    trace = trace_slice(str(TRACE), duration_s=180, rate_scale=1.0, token_scale=0.125, output_scale=0.5,
                        max_input_tokens=2048, max_output_tokens=256)
    drains: list[int] = []

    async def rolled() -> bool:
        obj = await get_moed(api, namespace, "roll")
        st = obj.get("status", {})
        if st.get("rollout"):
            g = int(st["rollout"]["group"])
            if g not in drains:
                drains.append(g)
        return (st.get("observedGeneration") == obj["metadata"]["generation"] and st.get("updatedGroups") == 2
                and st.get("readyGroups") == 2 and not st.get("rollout")
                and any(c["type"] == "Progressing" and c["reason"] == "Reconciled" for c in st.get("conditions", [])))

    async with aiohttp.ClientSession() as session:
        stop = asyncio.Event()
        load = asyncio.create_task(replay(session, url, trace, model=MODEL, stop=stop))
        try:
            await asyncio.sleep(10)  # requests in flight on both groups
            await co.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "roll", {"spec": {"sglang": {
                "env": [{"name": "ROLLOUT_MARK", "value": "2"}]}}})
            await wait_for(rolled, timeout=240, interval=0.5, what="both groups rolled", describe=describe)
            await asyncio.sleep(5)  # and the new groups serve
        finally:
            stop.set()
            res = await load
    assert drains == [1, 0], drains  # highest group first, one at a time, each drained
    events = [e for e in (await core.list_namespaced_event(namespace)).items if e.involved_object.name == "roll"]
    drained = sorted(e.message for e in events if e.reason == "RolloutGroupDrained")
    # each group idle once the routers dropped it (routing.py), not held until drain.timeoutSeconds
    assert drained == ["rollout: group 0 drained (0 running requests); LWS replaces it",
                       "rollout: group 1 drained (0 running requests); LWS replaces it"], drained
    assert res.sent >= 50 and res.ok == res.sent and not res.failures, \
        f"{len(res.failures)} of {res.sent} requests failed during the rollout: {res.failures[:5]}"
    lws = await co.get_namespaced_custom_object("leaderworkerset.x-k8s.io", "v1", namespace, "leaderworkersets", "roll")
    assert lws["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"]["partition"] == 0
    pods = (await core.list_namespaced_pod(namespace, label_selector="leaderworkerset.sigs.k8s.io/name=roll")).items
    assert pods and all(any(e.name == "ROLLOUT_MARK" for e in p.spec.containers[0].env or []) for p in pods)
    await co.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "roll")
