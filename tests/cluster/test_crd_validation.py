"""Replay the good/bad spec tables and the examples against the rig's kube-apiserver (server-side dry run), to check
that the CRDs' schema and CEL rules agree with the pydantic mirror. This is the CRD alone: the operator's webhook
(which adds the planner's checks) is tested in test_operator.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kube import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_api_models import (  # type: ignore[import-not-found]  # noqa: E402
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
_CLUSTER: list[Cluster] = []


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return _CLUSTER[0].kubectl(*args, stdin=stdin, check=False)


@pytest.fixture(scope="module", autouse=True)
def crds_applied(cluster: Cluster) -> Iterator[None]:
    _CLUSTER[:] = [cluster]
    # CRD-only: no operator webhook in the way while the tables replay; put back afterwards if the
    # operator-under-test (session fixture) had registered it
    saved = kubectl("get", "validatingwebhookconfiguration", "moe-operator.io", "-o", "json")
    kubectl("delete", "validatingwebhookconfiguration", "moe-operator.io", "--ignore-not-found")
    r = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    assert r.returncode == 0, r.stderr
    r = kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds"))
    assert r.returncode == 0, r.stderr
    yield
    if saved.returncode == 0:
        obj = json.loads(saved.stdout)
        for k in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
            obj["metadata"].pop(k, None)
        kubectl("create", "-f", "-", stdin=json.dumps(obj))


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
