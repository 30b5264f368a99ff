"""What kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status, the readiness convention Flux and `kubectl wait` follow)
says about Kubernetes objects, through the small Go tool hack/kstatus that hack/build-rig builds into
.testcluster/bin/kstatus (or $MOE_TESTCLUSTER_DIR/bin/kstatus, as tests/cluster/conftest.py finds the rig)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def kstatus_bin() -> Path:
    return Path(os.environ.get("MOE_TESTCLUSTER_DIR", ROOT / ".testcluster")) / "bin" / "kstatus"


def kstatus(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per object, in order: {"kind", "name", "namespace", "status", "message"}, where status is one of
    InProgress, Current, Failed, Terminating, NotFound, Unknown. A List object ({"items": [...]}) among `objs`
    contributes one result per item. Raises RuntimeError when the tool rejects the input."""
    r = subprocess.run([str(kstatus_bin())], input=json.dumps(objs), capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"kstatus exited {r.returncode}: {r.stderr.strip()}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
