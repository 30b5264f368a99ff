"""Helpers for cluster-tier tests: a real client (the official client's kubernetes.aio) and waiting with useful
failure messages."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    pass


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    what: str,
    interval: float = 0.3,
    describe: Callable[[], Awaitable[str]] | None = None,
) -> T:
    """Poll `probe` until it returns something truthy. On timeout, fail with `what`, the last value or error the
    probe produced, and (if given) a description of the current state."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await probe()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - the last error is part of the failure message
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            state = await describe() if describe else ""
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}; "
                              f"last probe result: {last!r}\n{state}")
        await asyncio.sleep(interval)


@dataclass
class Cluster:
    kubeconfig: Path
    bin_dir: Path

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin, text=True, capture_output=True, check=check,
        )

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def lease_holder(self) -> str:
        """Who holds the operator's leader Lease (outside a cluster it lives in `default`); "" when nobody does."""
        r = self.kubectl("-n", "default", "get", "lease", "moe-operator-leader", "-o",
                         "jsonpath={.spec.holderIdentity}", check=False)
        return r.stdout.strip() if r.returncode == 0 else ""
