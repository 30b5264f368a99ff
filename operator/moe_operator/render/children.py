"""All objects of one deployment, in apply order, and their identity keys."""

from __future__ import annotations

from typing import Any

from .inputs import PD_PREFILL, RenderInput
from .lws import leaderworkerset
from .network import network_policies
from .pdb import pod_disruption_budget, router_pod_disruption_budget
from .router import (
    leader_service,
    router_deployment,
    router_role,
    router_role_binding,
    router_service,
    router_service_account,
)

ChildKey = tuple[str, str, str]  # (apiVersion, kind, name)


def children(inp: RenderInput) -> list[dict[str, Any]]:
    """Objects to apply, in order: the NetworkPolicies, router RBAC (so the router can list pods
    when it starts), the LWS, its PDB, then the router and its PDB, and last
    the client Service.  Without the router, a ``<name>-leaders`` Service
    replaces the router objects. The prefill role of a disaggregated deployment is its LWS and PDB only: the
    decode role's input renders the rest (the router in PD mode, the policies covering every engine pod)."""
    if inp.pd_role == PD_PREFILL:
        return [leaderworkerset(inp), pod_disruption_budget(inp)]
    objs: list[dict[str, Any]] = network_policies(inp)  # first: no pod of the deployment is ever unprotected
    if inp.router_enabled:
        objs += [router_service_account(inp), router_role(inp), router_role_binding(inp)]
    objs += [leaderworkerset(inp), pod_disruption_budget(inp)]
    if inp.router_enabled:
        objs.append(router_deployment(inp))
        router_pdb = router_pod_disruption_budget(inp)
        if router_pdb is not None:
            objs.append(router_pdb)
        objs.append(router_service(inp))
    else:
        objs.append(leader_service(inp))
    return objs


def child_key(obj: dict[str, Any]) -> ChildKey:
    return (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])


def child_keys(inp: RenderInput) -> set[ChildKey]:
    """Identity of every object :func:`children` renders; owned objects
    outside this set are orphans to delete (e.g. the router objects after
    ``router_enabled`` flips to False)."""
    return {child_key(o) for o in children(inp)}
