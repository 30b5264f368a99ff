"""Bridge between the API (MoEDeployment / AcceleratorPool dicts) and the planner: one function used by the
admission webhook and by reconcile, so both reach the same verdict with the same message."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from moe_operator.planner import ACCELERATORS, AcceleratorProfile, Plan, PlanError, PlanRequest, plan

# Reads an AcceleratorPool by name (None when missing); the webhook and reconcile pass the real API here.
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
    pool: Mapping[str, Any]
    profile: AcceleratorProfile
    plan: Plan


def profile_for_pool(pool: Mapping[str, Any]) -> AcceleratorProfile:
    """An AcceleratorPool spec -> the planner's AcceleratorProfile (a catalog profile with the pool's overrides,
    or a custom profile built from the pool's numbers)."""
    spec = pool.get("spec", {})
    acc = spec.get("accelerator", {}) or {}
    name = acc.get("profile", "custom")
    overrides: dict[str, Any] = {}
    if acc.get("memoryGB") is not None:
        overrides["memory_gb"] = float(acc["memoryGB"])
        overrides["usable_mib"] = None  # derive from the stated memory
    if acc.get("devicesPerNode") is not None:
        overrides["devices_per_node"] = int(acc["devicesPerNode"])
    if acc.get("supportedPrecisions"):
        overrides["supported_precisions"] = tuple(acc["supportedPrecisions"])
    if acc.get("vendor"):
        overrides["vendor"] = acc["vendor"]
    if spec.get("deviceResourceName"):
        overrides["resource_name"] = spec["deviceResourceName"]
    if spec.get("sglangImage"):
        overrides["default_image"] = spec["sglangImage"]
    if spec.get("costPerNodeHour") is not None:
        overrides["cost_per_node_hour"] = float(spec["costPerNodeHour"])
    if name != "custom":
        return dataclasses.replace(ACCELERATORS[name], **overrides)
    vendor = overrides.get("vendor", "nvidia")
    base = {
        "name": f"custom:{pool.get('metadata', {}).get('name', 'pool')}",
        "resource_name": "huawei.com/Ascend910" if vendor == "huawei" else "nvidia.com/gpu",
        "sglang_device_args": ("--device", "npu", "--attention-backend", "ascend") if vendor == "huawei" else (),
    }
    base.update(overrides)
    return AcceleratorProfile.from_dict(base)


def _request(spec: Mapping[str, Any], profile: AcceleratorProfile, pool: Mapping[str, Any]) -> PlanRequest:
    model = spec.get("model", {}) or {}
    pool_spec = pool.get("spec") or {}
    sessions = spec.get("sessions", {}) or {}
    model_ref: Any = model.get("catalog")
    if not model_ref and model.get("config") is not None:
        from moe_operator.planner import load_model_config
        model_ref = load_model_config(model["config"])
    return PlanRequest(
        model=model_ref,
        precision=spec.get("precision", "bf16"),
        kv_dtype=spec.get("kvCacheDtype", "auto") or "auto",
        sessions=int(sessions.get("target", 1)),
        context=int(sessions.get("contextTokens", 1)),
        avg_context=sessions.get("averageContextTokens"),
        accelerator=profile,
        max_groups=spec.get("maxGroups") or (spec.get("autoscaling") or {}).get("maxGroups"),
        max_nodes_per_group=spec.get("maxNodesPerGroup") or 4,
        model_path=model_path_hint(spec),
        objective=(spec.get("planning") or {}).get("objective") or "min-cost",
        rdma=bool(pool_spec.get("rdma")),
        pool_max_nodes=pool_spec.get("maxNodes"),
    )


def model_path_hint(spec: Mapping[str, Any]) -> str | None:
    """--model-path as the pod sees it: the weights mount for PVC/hostPath, the repo id for Hugging Face."""
    from moe_operator.render.inputs import model_path_for  # pure, cheap

    return model_path_for(weights_source(spec.get("weights") or {}), None)


