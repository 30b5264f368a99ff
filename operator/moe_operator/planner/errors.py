"""PlanError: an infeasible plan, naming the constraint that failed and the numbers."""

from __future__ import annotations


class PlanError(Exception):
    """Raised when no plan satisfies the request.

    constraint: a stable short name — "weights_fit", "precision_unsupported", "context_too_long",
    "max_groups", "kv_dtype", "model", "model_config", "accelerator", "precision", "request", "mtp", "layout".
    """

    def __init__(self, constraint: str, message: str) -> None:
        super().__init__(f"{constraint}: {message}")
        self.constraint = constraint
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"constraint": self.constraint, "message": self.message}
