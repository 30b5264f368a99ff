"""Shared pytest set-up. The cluster tier's fixtures live in tests/cluster/conftest.py."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# tests/ helpers (kube.py) import as a top-level module
sys.path.insert(0, str(Path(__file__).resolve().parent))
