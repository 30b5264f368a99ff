"""Thin kopf handlers, one module per concern. Importing this package registers them all."""

from moe_operator.handlers import admission, autoscaling, deployment, group_pods, lifecycle, pool  # noqa: F401
