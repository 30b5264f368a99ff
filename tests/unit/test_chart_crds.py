"""The chart ships the same CRDs the API models generate."""

from __future__ import annotations

from pathlib import Path

from moe_operator.api.crd import check_crds

ROOT = Path(__file__).resolve().parents[2]


def test_chart_crds_match_the_generator() -> None:
    assert check_crds(ROOT / "charts/moe-operator/crds") == []
