"""What a MoEDeployment asks for: the body validated once into the typed instance, the SGLang flags checked, the plan
and the rendered children. ONE function for the admission webhook and for reconcile, so a spec admission accepts
renders, and one the renderer would refuse is refused at admission with the same field and message (and, written
around the webhook, stalls the object at reconcile without touching its groups)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moe_operator.api.base import IMAGE_DIGEST
from moe_operator.api.v1alpha1 import MoEDeployment, MoEDeploymentSpec
from moe_operator.api.v1alpha1.moedeployment import NetworkPeer
from moe_operator.planner.pod_resources import GiB, PodSize, SizeError, pod_size
from moe_operator.planning import (
    ConfigMapGetter,
    PlannedDeployment,
    PoolGetter,
    SpecProblem,
    plan_deployment,
    quantity,
    transfer_backend,
    weights_source,
)
from moe_operator.render import children as render_children
from moe_operator.render.argv import without_flags_set_by
from moe_operator.render.inputs import DEFAULT_ROUTER_IMAGE, PD_DECODE, PD_PREFILL, HostMount, Owner, RenderInput
from moe_operator.render.meta import spec_hash

API_VERSION = "moe-operator.io/v1alpha1"
KIND = "MoEDeployment"
# what admission renders with, before the apiserver has given the object a uid
PENDING_UID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Desired:
    deployment: MoEDeployment  # the typed instance every later step reads
    planned: PlannedDeployment
    replicas: int
    render: RenderInput
    children: list[dict[str, Any]]
    #: with spec.disaggregation: the prefill role's render input (its LWS <name>-prefill; `render` is the decode role)
    prefill: RenderInput | None = None


def typed(body: Mapping[str, Any]) -> MoEDeployment:
    """The kopf body / admission object -> the typed instance (status is the operator's own and not validated
    here: an old status must never make a good spec unservable)."""
    from moe_operator.api import InvalidResource

    try:
        return MoEDeployment.from_body({**body, "kind": KIND, "status": None})
    except InvalidResource as exc:
        first = exc.errors[0] if exc.errors else str(exc)
        field, _, message = first.partition(": ")
        raise SpecProblem(field, "InvalidSpec", message or first) from None


def check_flags(spec: MoEDeploymentSpec) -> None:
    """spec.sglang.extraArgs against the pinned SGLang's flag table and the flags the operator owns."""
    if not spec.sglang.extra_args:
        return
    from moe_operator.sglang_flags import validate_extra_args

    errors = validate_extra_args(list(spec.sglang.extra_args))
    if errors:
        raise SpecProblem("spec.sglang.extraArgs", "InvalidSpec", "; ".join(errors))


def desired_groups(spec: MoEDeploymentSpec, planned: PlannedDeployment, status: Mapping[str, Any]) -> int:
    """spec.replicas (kubectl scale / HPA / KEDA via the scale subresource) wins; with built-in autoscaling the
    operator's own decision in status.desiredGroups; otherwise the planner's group count."""
    auto = spec.autoscaling
    if spec.replicas is not None:
        return spec.replicas
    if auto.enabled:
        hi = auto.max_groups if auto.max_groups is not None else (spec.max_groups or planned.plan.groups)
        current = status.get("desiredGroups")
        return max(auto.min_groups, min(hi, int(current) if current is not None else planned.plan.groups))
    return planned.plan.groups


def desired_prefill_groups(spec: MoEDeploymentSpec, planned: PlannedDeployment, status: Mapping[str, Any],
                           decode_groups: int) -> int:
    """disaggregation.prefill.groups wins; with prefill autoscaling the operator's decision in
    status.prefill.desiredGroups; else the planner's count; always within min/max and the ratio bounds against the
    decode groups desired now."""
    pd, pp = spec.disaggregation, planned.prefill
    assert pd is not None and pp is not None
    p = pd.prefill
    if p.groups is not None:
        return p.groups
    n = pp.groups
    current: int | None = None
    if p.autoscaling.enabled:
        seen = (status.get("prefill") or {}).get("desiredGroups")
        current = int(seen) if seen is not None else None
        n = current if current is not None else n
    lo, hi = p.min_groups, p.max_groups
    if pd.ratio is not None and pd.ratio.min is not None:
        lo = max(lo, math.ceil(pd.ratio.min * decode_groups))
    if pd.ratio is not None and pd.ratio.max is not None:
        cap = math.floor(pd.ratio.max * decode_groups)
        if current is not None:
            # a decode scale-down must not cut serving prefill groups here, undrained: the prefill autoscaler applies
            # the same bound (autoscale/prefill.py bounds) and drains down to it one group at a time
            cap = max(cap, min(current, hi) if hi is not None else current)
        hi = min(hi, cap) if hi is not None else cap
    n = max(lo, n)
    return min(hi, n) if hi is not None else n


