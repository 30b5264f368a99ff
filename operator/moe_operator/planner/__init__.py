"""Capacity planner: model x precision x accelerator pool x sessions -> nodes, layout, SGLang args.

Pure Python (stdlib + PyYAML for the catalog data); no torch, no sglang, no cluster.
"""

from moe_operator.planner.accelerators import ACCELERATORS, AcceleratorProfile
from moe_operator.planner.catalog import CATALOG, ModelSpec, load_model_config
from moe_operator.planner.errors import PlanError
from moe_operator.planner.plan import Plan, PlanRequest, plan
from moe_operator.planner.precision import PRECISIONS

__all__ = [
    "ACCELERATORS",
    "CATALOG",
    "PRECISIONS",
    "AcceleratorProfile",
    "ModelSpec",
    "Plan",
    "PlanError",
    "PlanRequest",
    "load_model_config",
    "plan",
]
