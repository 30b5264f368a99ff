"""Label keys, object names, metadata and owner references shared by the builders."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from .inputs import Owner, RenderInput

PART_OF = "moe-operator"
MANAGED_BY = "moe-operator"

# --- label / annotation keys -----------------------------------------------------
L_NAME = "app.kubernetes.io/name"
L_INSTANCE = "app.kubernetes.io/instance"
L_COMPONENT = "app.kubernetes.io/component"
L_PART_OF = "app.kubernetes.io/part-of"
L_MANAGED_BY = "app.kubernetes.io/managed-by"
L_DEPLOYMENT = "moe-operator.io/deployment"
L_ROLE = "moe-operator.io/role"  #: "leader" | "worker" on SGLang pods
#: "true" on leader pods that the router may send traffic to.  The drain step
#: patches it to "false" on a live leader pod to take its group out of routing
#: (the router's discovery selector requires "true").
L_ROUTABLE = "moe-operator.io/routable"
L_MODEL = "moe-operator.io/model"
L_POOL = "moe-operator.io/pool"
L_ACCELERATOR = "moe-operator.io/accelerator"
#: "prefill" | "decode" on the SGLang pods of a disaggregated deployment (the router's PD selectors)
L_PD_ROLE = "moe-operator.io/pd-role"
#: the prefill leaders' bootstrap port, read by SMG's Kubernetes discovery (smg/router_args.py
#: RouterArgs.bootstrap_port_annotation)
A_BOOTSTRAP_PORT = "sglang.ai/bootstrap-port"
A_SPEC_HASH = "moe-operator.io/spec-hash"
#: on the LWS and its pod templates: hash of the leaderWorkerTemplate we applied (moe_operator.rollout reads it)
A_TEMPLATE_HASH = "moe-operator.io/template-hash"

ROLE_LEADER = "leader"
ROLE_WORKER = "worker"
COMPONENT_ENGINE = "engine"
COMPONENT_ROUTER = "router"

# LeaderWorkerSet labels / annotations (set by the LWS controller / read by its webhook)
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
LWS_WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
LWS_GROUP_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/group-index"
LWS_REVISION_LABEL = "leaderworkerset.sigs.k8s.io/template-revision-hash"
LWS_EXCLUSIVE_TOPOLOGY = "leaderworkerset.sigs.k8s.io/exclusive-topology"


# --- names -----------------------------------------------------------------------
# The LWS controller creates a headless Service named after the LWS (it is the
# subdomain behind LWS_LEADER_ADDRESS = <lws>-<i>.<lws>.<ns>) and silently keeps
# an existing Service of that name: no Service of ours may be called <name>, or
# rendezvous DNS breaks.


def lws_name(name: str) -> str:
    return name


def router_name(name: str) -> str:
    """Router Deployment, ServiceAccount, Role, RoleBinding, PDB and client Service."""
    return f"{name}-router"


def leaders_service_name(name: str) -> str:
    """Client Service straight onto routable leaders (only when the router is disabled)."""
    return f"{name}-leaders"


def group_pdb_name(name: str) -> str:
    return name


# --- label helpers ---------------------------------------------------------------
_LABEL_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def label_value(value: str) -> str:
    """Coerce an informational string into a valid label value (<=63 chars,
    alphanumeric at both ends, ``[-._A-Za-z0-9]`` inside)."""
    v = _LABEL_BAD.sub("-", value)[:63]
    return v.strip("-._")


def base_labels(inp: RenderInput, component: str) -> dict[str, str]:
    """Standard labels on every object and pod template of ``inp``."""
    labels = {
        L_NAME: "smg" if component == COMPONENT_ROUTER else "sglang",
        L_INSTANCE: inp.name,
        L_COMPONENT: component,
        L_PART_OF: PART_OF,
        L_MANAGED_BY: MANAGED_BY,
        L_DEPLOYMENT: inp.name,
    }
    if inp.pd_role and component == COMPONENT_ENGINE:
        labels[L_PD_ROLE] = inp.pd_role
    for key, value in ((L_MODEL, inp.model_id), (L_POOL, inp.pool), (L_ACCELERATOR, inp.accelerator)):
        v = label_value(value)
        if v:
            labels[key] = v
    return labels


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(
    inp: RenderInput,
    name: str,
    component: str,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """metadata of a top-level object: name, namespace, labels, owner, spec-hash."""
    ann = dict(annotations or {})
    if inp.spec_hash:
        ann[A_SPEC_HASH] = inp.spec_hash
    meta: dict[str, Any] = {
        "name": name,
        "namespace": inp.namespace,
        "labels": base_labels(inp, component),
        "ownerReferences": [owner_reference(inp.owner)],
    }
    if ann:
        meta["annotations"] = dict(sorted(ann.items()))
    return meta


def spec_hash(obj: Any) -> str:
    """Stable short hash of a JSON-able value: sha256 of canonical JSON
    (sorted keys, no whitespace), first 16 hex digits."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
