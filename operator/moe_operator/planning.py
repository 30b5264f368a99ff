"""Bridge between the API (the typed MoEDeployment / AcceleratorPool instances) and the planner: one function used by
the admission webhook and by reconcile (through desired.py), so both reach the same verdict with the same message."""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from moe_operator.api.v1alpha1 import AcceleratorPool, MoEDeploymentSpec
from moe_operator.api.v1alpha1 import WeightsSource as ApiWeights
from moe_operator.planner import ACCELERATORS, AcceleratorProfile, Plan, PlanError, PlanRequest, plan
from moe_operator.planner.pd import PrefillPlan, PrefillRequest, plan_prefill
from moe_operator.planner.pod_resources import NodeShape

DEFAULT_MAX_NODES_PER_GROUP = 4

# Reads an AcceleratorPool / ConfigMap by name (None when missing); the webhook and reconcile pass the real API here.
T = TypeVar("T")
PoolGetter = Callable[[str], Awaitable[Mapping[str, Any] | None]]
ConfigMapGetter = Callable[[str], Awaitable[Mapping[str, Any] | None]]  # in the deployment's namespace


class SpecProblem(Exception):
    """A spec that cannot be served as written. `field` is the spec path, `reason` a condition reason."""

    def __init__(self, field: str, reason: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class PlannedDeployment:
    pool_name: str
    pool: AcceleratorPool
    profile: AcceleratorProfile
    plan: Plan
    node: NodeShape = NodeShape()  # what one node of the pool offers (spec.node, else status.nodeAllocatable)
    #: the pool's status was written at least once (or spec.node makes it unnecessary): before that, the pods' size
    #: is not known yet, and rendering anyway would roll every group a moment later
    node_known: bool = True
    #: with spec.disaggregation: the prefill role's plan (`plan` is then the decode role's)
    prefill: PrefillPlan | None = None


def quantity(value: str | None) -> float | None:
    """A Kubernetes quantity -> a number (bytes, cores); None stays None."""
    if value is None:
        return None
    from kubernetes.utils.quantity import parse_quantity

    return float(parse_quantity(value))


def node_shape(pool: AcceleratorPool, raw_status: Mapping[str, Any] | None) -> NodeShape:
    """spec.node where set (field by field), else the smallest allocatable the pool's status observed."""
    from moe_operator.api.v1alpha1.acceleratorpool import NodeResources

    observed = NodeResources.model_validate((raw_status or {}).get("nodeAllocatable") or {})
    spec = pool.spec.node or NodeResources()

    def pick(f: str, scale: float = 1) -> int | None:
        v = quantity(getattr(spec, f) or getattr(observed, f))
        return int(v * scale) if v is not None else None

    return NodeShape(cpu_millis=pick("cpu", 1000), memory_bytes=pick("memory"),
                     ephemeral_bytes=pick("ephemeral_storage"))


def typed_pool(raw: Mapping[str, Any] | AcceleratorPool, field: str = "spec.pool") -> AcceleratorPool:
    """An AcceleratorPool as the API returned it -> the typed instance (admission validated it; one written around
    the webhook is reported against the deployment field that names it)."""
    if isinstance(raw, AcceleratorPool):
        return raw
    from moe_operator.api import InvalidResource

    try:
        return AcceleratorPool.from_body({**raw, "kind": "AcceleratorPool", "status": None})
    except InvalidResource as exc:
        raise SpecProblem(field, "PoolInvalid", "; ".join(exc.errors[:3]) or str(exc)) from None


def profile_for_pool(pool: AcceleratorPool) -> AcceleratorProfile:
    """An AcceleratorPool -> the planner's AcceleratorProfile (a catalog profile with the pool's overrides, or a
    custom profile built from the pool's numbers)."""
    spec = pool.spec
    acc = spec.accelerator
    overrides: dict[str, Any] = {}
    if acc.memory_gb is not None:
        overrides["memory_gb"] = float(acc.memory_gb)
        overrides["usable_mib"] = None  # derive from the stated memory
    if acc.devices_per_node is not None:
        overrides["devices_per_node"] = int(acc.devices_per_node)
    if acc.supported_precisions:
        overrides["supported_precisions"] = tuple(acc.supported_precisions)
    if acc.vendor:
        overrides["vendor"] = acc.vendor
    if spec.device_resource_name:
        overrides["resource_name"] = spec.device_resource_name
    if spec.sglang_image:
        overrides["default_image"] = spec.sglang_image
    if spec.cost_per_node_hour is not None:
        overrides["cost_per_node_hour"] = float(spec.cost_per_node_hour)
    if acc.profile != "custom":
        base = ACCELERATORS[acc.profile]
        if overrides.get("vendor") == "huawei" and base.vendor != "huawei":
            overrides["arch"] = "npu"
        return dataclasses.replace(base, **overrides)
    vendor = overrides.get("vendor", "nvidia")
    base_fields = {
        "name": f"custom:{pool.metadata.name or 'pool'}",
        "resource_name": "huawei.com/Ascend910" if vendor == "huawei" else "nvidia.com/gpu",
        "sglang_device_args": ("--device", "npu", "--attention-backend", "ascend") if vendor == "huawei" else (),
    }
    base_fields.update(overrides)
    return AcceleratorProfile.from_dict(base_fields)


def _request(spec: MoEDeploymentSpec, model: Any, profile: AcceleratorProfile, pool: AcceleratorPool) -> PlanRequest:
    return PlanRequest(
        model=model,
        precision=spec.precision,
        kv_dtype=spec.kv_cache_dtype,
        sessions=spec.sessions.target,
        context=spec.sessions.context_tokens,
        avg_context=spec.sessions.average_context_tokens,
        accelerator=profile,
        max_groups=spec.max_groups if spec.max_groups is not None else spec.autoscaling.max_groups,
        max_nodes_per_group=spec.max_nodes_per_group or DEFAULT_MAX_NODES_PER_GROUP,
        model_path=model_path_hint(spec),
        objective=spec.planning.objective,
        rdma=pool.spec.rdma is not None,
        pool_max_nodes=pool.spec.max_nodes,
    )


def model_path_hint(spec: MoEDeploymentSpec) -> str | None:
    """--model-path as the pod sees it: the weights mount for PVC/hostPath, the repo id for Hugging Face."""
    from moe_operator.render.inputs import model_path_for  # pure, cheap

    return model_path_for(weights_source(spec.weights), None)


def weights_source(w: ApiWeights) -> Any:
    from moe_operator.render.inputs import WeightsSource

    hf = w.hugging_face
    token = hf.token_secret_ref if hf is not None else None
    return WeightsSource(
        pvc_claim=w.pvc.claim_name if w.pvc else None, pvc_sub_path=w.pvc.sub_path if w.pvc else None,
        host_path=w.host_path.path if w.host_path else None,
        hf_repo=hf.repo if hf else None, hf_revision=hf.revision if hf else None,
        hf_token_secret=token.name if token else None, hf_token_key=(token.key if token else None) or "token",
    )


async def model_for(spec: MoEDeploymentSpec, get_config_map: ConfigMapGetter | None) -> Any:
    """The planner's model: a catalog id, or the config.json given inline or in a ConfigMap."""
    from moe_operator.planner import load_model_config

    m = spec.model
    if m.catalog:
        return m.catalog
    if m.config is not None:
        return load_model_config(m.config)
    ref = m.config_map_ref
    assert ref is not None  # the API's exactly-one rule
    cm = await get_config_map(ref.name) if get_config_map else None
    if cm is None:
        raise SpecProblem("spec.model.configMapRef", "InvalidSpec", f"ConfigMap {ref.name!r} does not exist")
    key = ref.key or "config.json"
    raw = (cm.get("data") or {}).get(key)
    if raw is None:
        raise SpecProblem("spec.model.configMapRef.key", "InvalidSpec", f"ConfigMap {ref.name!r} has no key {key!r}")
    try:
        return load_model_config(json.loads(raw))
    except ValueError as exc:
        raise SpecProblem("spec.model.configMapRef", "InvalidSpec", f"{key} is not JSON: {exc}") from None


def pool_candidates(spec: MoEDeploymentSpec) -> list[tuple[str, str]]:
    """[(spec field, pool name)] in order of preference."""
    if spec.pool:
        return [("spec.pool", spec.pool)]
    return [(f"spec.pools[{i}]", p) for i, p in enumerate(spec.pools or [])]


_PLANS: OrderedDict[str, Any] = OrderedDict()  # plans and prefill plans, keyed apart by their requests' reprs
_PLANS_LOCK = threading.Lock()
PLAN_CACHE_SIZE = 512


def _remembered(key: str, compute: Callable[[], T]) -> T:
    """compute(), remembered under `key` (LRU, PLAN_CACHE_SIZE); a copy is handed out so no caller can change the
    remembered value."""
    with _PLANS_LOCK:  # admission reviews plan on the webhook's thread (webhook_server.py), reconciles on the loop's
        hit = _PLANS.get(key)
        if hit is not None:
            _PLANS.move_to_end(key)
    if hit is None:
        hit = compute()
        with _PLANS_LOCK:
            _PLANS[key] = hit
            while len(_PLANS) > PLAN_CACHE_SIZE:
                _PLANS.popitem(last=False)
    return copy.deepcopy(hit)  # type: ignore[no-any-return]


def planned_for(req: PlanRequest) -> Plan:
    """plan(req), remembered: the planner is pure, and every reconcile pass and admission review of an unchanged
    spec asks it the same question (tens of ms of CPU each, which queued admission reviews behind reconciles at 200
    MoEDeployments). Keyed on the request's repr (every field, nested dataclasses included)."""
    return _remembered(repr(req), lambda: plan(req))


async def plan_deployment(spec: MoEDeploymentSpec, get_pool: PoolGetter,
                          get_config_map: ConfigMapGetter | None = None) -> PlannedDeployment:
    """Pick the first candidate pool where the plan fits. Raises SpecProblem naming the field and the numbers."""
    candidates = pool_candidates(spec)
    if not candidates:
        raise SpecProblem("spec.pool", "InvalidSpec", "set spec.pool or spec.pools")
    try:
        model = await model_for(spec, get_config_map)
    except PlanError as exc:
        raise SpecProblem(_plan_field(exc, "spec.model"), "PlanInfeasible", exc.message) from None
    failures: list[str] = []
    last: SpecProblem | None = None
    for field, name in candidates:
        raw = await get_pool(name)
        if raw is None:
            last = SpecProblem(field, "PoolNotFound", f"AcceleratorPool {name!r} does not exist")
            failures.append(f"{name}: not found")
            continue
        try:
            pool = typed_pool(raw, field)
            profile = profile_for_pool(pool)
            result = planned_for(_request(spec, model, profile, pool))
        except SpecProblem as exc:
            last = exc
            failures.append(f"{name}: {exc.message}")
            continue
        except (PlanError, KeyError, ValueError, TypeError) as exc:
            if not isinstance(exc, PlanError):
                exc = PlanError("model", f"{type(exc).__name__}: {exc}")
            last = SpecProblem(_plan_field(exc, field), "PlanInfeasible", f"pool {name}: {exc.message}")
            failures.append(f"{name}: {exc.message}")
            continue
        try:
            prefill = planned_prefill(spec, _request(spec, model, profile, pool), result, profile)
        except SpecProblem as exc:
            last = exc
            failures.append(f"{name}: {exc.message}")
            continue
        status = raw.get("status") or {}
        return PlannedDeployment(pool_name=name, pool=pool, profile=profile, plan=result,
                                 node=node_shape(pool, status),
                                 node_known=pool.spec.node is not None or "observedGeneration" in status,
                                 prefill=prefill)
    assert last is not None
    if len(candidates) > 1:
        raise SpecProblem("spec.pools", last.reason, "no candidate pool fits: " + "; ".join(failures))
    raise last


#: --disaggregation-transfer-backend per accelerator vendor (SGLang 0.5.23 srt/disaggregation/: mooncake/ and nixl/
#: drive RDMA NICs next to CUDA devices, ascend/ the Ascend transfer engine); the first is the default
TRANSFER_BACKENDS = {"nvidia": ("mooncake", "nixl"), "huawei": ("ascend",)}


def transfer_backend(spec: MoEDeploymentSpec, profile: AcceleratorProfile) -> str:
    """spec.disaggregation.transferBackend checked against the pool's vendor, or the vendor's default."""
    pd = spec.disaggregation
    assert pd is not None
    allowed = TRANSFER_BACKENDS.get(profile.vendor, ("mooncake", "nixl"))
    backend = pd.transfer_backend or allowed[0]
    if backend not in allowed:
        raise SpecProblem("spec.disaggregation.transferBackend", "InvalidSpec",
                          f"{backend!r} does not run on {profile.vendor} accelerators ({profile.name}); "
                          f"use {' or '.join(allowed)}")
    if backend == "ascend" and pd.ascend_store_url is None:  # the CEL twin covers only an explicit backend
        raise SpecProblem("spec.disaggregation.ascendStoreUrl", "InvalidSpec",
                          f"required with the ascend transfer backend (the default on {profile.name}): SGLang's "
                          "Ascend transfer engine reads ASCEND_MF_STORE_URL on every server")
    return backend


def prefill_request(spec: MoEDeploymentSpec) -> PrefillRequest:
    pd = spec.disaggregation
    assert pd is not None
    p = pd.prefill
    typical = p.prompt_tokens or spec.sessions.average_context_tokens or spec.sessions.context_tokens
    return PrefillRequest(
        prompt_tokens_per_second=float(p.prompt_tokens_per_second), prompt_tokens=int(typical),
        ttft_seconds=float(p.ttft_seconds), target_utilization=p.autoscaling.target_utilization,
        max_nodes_per_group=p.max_nodes_per_group or spec.max_nodes_per_group or DEFAULT_MAX_NODES_PER_GROUP,
        # the ratio bounds are applied against the decode groups desired at the time (desired_prefill_groups), not
        # against the planned decode count
        min_groups=p.min_groups, max_groups=p.max_groups, fixed_groups=p.groups)


def planned_prefill(spec: MoEDeploymentSpec, base: PlanRequest, decode: Plan,
                    profile: AcceleratorProfile) -> PrefillPlan | None:
    """The prefill role's plan with spec.disaggregation (None without). Raises SpecProblem with the numbers."""
    if spec.disaggregation is None:
        return None
    transfer_backend(spec, profile)
    typical = spec.disaggregation.prefill.prompt_tokens
    if typical is not None and typical > spec.sessions.context_tokens:
        raise SpecProblem("spec.disaggregation.prefill.promptTokens", "InvalidSpec",
                          f"{typical} is more than sessions.contextTokens ({spec.sessions.context_tokens}): no "
                          "server accepts such a prompt")
    decode_groups = spec.replicas if spec.replicas is not None else decode.groups
    try:
        return _prefill_cached(base, prefill_request(spec), decode, decode_groups)
    except PlanError as exc:
        raise SpecProblem("spec.disaggregation.prefill", "PlanInfeasible", exc.message) from None


def _prefill_cached(base: PlanRequest, req: PrefillRequest, decode: Plan, decode_groups: int) -> PrefillPlan:
    """plan_prefill, remembered like planned_for (pure; asked the same question on every pass)."""
    return _remembered(repr(("prefill", base, req, decode.groups, decode_groups)),
                       lambda: plan_prefill(base, req, decode, decode_groups))


def _plan_field(exc: PlanError, pool_field: str) -> str:
    """Which spec field a planner constraint is about, so the admission message names it."""
    return {
        "precision": "spec.precision",
        "precision_unsupported": "spec.precision",
        "context_too_long": "spec.sessions.contextTokens",
        "max_groups": "spec.sessions.target",
        "model": "spec.model",
        "model_config": "spec.model.config",
        "kv_dtype": "spec.kvCacheDtype",
        "mtp": "spec.model",
        "request": "spec.sessions",
        "weights_fit": pool_field,
        "pool_max_nodes": pool_field,
        "layout": pool_field,
        "accelerator": pool_field,
    }.get(exc.constraint, "spec")


def plan_summary(p: Plan, downloads: bool = False) -> dict[str, Any]:
    """The subset of the planner's JSON kept in status.plan (camelCase, as the CRD declares it); `downloads`: the
    weights come from Hugging Face, one checkpoint per pod."""
    d = p.to_dict()
    ru = d.get("runner_up")
    runner_up = None
    if ru:
        price = f", ${ru['cost_per_hour']:,.2f}/h" if ru.get("cost_per_hour") is not None else ""
        runner_up = f"{ru['layout']}: {ru['groups']} x {ru['nodes_per_group']} = {ru['total_nodes']} nodes{price}"
    return {
        "objective": d["objective"],
        "nodesPerGroup": d["nodes_per_group"],
        "gpusPerGroup": d["gpus_per_group"],
        "tpSize": d["tp_size"],
        "epSize": d["ep_size"],
        "attnDpSize": d["attn_dp_size"],
        "sessionsPerGroup": d["sessions_per_group"],
        "groups": d["groups"],
        "kvBytesPerSession": int(d["kv_bytes_per_session"]),
        "weightsBytes": int(d["weights_bytes"]),
        **({"downloadBytesPerGroup": int(p.checkpoint_bytes * p.nodes_per_group)} if downloads else {}),
        "maxTotalTokensPerDp": int(d["max_total_tokens_per_dp"]),
        "memFractionStatic": str(d["mem_fraction_static"]),
        "moeA2ABackend": d["moe_a2a_backend"],
        "totalNodes": d["total_nodes"],
        **({"costPerHour": f"{d['cost_per_hour']:.2f}"} if d.get("cost_per_hour") is not None else {}),
        **({"runnerUp": runner_up} if runner_up else {}),
        "sglangArgs": list(d["sglang_args"]),
    }
