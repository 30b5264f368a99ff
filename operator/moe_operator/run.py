"""`moe-operator run`: the operator process (kubeconfig or in-cluster), with its admission webhook, liveness
endpoint and Prometheus metrics."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class WebhookSetup:
    server: Any
    managed: str | None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", default=True,
                       help="watch MoEDeployments in every namespace (default)")
    scope.add_argument("-n", "--namespace", action="append", help="watch only these namespaces (repeatable)")
    p.add_argument("--metrics-port", type=int, default=int(os.environ.get("MOE_METRICS_PORT", 8080)),
                   help="Prometheus metrics port (0 disables; default 8080)")
    p.add_argument("--liveness-port", type=int, default=int(os.environ.get("MOE_LIVENESS_PORT", 8081)),
                   help="liveness endpoint port, serving /healthz (default 8081)")
    p.add_argument("--metrics-host", default=os.environ.get("MOE_METRICS_HOST"),
                   help="listen address of /metrics and /healthz (default 0.0.0.0 in a cluster, where Prometheus "
                        "and the kubelet reach the pod IP; 127.0.0.1 outside one). Neither is authenticated: in a "
                        "cluster the chart's networkPolicy limits who may scrape")
    w = p.add_argument_group("admission webhook")
    w.add_argument("--webhook-port", type=int, default=int(os.environ.get("MOE_WEBHOOK_PORT", 9443)))
    w.add_argument("--webhook-addr", help="listen address (default 127.0.0.1 outside a cluster, 0.0.0.0 inside)")
    w.add_argument("--webhook-host", help="host name or IP the apiserver uses in the webhook URL")
    w.add_argument("--webhook-cert-dir",
                   help="directory with tls.crt and tls.key (and ca.crt): given by the Helm chart in a cluster; "
                        "outside a cluster a self-signed set is generated")
    w.add_argument("--webhook-register", choices=["auto", "yes", "no"], default="auto",
                   help="create/patch the ValidatingWebhookConfiguration ourselves with a URL client config "
                        "(auto: yes outside a cluster, no inside, where the chart manages it)")
    w.add_argument("--no-webhook", action="store_true", help="do not serve admission (schema and CEL still apply)")


def _in_cluster(args: argparse.Namespace) -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not (args.kubeconfig or os.environ.get("KUBECONFIG"))


def _webhook(args: argparse.Namespace) -> WebhookSetup | None:
    from moe_operator.webhook_certs import ensure_self_signed
    from moe_operator.webhook_server import ThreadedWebhookServer

    if args.no_webhook:
        return None
    inside = _in_cluster(args)
    addr = args.webhook_addr or ("0.0.0.0" if inside else "127.0.0.1")
    host = args.webhook_host or ("127.0.0.1" if not inside else None)
    if args.webhook_cert_dir:
        d = Path(args.webhook_cert_dir)
        crt, key, ca = d / "tls.crt", d / "tls.key", d / "ca.crt"
        cafile = ca if ca.exists() else None
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "moe-operator" / "webhook"
        cafile, crt, key = ensure_self_signed(cache, [host or "127.0.0.1", "localhost"])
    server = ThreadedWebhookServer(addr=addr, port=args.webhook_port, host=host, certfile=str(crt), pkeyfile=str(key),
                                cafile=str(cafile) if cafile else None)
    register = args.webhook_register == "yes" or (args.webhook_register == "auto" and not inside)
    if register:
        # kopf removes the registration it manages when it exits: a loud note, so nobody mistakes a stopped
        # operator for one that still checks (reconcile still refuses a bad spec, as Stalled/InvalidSpec)
        logging.getLogger(__name__).warning(
            "admission webhook registered as ValidatingWebhookConfiguration moe-operator.io (URL %s:%s); it is "
            "REMOVED when this process exits: while it is stopped only the schema and CEL rules check writes",
            host, args.webhook_port)
    return WebhookSetup(server=server, managed="moe-operator.io" if register else None)


def run(args: argparse.Namespace) -> int:
    import asyncio

    import kopf
    from prometheus_client import start_http_server

    if args.no_webhook:
        os.environ["MOE_WEBHOOK"] = "off"  # before the handlers register (handlers/__init__.py)
    import moe_operator.handlers  # noqa: F401 - registers the handlers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
        os.environ["MOE_OPERATOR_KUBECONFIG"] = args.kubeconfig
    if args.metrics_host is None:
        args.metrics_host = "0.0.0.0" if _in_cluster(args) else "127.0.0.1"
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_host)
    memo = kopf.Memo()
    memo.webhook = _webhook(args)
    namespaces = args.namespace or []
    memo.namespaces = namespaces  # the informer stores watch the same namespaces as kopf
    asyncio.run(kopf.operator(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://{args.metrics_host}:{args.liveness_port}/healthz" if args.liveness_port else None,
        memo=memo,
    ))
    return 0
