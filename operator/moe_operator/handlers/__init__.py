"""Thin kopf handlers, one module per concern. Importing this package registers them all (the admission handlers
only when the webhook is served: kopf refuses to start with admission handlers and no server, so `moe-operator run
--no-webhook` sets MOE_WEBHOOK=off before importing)."""

import os

from moe_operator.handlers import autoscaling, caches, children, deployment, lifecycle, pool  # noqa: F401

if os.environ.get("MOE_WEBHOOK", "on") != "off":
    from moe_operator.handlers import admission  # noqa: F401
