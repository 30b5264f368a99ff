"""Thin kopf handlers, one module per concern. Importing this package registers them all."""

from moe_operator.handlers import admission, autoscaling, caches, children, deployment, lifecycle, pool  # noqa: F401