def weights_source(w: Mapping[str, Any]) -> Any:
    from moe_operator.render.inputs import WeightsSource

    pvc = w.get("pvc") or {}
    hp = w.get("hostPath") or {}
    hf = w.get("huggingFace") or {}
    token = hf.get("tokenSecretRef") or {}
    return WeightsSource(
        pvc_claim=pvc.get("claimName"), pvc_sub_path=pvc.get("subPath"), host_path=hp.get("path"),
        hf_repo=hf.get("repo"), hf_revision=hf.get("revision"), hf_token_secret=token.get("name"),
        hf_token_key=token.get("key") or "token",
    )


def pool_candidates(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """[(spec field, pool name)] in order of preference."""
    if spec.get("pool"):
        return [("spec.pool", spec["pool"])]
    return [(f"spec.pools[{i}]", p) for i, p in enumerate(spec.get("pools") or [])]


async def resolve_model_config(spec: Mapping[str, Any], get_config_map: ConfigMapGetter | None) -> Mapping[str, Any]:
    """A spec whose model comes from a ConfigMap, with that config inlined (the planner needs the numbers)."""
    ref = (spec.get("model") or {}).get("configMapRef")
    if not ref:
        return spec
    cm = await get_config_map(ref["name"]) if get_config_map else None
    if cm is None:
        raise SpecProblem("spec.model.configMapRef", "InvalidSpec", f"ConfigMap {ref['name']!r} does not exist")
    key = ref.get("key") or "config.json"
    raw = (cm.get("data") or {}).get(key)
    if raw is None:
        raise SpecProblem("spec.model.configMapRef.key", "InvalidSpec",
                          f"ConfigMap {ref['name']!r} has no key {key!r}")
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise SpecProblem("spec.model.configMapRef", "InvalidSpec", f"{key} is not JSON: {exc}") from None
    return {**spec, "model": {**spec["model"], "configMapRef": None, "config": config}}


async def plan_deployment(spec: Mapping[str, Any], get_pool: PoolGetter,
                          get_config_map: ConfigMapGetter | None = None) -> PlannedDeployment:
    """Pick the first candidate pool where the plan fits. Raises SpecProblem naming the field and the numbers."""
    spec = await resolve_model_config(spec, get_config_map)
    candidates = pool_candidates(spec)
    if not candidates:
        raise SpecProblem("spec.pool", "InvalidSpec", "set spec.pool or spec.pools")
    failures: list[str] = []
    last: SpecProblem | None = None
    for field, name in candidates:
        pool = await get_pool(name)
        if pool is None:
            last = SpecProblem(field, "PoolNotFound", f"AcceleratorPool {name!r} does not exist")
            failures.append(f"{name}: not found")
            continue
        try:
            profile = profile_for_pool(pool)
            result = plan(_request(spec, profile, pool))
        except (PlanError, KeyError, ValueError, TypeError) as exc:
            if not isinstance(exc, PlanError):
                exc = PlanError("model", f"{type(exc).__name__}: {exc}")
            last = SpecProblem(_plan_field(exc, field), "PlanInfeasible", f"pool {name}: {exc.message}")
            failures.append(f"{name}: {exc.message}")
            continue
        return PlannedDeployment(pool_name=name, pool=pool, profile=profile, plan=result)
    assert last is not None
    if len(candidates) > 1:
        raise SpecProblem("spec.pools", last.reason, "no candidate pool fits: " + "; ".join(failures))
    raise last


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


def plan_summary(p: Plan) -> dict[str, Any]:
    """The subset of the planner's JSON kept in status.plan (camelCase, as the CRD declares it)."""
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
        "maxTotalTokensPerDp": int(d["max_total_tokens_per_dp"]),
        "memFractionStatic": str(d["mem_fraction_static"]),
        "moeA2ABackend": d["moe_a2a_backend"],
        "totalNodes": d["total_nodes"],
        **({"costPerHour": f"{d['cost_per_hour']:.2f}"} if d.get("cost_per_hour") is not None else {}),
        **({"runnerUp": runner_up} if runner_up else {}),
        "sglangArgs": list(d["sglang_args"]),
    }
