"""NetworkPolicies of one deployment (ingress only: egress stays open for weight downloads and the apiserver).

SGLang's HTTP API has no authentication and its rendezvous port accepts any peer, so by default nothing but the
deployment's own pods may reach them:
  * engine pods: any port from the deployment's engine pods (NCCL/Gloo/torch.distributed open random ports between
    the ranks of a group; one policy cannot name "the same group", so it is the same deployment), the HTTP port from
    its router pods, from the operator (metrics scrapes, drain polls) and from metricsFrom (Prometheus);
  * router pods: the router port from routerFrom (default: the deployment's namespace), its metrics port from
    metricsFrom and the operator.
The rig has no CNI that enforces policies: tests check what the policies select, not packets."""

from __future__ import annotations

from typing import Any

from .argv import ROUTER_METRICS_PORT, ROUTER_PORT
from .inputs import RenderInput
from .meta import COMPONENT_ENGINE, COMPONENT_ROUTER, L_COMPONENT, L_DEPLOYMENT, object_meta, router_name
from .router import router_pod_selector


def engine_pod_selector(inp: RenderInput) -> dict[str, str]:
    return {L_DEPLOYMENT: inp.name, L_COMPONENT: COMPONENT_ENGINE}


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in sorted(set(ports))]


def _policy(inp: RenderInput, name: str, component: str, pods: dict[str, str],
            ingress: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(inp, name, component),
        "spec": {"podSelector": {"matchLabels": pods}, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def engine_network_policy(inp: RenderInput) -> dict[str, Any]:
    ingress: list[dict[str, Any]] = [{"from": [{"podSelector": {"matchLabels": engine_pod_selector(inp)}}]}]
    callers: list[dict[str, Any]] = []
    if inp.router_enabled:
        callers.append({"podSelector": {"matchLabels": router_pod_selector(inp)}})
    else:  # the <name>-leaders Service is the entry point: clients of the namespace call the leaders directly
        callers += [dict(p) for p in inp.router_from] if inp.router_from is not None else [{"podSelector": {}}]
    if inp.operator_peer is not None:
        callers.append(dict(inp.operator_peer))
    callers += [dict(p) for p in inp.metrics_from]
    ingress.append({"from": callers, "ports": _tcp(inp.port)})
    return _policy(inp, f"{inp.name}-engine", COMPONENT_ENGINE, engine_pod_selector(inp), ingress)


def router_network_policy(inp: RenderInput) -> dict[str, Any]:
    clients = [dict(p) for p in inp.router_from] if inp.router_from is not None else [{"podSelector": {}}]
    ingress: list[dict[str, Any]] = [{"from": clients, "ports": _tcp(ROUTER_PORT)}]
    if inp.operator_peer is not None:  # the operator removes a draining group from the router (its /workers API)
        ingress.append({"from": [dict(inp.operator_peer)], "ports": _tcp(ROUTER_PORT)})
    scrapers = [dict(p) for p in inp.metrics_from] + ([dict(inp.operator_peer)] if inp.operator_peer else [])
    if scrapers:
        ingress.append({"from": scrapers, "ports": _tcp(ROUTER_METRICS_PORT)})
    return _policy(inp, router_name(inp.name), COMPONENT_ROUTER, router_pod_selector(inp), ingress)


def network_policies(inp: RenderInput) -> list[dict[str, Any]]:
    if not inp.network_policy:
        return []
    return [engine_network_policy(inp)] + ([router_network_policy(inp)] if inp.router_enabled else [])
