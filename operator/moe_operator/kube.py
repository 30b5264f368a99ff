"""A small async Kubernetes client for the objects the operator writes: server-side apply under one field manager,
plus get/list/delete/patch on plain dicts. Built on the official client's asyncio flavour (`kubernetes.aio`: its
ApiClient for auth, TLS, kubeconfig and in-cluster config, and the public `DynamicClient.request` for the HTTP calls,
so nothing here depends on generator internals); kopf keeps its own client for watching."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from kubernetes.aio import client, config
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.dynamic import DynamicClient

from moe_operator import metrics

FIELD_MANAGER = "moe-operator"

# (apiVersion, kind) -> (plural, namespaced)
RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Pod"): ("pods", True),
    ("v1", "Service"): ("services", True),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "Event"): ("events", True),
    ("v1", "Node"): ("nodes", False),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("apps/v1", "StatefulSet"): ("statefulsets", True),
    ("policy/v1", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networkpolicies", True),
    ("rbac.authorization.k8s.io/v1", "Role"): ("roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rolebindings", True),
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): ("leaderworkersets", True),
    ("moe-operator.io/v1alpha1", "MoEDeployment"): ("moedeployments", True),
    ("moe-operator.io/v1alpha1", "AcceleratorPool"): ("acceleratorpools", False),
    ("coordination.k8s.io/v1", "Lease"): ("leases", True),
}


class KubeError(Exception):
    def __init__(self, status: int, reason: str, body: Any = None):
        super().__init__(f"{status} {reason}: {body}")
        self.status = status
        self.reason = reason
        self.body = body


def resource_path(api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
    plural, namespaced = RESOURCES[(api_version, kind)]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespaced and namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    if name:
        base += f"/{name}"
    return base


def _resource_parts(path: str) -> list[str]:
    """/api/v1/namespaces/ns/pods/name/status -> [pods, name, status]."""
    parts = path.split("?")[0].strip("/").split("/")
    parts = parts[2:] if parts[0] == "api" else parts[3:]
    return parts[2:] if len(parts) >= 3 and parts[0] == "namespaces" else parts


def _resource(path: str) -> str:
    """The apiserver's resource[/subresource] label of a request path."""
    parts = _resource_parts(path)
    return "/".join([parts[0], *parts[2:3]]) if parts else ""


def _verb(method: str, path: str) -> str:
    """The apiserver's verb names: a GET without a name is a LIST."""
    return method if method != "GET" else ("GET" if len(_resource_parts(path)) >= 2 else "LIST")


@dataclass
class Kube:
    api: client.ApiClient

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> Kube:
        cfg = client.Configuration()
        if kubeconfig or os.environ.get("KUBECONFIG") or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        else:
            config.load_incluster_config(client_configuration=cfg)
        return cls(client.ApiClient(cfg))

    async def close(self) -> None:
        await self.api.close()

    async def request(self, method: str, path: str, body: Any = None, *, query: dict[str, Any] | None = None,
                      content_type: str = "application/json") -> Any:
        metrics.API_REQUESTS.labels(_verb(method, path), _resource(path)).inc()
        if query:
            path = f"{path}?{urlencode(query)}"
        try:
            # DynamicClient.request takes a path and a body: no discovery needed for the kinds in RESOURCES
            resp = await DynamicClient(self.api).request(method, path, body=body, content_type=content_type,
                                                         serialize=False)
            raw = await resp.read()
            status = resp.status
        except ApiException as exc:
            try:
                detail = json.loads(exc.body) if exc.body else None
            except ValueError:
                detail = exc.body
            raise KubeError(exc.status or 0, exc.reason or "", detail) from None
        data = json.loads(raw) if raw else None
        if status >= 400:
            raise KubeError(status, (data or {}).get("reason", "") if isinstance(data, dict) else "", data)
        return data

    async def stream(self, path: str, query: dict[str, Any], timeout: float) -> AsyncIterator[dict]:
        """A watch: one JSON event per line until the server ends the stream (its timeoutSeconds) or fails."""
        metrics.API_REQUESTS.labels("WATCH", _resource(path)).inc()
        try:
            resp = await DynamicClient(self.api).request("GET", f"{path}?{urlencode(query)}", serialize=False,
                                                         _request_timeout=timeout)
        except ApiException as exc:
            raise KubeError(exc.status or 0, exc.reason or "", exc.body) from None
        try:
            while line := await resp.content.readline():
                if line.strip():
                    yield json.loads(line)
        finally:
            resp.release()

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        try:
            obj: dict = await self.request("GET", resource_path(api_version, kind, namespace, name))
            return obj
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, api_version: str, kind: str, namespace: str | None = None,
                   label_selector: str | None = None, field_selector: str | None = None) -> list[dict]:
        query = {k: v for k, v in {"labelSelector": label_selector, "fieldSelector": field_selector}.items() if v}
        try:
            out = await self.request("GET", resource_path(api_version, kind, namespace), query=query)
        except KubeError as exc:
            if exc.status == 404:  # e.g. the LWS CRD is not installed
                return []
            raise
        items: list[dict] = out.get("items", [])
        return items

    async def apply(self, obj: dict, *, subresource: str | None = None, force: bool = True) -> dict:
        """Server-side apply under FIELD_MANAGER: idempotent, conflict-free with other managers' fields."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        if subresource:
            path += f"/{subresource}"
        out: dict = await self.request(
            "PATCH", path, obj, query={"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"},
            content_type="application/apply-patch+yaml",
        )
        return out

    async def patch(self, api_version: str, kind: str, name: str, patch: Any, namespace: str | None = None,
                    *, subresource: str | None = None, content_type: str = "application/merge-patch+json") -> dict:
        path = resource_path(api_version, kind, namespace, name)
        if subresource:
            path += f"/{subresource}"
        out: dict = await self.request("PATCH", path, patch, query={"fieldManager": FIELD_MANAGER},
                                       content_type=content_type)
        return out

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None,
                     *, propagation: str = "Background") -> bool:
        try:
            await self.request("DELETE", resource_path(api_version, kind, namespace, name),
                               {"propagationPolicy": propagation})
            return True
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
