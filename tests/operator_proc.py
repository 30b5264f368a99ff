"""Start/stop `moe-operator run` as a real process against the rig (the cluster tier's operator under test)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log_dir: Path, *, webhook_port: int = 29445, metrics_port: int = 29446,
                 liveness_port: int = 29447, extra_env: dict[str, str] | None = None,
                 identity: str = "operator-under-test", extra_args: tuple[str, ...] = ()):
        self.kubeconfig = kubeconfig
        self.identity = identity  # its leader-election identity: stable across restarts, as a pod name is
        self.log = log_dir / f"{identity}.log"
        self.ports = (webhook_port, metrics_port, liveness_port)
        self.extra_args = extra_args
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "MOE_LEADER_ID": identity, **(extra_env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        wh, mp, lp = self.ports
        for port in self.ports:
            # a leftover operator on these ports (a killed benchmark's child) would answer wait_live for this one,
            # which then dies on "address in use": the run would measure the old process without noticing
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    raise RuntimeError(f"127.0.0.1:{port} is already in use (a leftover operator process?); "
                                       f"{self.identity} cannot start there")
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moe_operator.cli", "run", "--kubeconfig", str(self.kubeconfig),
             "--webhook-port", str(wh), "--metrics-port", str(mp), "--metrics-host", "127.0.0.1",
             "--liveness-port", str(lp), *self.extra_args],
            stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=str(ROOT), start_new_session=True,
        )
        self.starts += 1

    def wait_live(self, timeout: float = 60) -> None:
        """Live (kopf's /healthz) and ready (the webhook port accepts connections, the chart's readiness probe):
        admission of MoEDeployments needs the webhook, so a restarted operator is only usable once it listens."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.ports[2]}/healthz"
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    live = r.status == 200
                if live:
                    with socket.create_connection(("127.0.0.1", self.ports[0]), timeout=1):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"operator not live and ready after {timeout}s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finalizer handling — what a node failure or OOM does."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@contextlib.contextmanager
def pod_runner(kubeconfig: Path, namespace: str, workdir: Path, router_python: str,
               *extra_args: str) -> Iterator[Path]:
    """`sglang-sim pod-runner` for one namespace: simulators at the group pods' IPs, the real router for router
    pods. Yields its log file."""
    log = workdir / "pod-runner.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moe_sim", "pod-runner", "--kubeconfig", str(kubeconfig),
             "--namespace", namespace, "--drain-poll", "0.2", "--router-log-dir", str(workdir / "routers"),
             "--router-python", router_python, *extra_args],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        # serving only once it has listed the pods: a test that goes on before would race the simulators' start
        deadline = time.monotonic() + 60
        while "pod-runner: ready" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pod-runner not ready (exit {proc.poll()}):\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


DEMO_PROCESSES = ("operator", "pod-runner")  # what `make demo` (hack/demo-operator) leaves running


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def paused_demo(state: Path) -> Iterator[None]:
    """Stop the operator and pod-runner `make demo` left on the rig, and start them again afterwards with the same
    command lines, working directories, environments (e.g. the operator's MOE_LEADER_ID) and logs: the cluster tier
    and the benchmarks run their own, and two of each would fight over the webhook registration, the objects and
    the pods' IPs. So `make demo` then `make test` (and the other way round) both pass and the demo stays up."""
    run, logs = state / "run", state / "logs"
    paused: list[tuple[str, list[str], str, dict[str, str]]] = []
    for name in DEMO_PROCESSES:
        try:
            pid = int((run / f"{name}.pid").read_text().strip())
            argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
            cwd = os.readlink(f"/proc/{pid}/cwd")
            env = dict(kv.decode().split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                       if b"=" in kv)
        except (OSError, ValueError):
            continue
        if not argv or not _alive(pid):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        paused.append((name, argv, cwd, env))
    try:
        yield
    finally:
        for name, argv, cwd, env in paused:
            with open(logs / f"{name}.log", "ab") as out:
                proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            (run / f"{name}.pid").write_text(f"{proc.pid}\n")
