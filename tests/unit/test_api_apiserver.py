"""Opt-in: replay the good/bad spec tables and the examples against a real kube-apiserver (server-side dry run),
to check that the CRDs' CEL rules agree with the pydantic mirror.

Runs only when MOE_API_KUBECONFIG names a kubeconfig of a disposable cluster (e.g. hack/testcluster's
.testcluster/kubeconfig); the generated CRDs are applied there first. Otherwise skipped: the cluster tier does it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_api_models import (  # type: ignore[import-not-found]
    BAD_MOED,
    BAD_POOL,
    EXAMPLES,
    GOOD_MOED,
    GOOD_POOL,
    MOED,
    POOL,
    patched,
)

ROOT = Path(__file__).resolve().parents[2]
KUBECONFIG = os.environ.get("MOE_API_KUBECONFIG")
KUBECTL = str(ROOT / ".venv/bin/kubectl") if (ROOT / ".venv/bin/kubectl").exists() else shutil.which("kubectl")

pytestmark = pytest.mark.skipif(not (KUBECONFIG and KUBECTL), reason="set MOE_API_KUBECONFIG to replay on a cluster")


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(KUBECONFIG), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module", autouse=True)
def crds_applied() -> None:
    r = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    assert r.returncode == 0, r.stderr
    r = kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds"))
    assert r.returncode == 0, r.stderr


def dry_run(body: dict[str, Any]) -> tuple[int, str]:
    body = patched(body, {"metadata.name": "api-replay"} if body["metadata"].get("name") else {})
    r = kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(body))
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize(
    ("case", "changes", "field", "cel"), BAD_MOED + BAD_POOL, ids=[c[0] for c in BAD_MOED + BAD_POOL]
)
def test_bad_rejected_by_apiserver(case: str, changes: dict[str, Any], field: str, cel: bool) -> None:
    base = MOED if any(c[0] == case for c in BAD_MOED) else POOL
    if "metadata.name" in changes:  # keep the case's own (bad) name
        r = kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(patched(base, changes)))
        rc, out = r.returncode, r.stdout + r.stderr
    else:
        rc, out = dry_run(patched(base, changes))
    assert rc != 0, f"{case}: accepted by the apiserver"
    leaf = field.split(".")[-1].split("[")[0]
    assert leaf in out, f"{case}: apiserver error does not name {leaf!r}: {out}"


@pytest.mark.parametrize(("case", "changes"), GOOD_MOED + GOOD_POOL, ids=[c[0] for c in GOOD_MOED + GOOD_POOL])
def test_good_accepted_by_apiserver(case: str, changes: dict[str, Any]) -> None:
    base = MOED if any(c[0] == case for c in GOOD_MOED) else POOL
    rc, out = dry_run(patched(base, changes))
    assert rc == 0, f"{case}: {out}"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_accepted_by_apiserver(path: Path) -> None:
    r = kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", str(path))
    assert r.returncode == 0, r.stderr