def sglang_args(obj: MoEDeployment, planned: PlannedDeployment,
                plan_args: Sequence[str] | None = None) -> tuple[str, ...]:
    """The plan's argv, plus what the spec adds to it (a pinned revision, the served name), minus what extraArgs
    sets itself."""
    spec = obj.spec
    args = list(planned.plan.sglang_args if plan_args is None else plan_args)
    hf = spec.weights.hugging_face
    if hf is not None and spec.weights.pvc is None and spec.weights.host_path is None and hf.revision:
        args += ["--revision", hf.revision]
    if spec.model.served_model_name:
        args += ["--served-model-name", spec.model.served_model_name]
    return tuple(without_flags_set_by(args, spec.sglang.extra_args))


SHM_BYTES = 64 * GiB  # RenderInput.shm_size


def operator_peer() -> dict[str, Any] | None:
    """The operator's pods as a NetworkPolicy peer (it scrapes /metrics and polls drains); None outside a cluster
    (the chart sets MOE_OPERATOR_NAMESPACE)."""
    ns = os.environ.get("MOE_OPERATOR_NAMESPACE")
    if not ns:
        return None
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "moe-operator"}}}


def peer(p: NetworkPeer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.namespace_selector is not None:
        out["namespaceSelector"] = {"matchLabels": dict(p.namespace_selector.match_labels)}
    if p.pod_selector is not None or not out:
        out["podSelector"] = {"matchLabels": dict(p.pod_selector.match_labels) if p.pod_selector else {}}
    return out


def engine_size(spec: MoEDeploymentSpec, planned: PlannedDeployment) -> PodSize:
    """Requests = limits of each SGLang pod (planner.pod_resources), from spec.resources or the pool's nodes."""
    res = spec.resources
    downloads = spec.weights.pvc is None and spec.weights.host_path is None
    try:
        cpu = quantity(res.cpu) if res else None
        return pod_size(planned.node, shm_bytes=SHM_BYTES, checkpoint_bytes=planned.plan.checkpoint_bytes,
                        downloads=downloads, cache_on_host=False,
                        cpu_override_millis=int(cpu * 1000) if cpu is not None else None,
                        memory_override_bytes=_bytes(res.memory if res else None),
                        ephemeral_override_bytes=_bytes(res.ephemeral_storage if res else None))
    except SizeError as exc:
        raise SpecProblem(exc.field, "InvalidSpec", exc.message) from None


def _bytes(q: str | None) -> int | None:
    v = quantity(q)
    return int(v) if v is not None else None


def check_digests(spec: MoEDeploymentSpec, planned: PlannedDeployment, image: str) -> None:
    if not planned.pool.spec.require_image_digests:
        return
    router = (spec.router.image or DEFAULT_ROUTER_IMAGE) if spec.router.enabled else None
    for field, img in (("spec.sglang.image", image), ("spec.router.image", router)):
        if img is not None and not re.match(IMAGE_DIGEST, img):
            raise SpecProblem(field, "InvalidSpec", f"{img!r} is not pinned by digest (repo@sha256:<64 hex>), "
                              f"which AcceleratorPool {planned.pool_name!r} requires (spec.requireImageDigests)")


def check_host_path(spec: MoEDeploymentSpec, planned: PlannedDeployment) -> None:
    """weights.hostPath only under a directory the pool's admin opened for model weights (modelCache): a hostPath is
    mounted into every SGLang pod, so anyone who may create a MoEDeployment could otherwise read the node's files."""
    hp = spec.weights.host_path
    if hp is None:
        return
    cache = planned.pool.spec.model_cache
    prefixes = list(cache.host_path_prefixes) if cache else []
    if any(hp.path == p or hp.path.startswith(p + "/") for p in prefixes):
        return
    allowed = ("allows " + ", ".join(prefixes)) if prefixes else "allows no hostPath weights (set its spec.modelCache" \
        ".hostPathPrefixes)"
    raise SpecProblem("spec.weights.hostPath.path", "InvalidSpec", f"{hp.path!r} is not under a directory "
                      f"AcceleratorPool {planned.pool_name!r} opens for model weights: it {allowed}")


def render_input(obj: MoEDeployment, planned: PlannedDeployment, replicas: int) -> RenderInput:
    meta, spec = obj.metadata, obj.spec
    pool = planned.pool.spec
    rdma = pool.rdma
    placement_key = spec.placement.exclusive_topology_key if spec.placement else None
    name = meta.name or ""
    image = spec.sglang.image or planned.profile.default_image
    if not image:
        raise SpecProblem("spec.sglang.image", "InvalidSpec", f"no SGLang image: set spec.sglang.image or the "
                          f"AcceleratorPool {planned.pool_name!r}'s sglangImage (custom pools have no default)")
    check_digests(spec, planned, image)
    check_host_path(spec, planned)
    router_image: dict[str, Any] = {"router_image": spec.router.image} if spec.router.image else {}
    key = spec.sglang.api_key_secret_ref
    size = engine_size(spec, planned)
    netpol = spec.network_policy
    # the pool's RDMA device nodes (e.g. /dev/infiniband) where no device plugin injects them
    devices = tuple(HostMount(host_path=d, mount_path=d, read_only=False) for d in (rdma.devices if rdma else []))
    return RenderInput(
        name=name, namespace=meta.namespace or "default",
        owner=Owner(api_version=API_VERSION, kind=KIND, name=name, uid=meta.uid or PENDING_UID),
        model_id=spec.model.catalog or "custom",
        sglang_args=sglang_args(obj, planned),
        nodes_per_group=planned.plan.nodes_per_group,
        devices_per_node=planned.profile.devices_per_node,
        device_resource=planned.profile.resource_name,
        replicas=replicas,
        image=image,
        extra_args=tuple(spec.sglang.extra_args),
        env=tuple((e.name, e.value or "") for e in spec.sglang.env),
        port=spec.sglang.port,
        node_selector=dict(pool.node_selector),
        tolerations=tuple(t.model_dump(by_alias=True, exclude_none=True) for t in pool.tolerations),
        node_failure_toleration_seconds=pool.node_failure_toleration_seconds,
        rdma_resource=rdma.resource_name if rdma else None,
        rdma_count=rdma.count if rdma else 0,
        host_mounts=devices,
        cpu_cores=size.cpu_cores, memory_bytes=size.memory_bytes, ephemeral_bytes=size.ephemeral_bytes,
        cache_size_limit_bytes=size.cache_limit_bytes,
        network_policy=netpol.enabled, metrics_from=tuple(peer(p) for p in netpol.metrics_from),
        router_from=tuple(peer(p) for p in netpol.router_from) if netpol.router_from is not None else None,
        operator_peer=operator_peer(),
        # the spec's key, else (documented default) the pool's: a multi-node group is packed into one fast-interconnect
        # domain (LWS exclusive placement); a one-node group is packed by construction and keeps the whole pool
        exclusive_topology_key=placement_key or (pool.topology_key if planned.plan.nodes_per_group > 1 else None),
        weights=weights_source(spec.weights),
        router_enabled=spec.router.enabled,
        router_policy=spec.router.policy,
        router_replicas=spec.router.replicas,
        **router_image,
        api_key_secret=(key.name, key.key) if key else None,
        drain_timeout_seconds=spec.drain.timeout_seconds,
        pool=planned.pool_name, accelerator=planned.profile.name,
        spec_hash=spec_hash({"spec": spec.model_dump(mode="json", by_alias=True, exclude={"replicas"}),
                             "pool": pool.model_dump(mode="json", by_alias=True)}),
        **pd_fields(spec, planned),
    )


def pd_fields(spec: MoEDeploymentSpec, planned: PlannedDeployment) -> dict[str, Any]:
    """The decode role's disaggregation settings (the prefill role's input is derived from it: prefill_input)."""
    pd = spec.disaggregation
    if pd is None:
        return {}
    rdma = planned.pool.spec.rdma
    return {"pd_role": PD_DECODE, "transfer_backend": transfer_backend(spec, planned.profile),
            "bootstrap_port": pd.bootstrap_port, "ib_devices": tuple(rdma.ib_devices) if rdma else (),
            "ascend_store_url": pd.ascend_store_url, "prefill_policy": spec.router.policy}


def prefill_input(obj: MoEDeployment, planned: PlannedDeployment, decode: RenderInput, replicas: int) -> RenderInput:
    """The prefill role: the decode role's pods with the prefill plan's layout and argv, as LWS <name>-prefill."""
    pp = planned.prefill
    assert pp is not None
    pool = planned.pool.spec
    return dataclasses.replace(
        decode, pd_role=PD_PREFILL, sglang_args=sglang_args(obj, planned, pp.plan.sglang_args),
        nodes_per_group=pp.plan.nodes_per_group, replicas=replicas,
        exclusive_topology_key=(obj.spec.placement.exclusive_topology_key if obj.spec.placement else None)
        or (pool.topology_key if pp.plan.nodes_per_group > 1 else None))


def _render_field(message: str) -> str:
    """The spec field a renderer refusal is about, so the admission message names it."""
    if "env" in message:
        return "spec.sglang.env"
    if "extra_args" in message or "flag" in message or "tp*pp*dp" in message:
        return "spec.sglang.extraArgs"
    if "name" in message and "namespace" not in message:
        return "metadata.name"
    return "spec"


async def desired_state(body: Mapping[str, Any], get_pool: PoolGetter, get_config_map: ConfigMapGetter | None = None,
                        status: Mapping[str, Any] | None = None) -> Desired:
    """Validate, check the flags, plan, render. Raises SpecProblem (field, reason, message) for anything that cannot
    be served as written; never any other exception for bad input."""
    obj = typed(body)
    check_flags(obj.spec)
    planned = await plan_deployment(obj.spec, get_pool, get_config_map)
    replicas = desired_groups(obj.spec, planned, status or {})
    prefill: RenderInput | None = None
    try:
        inp = render_input(obj, planned, replicas)
        objs = render_children(inp)
        if planned.prefill is not None:
            prefill = prefill_input(obj, planned, inp,
                                    desired_prefill_groups(obj.spec, planned, status or {}, replicas))
            objs += render_children(prefill)
    except ValueError as exc:
        msg = str(exc).split(": ", 1)[1] if str(exc).startswith("RenderInput ") else str(exc)
        raise SpecProblem(_render_field(msg), "InvalidSpec", msg) from None
    return Desired(deployment=obj, planned=planned, replicas=replicas, render=inp, children=objs, prefill=prefill)
