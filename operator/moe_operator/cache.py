"""Read side of the operator: watch-backed caches of the objects it owns and reads, so a reconcile, an autoscaling
step and an admission review read memory instead of the API (client-go's informer pattern).

Two sources, one view (`Cache`): the MoEDeployments and AcceleratorPools are kopf indexes (kopf watches them for
its handlers anyway, and hands every handler the indexes as keyword arguments named after the indexer); every kind
the operator creates for a deployment (CHILD_KINDS, and the group pods) is a `moe_operator.informer.Store`: one
LIST + WATCH per kind narrowed on the server to our deployment label. Objects are stored without managedFields
(kubernetes/kubernetes#90066: most of an object's bytes) and as plain dicts, detached from kopf's bodies, so a
reader can never see one change under it."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

DEPLOYMENT_LABEL = "moe-operator.io/deployment"
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
MOED = ("moe-operator.io/v1alpha1", "MoEDeployment")

# every kind the operator creates for a MoEDeployment, as (apiVersion, kind)
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)
POD = ("v1", "Pod")
LWS = ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet")
NODE = ("v1", "Node")  # cluster-wide, unlabelled: group health (a pod on a NotReady node) and pool status
STORED_KINDS = (*CHILD_KINDS, POD)  # the informer stores narrowed to our label
MOED_INDEX, POOL_INDEX = "cached_moedeployments", "cached_acceleratorpools"  # the kopf indexes
ChildKey = tuple[str, str, str]  # (apiVersion, kind, name)


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """A detached copy without managedFields: what the caches store."""
    out = copy.deepcopy(dict(body))
    meta = dict(out.get("metadata") or {})
    meta.pop("managedFields", None)
    out["metadata"] = meta
    return out


def slim_node(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator reads of a Node (labels, taints, conditions, allocatable): a real node's status also lists
    every image it holds (often hundreds of entries), which a 2,000-node store must not keep."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    st = body.get("status") or {}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {k: copy.deepcopy(meta[k]) for k in ("name", "uid", "resourceVersion", "labels",
                                                         "deletionTimestamp") if k in meta},
        "spec": {k: copy.deepcopy(spec[k]) for k in ("taints", "unschedulable") if k in spec},
        "status": {k: copy.deepcopy(st[k]) for k in ("conditions", "allocatable", "capacity") if k in st},
    }


def node_problem(node: Mapping[str, Any] | None) -> str | None:
    """Why a group pod on this node cannot be counted on, or None: the node is gone, not Ready (kubelet reports
    False; Unknown when the node stopped reporting: unreachable), or tainted NoExecute by the node controller."""
    if node is None:
        return "node no longer exists"
    ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "True":
        st = ready.get("status", "Unknown") if ready else "Unknown"
        why = ": ".join(x for x in (ready.get("reason"), ready.get("message")) if x) if ready else "no Ready condition"
        return f"Ready={st}" + (" (unreachable)" if st == "Unknown" else "") + (f", {why}" if why else "")
    for t in (node.get("spec") or {}).get("taints") or []:
        if t.get("effect") == "NoExecute" and t.get("key") in ("node.kubernetes.io/not-ready",
                                                              "node.kubernetes.io/unreachable"):
            return f"tainted {t['key']}:NoExecute"
    return None


def nodes_matching(store: Any, selector: Mapping[str, str]) -> list[dict[str, Any]] | None:
    """Nodes carrying every label of `selector`, from the node store; None while it has not listed yet."""
    synced = getattr(store, "synced", None)
    if store is None or synced is None or not synced.is_set():
        return None
    return [n for n in list(getattr(store, "objects", {}).values())
            if all((n["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())]


def owner_key(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, MoEDeployment name) of a child, from our label; None for an object without it."""
    meta = body.get("metadata") or {}
    owner = (meta.get("labels") or {}).get(DEPLOYMENT_LABEL)
    return (meta.get("namespace") or "", owner) if owner else None


def resource_version(obj: Mapping[str, Any] | None) -> int:
    """etcd's revision as an int, to pick the newest of two copies of one object (our own write's response vs the
    watch). -1 when missing or not numeric: then the watched copy wins."""
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or -1)
    except (TypeError, ValueError):
        return -1


def newest(*copies: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    present = [c for c in copies if c is not None]
    return max(present, key=resource_version) if present else None


def _one(store: Iterable[Any] | None) -> dict[str, Any] | None:
    return next(iter(store), None) if store is not None else None


class Owned(Protocol):
    def owned(self, namespace: str, deployment: str) -> Iterable[dict[str, Any]]: ...


@dataclass(frozen=True)
class Cache:
    """The caches one handler call sees (both kinds of source are live: they follow the watches)."""

    moeds: Mapping[Any, Any]
    pools: Mapping[Any, Any]
    stores: Mapping[tuple[str, str], Owned]  # (apiVersion, kind) -> store of that kind

    @classmethod
    def of(cls, memo: Any, kwargs: Mapping[str, Any]) -> Cache:
        """From a kopf handler's memo and keyword arguments (a missing index is a registration bug: KeyError)."""
        return cls(moeds=kwargs[MOED_INDEX], pools=kwargs[POOL_INDEX], stores=memo.stores.by_kind)

    def moed(self, namespace: str, name: str) -> dict[str, Any] | None:
        return _one(self.moeds.get((namespace, name)))

    def all_moeds(self) -> list[dict[str, Any]]:
        """Every cached MoEDeployment (a snapshot: the index may change while a caller works through it)."""
        return [m for store in list(self.moeds.values()) for m in list(store)]

    def pool(self, name: str) -> dict[str, Any] | None:
        return _one(self.pools.get(name))

    def children(self, namespace: str, name: str) -> dict[ChildKey, dict[str, Any]]:
        """Every object of a CHILD_KINDS kind labelled for this MoEDeployment and owned by it."""
        out: dict[ChildKey, dict[str, Any]] = {}
        for api_version, kind in CHILD_KINDS:
            for obj in self.stores[(api_version, kind)].owned(namespace, name):
                if _owned_by(obj, name):
                    out[(api_version, kind, obj["metadata"]["name"])] = obj
        return out

    def node(self, name: str) -> dict[str, Any] | None:
        store = self.stores.get(NODE)
        return getattr(store, "objects", {}).get(("", name)) if store is not None else None

    def nodes_matching(self, selector: Mapping[str, str]) -> list[dict[str, Any]] | None:
        return nodes_matching(self.stores.get(NODE), selector)

    def node_problems(self, pods: Iterable[Mapping[str, Any]]) -> dict[str, str]:
        """node -> problem for the nodes these pods are bound to (node_problem); only the bad ones."""
        out: dict[str, str] = {}
        if NODE not in self.stores:
            return out
        for p in pods:
            node = (p.get("spec") or {}).get("nodeName")
            if node and node not in out and (why := node_problem(self.node(node))):
                out[node] = why
        return out

    def lws(self, namespace: str, name: str, lws_name: str | None = None) -> dict[str, Any] | None:
        """The MoEDeployment `name`'s LeaderWorkerSet `lws_name` (default: the one named like it, the decode or
        aggregated groups; the prefill role's is <name>-prefill)."""
        want = lws_name or name
        return next((o for o in self.stores[LWS].owned(namespace, name) if o["metadata"]["name"] == want), None)

    def router_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Pods of this MoEDeployment's router Deployment."""
        return [p for p in self.stores[POD].owned(namespace, name)
                if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "router"]

    def pods(self, namespace: str, name: str, lws_name: str | None = None) -> list[dict[str, Any]]:
        """Pods of this MoEDeployment's SGLang groups of one LWS (default: the one named like it; the router's pods
        and the other PD role's carry the deployment label too)."""
        want = lws_name or name
        return sorted((p for p in self.stores[POD].owned(namespace, name)
                       if (p["metadata"].get("labels") or {}).get(LWS_NAME_LABEL) == want),
                      key=lambda p: p["metadata"]["name"])


def _owned_by(obj: Mapping[str, Any], name: str) -> bool:
    return any(r.get("kind") == MOED[1] and r.get("name") == name
               for r in obj["metadata"].get("ownerReferences") or [])
