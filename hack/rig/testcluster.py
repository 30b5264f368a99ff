"""A real Kubernetes control plane on loopback for moe-operator's tests and demo.

etcd -> kube-apiserver (RBAC, client-certificate admin, service-account signing) -> kube-controller-manager
-> kube-scheduler -> kwok (simulated H200 / B200 / Ascend / CPU nodes) -> LeaderWorkerSet controller (webhooks
served on 127.0.0.1, registered by URL). Binaries come from hack/build-rig (.testcluster/bin).

    python hack/rig/testcluster.py up|down|status|nodes [--h200 N --b200 N --ascend N --cpu N]

`up` is a no-op when everything it started is alive and the apiserver is ready. `down` stops only the processes
whose pid files it wrote (checking the pid still runs our binary) and removes the cluster state, keeping the binaries.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("MOE_TESTCLUSTER_DIR", ROOT / ".testcluster"))
BIN = STATE / "bin"
RUN = STATE / "run"
PKI = STATE / "pki"
LOGS = STATE / "logs"
KUBECONFIG = STATE / "kubeconfig"

# Fixed loopback ports (overridable) so a second `up` finds the same cluster and tests can name them.
PORTS = {
    "etcd": int(os.environ.get("MOE_RIG_ETCD_PORT", 23790)),
    "etcd-peer": int(os.environ.get("MOE_RIG_ETCD_PEER_PORT", 23800)),
    "apiserver": int(os.environ.get("MOE_RIG_APISERVER_PORT", 26443)),
    "kcm": int(os.environ.get("MOE_RIG_KCM_PORT", 20257)),
    "scheduler": int(os.environ.get("MOE_RIG_SCHEDULER_PORT", 20259)),
    "kwok": int(os.environ.get("MOE_RIG_KWOK_PORT", 20250)),
    "lws-webhook": int(os.environ.get("MOE_RIG_LWS_WEBHOOK_PORT", 29443)),
    "lws-health": int(os.environ.get("MOE_RIG_LWS_HEALTH_PORT", 28081)),
}
SERVICE_CIDR = "10.96.0.0/16"
COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "lws-controller"]

KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
TOPOLOGY_KEY = "moe-operator.io/nvlink-domain"
RACK_KEY = "moe-operator.io/rack"


def log(msg: str) -> None:
    print(f"[testcluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------- PKI
def _write_pki() -> None:
    """CA, apiserver serving cert, admin client cert (system:masters), SA signing key, webhook serving cert."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    if (PKI / "done").exists():
        return
    PKI.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    later = now + dt.timedelta(days=3650)

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def cert_pem(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "moe-operator-testcluster-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(later)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (PKI / "ca.crt").write_bytes(cert_pem(ca))
    (PKI / "ca.key").write_bytes(key_pem(ca_key))

    def issue(name: str, cn: str, orgs: list[str], dns: list[str], ips: list[str], server: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] + [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        b = (x509.CertificateBuilder().subject_name(x509.Name(subject)).issuer_name(ca_name)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now).not_valid_after(later)
             .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server
                                                   else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        (PKI / f"{name}.crt").write_bytes(cert_pem(cert))
        (PKI / f"{name}.key").write_bytes(key_pem(key))

    issue("apiserver", "kube-apiserver", [],
          ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
           "kubernetes.default.svc.cluster.local"], ["127.0.0.1", "10.96.0.1"], server=True)
    issue("admin", "testcluster-admin", ["system:masters"], [], [], server=False)
    # One serving cert for every webhook served on loopback (LWS, and moe-operator's own when run locally).
    issue("webhook", "loopback-webhooks", [], ["localhost"], ["127.0.0.1"], server=True)
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (PKI / "sa.key").write_bytes(key_pem(sa))
    (PKI / "sa.pub").write_bytes(sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    lws_certs = PKI / "lws-certs"
    lws_certs.mkdir(exist_ok=True)
    shutil.copy(PKI / "webhook.crt", lws_certs / "tls.crt")
    shutil.copy(PKI / "webhook.key", lws_certs / "tls.key")
    (PKI / "done").write_text("ok\n")


def _write_kubeconfig() -> None:
    import base64

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "testcluster",
        "clusters": [{"name": "testcluster", "cluster": {
            "server": f"https://127.0.0.1:{PORTS['apiserver']}", "certificate-authority-data": b64(PKI / "ca.crt")}}],
        "users": [{"name": "admin", "user": {"client-certificate-data": b64(PKI / "admin.crt"),
                                             "client-key-data": b64(PKI / "admin.key")}}],
        "contexts": [{"name": "testcluster", "context": {"cluster": "testcluster", "user": "admin"}}],
    }
    KUBECONFIG.write_text(yaml.safe_dump(cfg))
    KUBECONFIG.chmod(0o600)


# ----------------------------------------------------------------------------------------------- HTTP to the API
def _ssl_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    ctx.load_cert_chain(str(PKI / "admin.crt"), str(PKI / "admin.key"))
    return ctx


def api(method: str, path: str, body: dict | None = None, content_type: str = "application/json",
        timeout: float = 10.0) -> tuple[int, dict]:
    url = f"https://127.0.0.1:{PORTS['apiserver']}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, context=_ssl_ctx(), timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw[:1] == b"{" else {"raw": raw.decode()})
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"raw": raw.decode(errors="replace")}


def _http_ok(url: str, insecure: bool = True, timeout: float = 2.0) -> bool:
    ctx = ssl.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=ctx if url.startswith("https") else None, timeout=timeout) as r:
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


def apiserver_ready() -> bool:
    try:
        code, _ = api("GET", "/readyz", timeout=3)
        return code == 200
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "kubectl"), "--kubeconfig", str(KUBECONFIG), *args], input=stdin,
                          text=True, capture_output=True, check=check)


# ------------------------------------------------------------------------------------------------------ processes
def _pidfile(name: str) -> Path:
    return RUN / f"{name}.pid"


def _alive(name: str) -> int | None:
    """The pid of a component we started, if it still runs our binary (guards against pid reuse)."""
    pf = _pidfile(name)
    if not pf.exists():
        return None
    try:
        pid = int(pf.read_text().split()[0])
        exe = os.readlink(f"/proc/{pid}/exe")
    except (ValueError, OSError):
        return None
    binary = "lws-controller" if name == "lws-controller" else name
    return pid if os.path.basename(exe.replace(" (deleted)", "")) == binary else None


def _start(name: str, args: list[str], env: dict[str, str] | None = None) -> None:
    if _alive(name):
        return
    LOGS.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    out = open(LOGS / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([str(BIN / name), *args], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(STATE),
                            env={**os.environ, **(env or {})})
    _pidfile(name).write_text(f"{proc.pid}\n")
    log(f"started {name} (pid {proc.pid}, log {LOGS / (name + '.log')})")


def _wait(what: str, check, timeout: float, name: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if name and not _alive(name):
            tail = (LOGS / f"{name}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"{name} exited while waiting for {what}; last log lines:\n{tail}")
        time.sleep(0.3)
    tail = (LOGS / f"{name}.log").read_text(errors="replace")[-3000:] if name else ""
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------------------------------- components
# kwok renews each node's Lease every leaseDuration/4 (as the kubelet does): with 40 s that is 200 writes/s for 2,000
# nodes, which starved a 2-core apiserver until most nodes went NotReady. 180 s -> one renewal per node every 45 s
# (44/s at 2,000 nodes); the node lifecycle controller's grace period must stay above the renew interval.
NODE_LEASE_SECONDS, NODE_GRACE_SECONDS = 180, 120


def start_etcd() -> None:
    _start("etcd", [
        f"--data-dir={STATE / 'etcd-data'}", "--name=testcluster",
        f"--listen-client-urls=http://127.0.0.1:{PORTS['etcd']}",
        f"--advertise-client-urls=http://127.0.0.1:{PORTS['etcd']}",
        f"--listen-peer-urls=http://127.0.0.1:{PORTS['etcd-peer']}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{PORTS['etcd-peer']}",
        f"--initial-cluster=testcluster=http://127.0.0.1:{PORTS['etcd-peer']}",
        "--unsafe-no-fsync=true", "--quota-backend-bytes=8589934592", "--log-level=warn",
    ])
    _wait("etcd health", lambda: _http_ok(f"http://127.0.0.1:{PORTS['etcd']}/health"), 30, "etcd")


def start_apiserver() -> None:
    _start("kube-apiserver", [
        f"--etcd-servers=http://127.0.0.1:{PORTS['etcd']}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={PORTS['apiserver']}",
        f"--tls-cert-file={PKI / 'apiserver.crt'}", f"--tls-private-key-file={PKI / 'apiserver.key'}",
        f"--client-ca-file={PKI / 'ca.crt'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={PKI / 'sa.key'}", f"--service-account-signing-key-file={PKI / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}", "--authorization-mode=Node,RBAC", "--allow-privileged=true",
        "--enable-priority-and-fairness=false", "--max-requests-inflight=0", "--max-mutating-requests-inflight=0",
        "--endpoint-reconciler-type=none", "--profiling=false", "--v=1",
    ])
    _wait("kube-apiserver /readyz", apiserver_ready, 90, "kube-apiserver")


def start_controller_manager() -> None:
    _start("kube-controller-manager", [
        f"--kubeconfig={KUBECONFIG}", "--leader-elect=false", "--bind-address=127.0.0.1",
        f"--secure-port={PORTS['kcm']}", "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
        "--controllers=*", f"--service-account-private-key-file={PKI / 'sa.key'}", f"--root-ca-file={PKI / 'ca.crt'}",
        "--use-service-account-credentials=true", f"--service-cluster-ip-range={SERVICE_CIDR}",
        # Pods get 127.x IPs from the per-node podCIDR we set on each Node (see make_node): no CIDR allocation here.
        "--allocate-node-cidrs=false",
        f"--node-monitor-grace-period={NODE_GRACE_SECONDS}s", "--node-monitor-period=2s",
        "--kube-api-qps=500", "--kube-api-burst=1000", "--concurrent-statefulset-syncs=20", "--v=1",
    ])
    _wait("kube-controller-manager /healthz", lambda: _http_ok(f"https://127.0.0.1:{PORTS['kcm']}/healthz"), 60,
          "kube-controller-manager")


def start_scheduler() -> None:
    cfg = STATE / "scheduler-config.yaml"
    cfg.write_text(yaml.safe_dump({
        "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(KUBECONFIG), "qps": 500, "burst": 1000},
        "leaderElection": {"leaderElect": False},
    }))
    _start("kube-scheduler", [
        f"--config={cfg}", "--bind-address=127.0.0.1", f"--secure-port={PORTS['scheduler']}",
        "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics", "--v=1",
    ])
    _wait("kube-scheduler /healthz", lambda: _http_ok(f"https://127.0.0.1:{PORTS['scheduler']}/healthz"), 60,
          "kube-scheduler")


def kwok_stage_files() -> list[Path]:
    s = STATE / "kwok-stages"
    return [
        s / "node/fast/node-initialize.yaml",
        s / "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
        s / "pod/fast/pod-ready.yaml",
        s / "pod/fast/pod-complete.yaml",
        _slow_pod_delete(),
        # Chaos stages: they act only on objects carrying their opt-in label, so they are always loaded.
        s / "node/chaos/node-not-ready.yaml",
        s / "pod/chaos/pod-container-running-failed.yaml",
        s / "pod/chaos/pod-init-container-running-failed.yaml",
        ROOT / "hack/rig/stages/pod-container-restart.yaml",
        # PVCs of StorageClass kwok-volume get a PersistentVolume and bind (model weights on a PVC)
        s / "volume/fast/pvc-provision.yaml",
        s / "volume/fast/pv-bind.yaml",
        s / "volume/fast/pvc-delete.yaml",
        s / "volume/fast/pv-delete.yaml",
    ]


def _slow_pod_delete() -> Path:
    """kwok's pod-delete stage with a kubelet-like termination delay: a pod removed the instant it is marked for
    deletion is never seen terminating by controllers that react to that (LWS recreates a group when one of its
    pods is being deleted)."""
    src = STATE / "kwok-stages/pod/fast/pod-delete.yaml"
    doc = yaml.safe_load(src.read_text())
    doc["spec"]["delay"] = {"durationMilliseconds": 1000}
    out = STATE / "kwok-stages-rig/pod-delete.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(doc))
    return out


def start_kwok() -> None:
    args = [f"--kubeconfig={KUBECONFIG}", "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            # Fallback only: every Node we create carries its own 127.x podCIDR.
            "--cidr=127.254.0.0/16", "--node-ip=127.0.0.1", f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
            f"--node-port={PORTS['kwok']}", "--server-address=127.0.0.1:" + str(PORTS["kwok"])]
    args += [f"--config={p}" for p in kwok_stage_files()]
    _start("kwok", args)
    time.sleep(0.5)
    _wait("kwok", lambda: _alive("kwok") is not None, 5, "kwok")
    storage_class = STATE / "kwok-stages/volume/fast/storage-class.yaml"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(storage_class))


def _lws_webhook_manifests() -> str:
    """LWS's config/webhook manifests with the kustomize objectSelector patches applied and the service
    clientConfig replaced by a URL on 127.0.0.1 signed by our CA (the envtest pattern)."""
    import base64

    ca = base64.b64encode((PKI / "ca.crt").read_bytes()).decode()
    docs = [d for d in yaml.safe_load_all((STATE / "lws-config/webhook/manifests.yaml").read_text()) if d]
    selector = {"matchExpressions": [{"key": "leaderworkerset.sigs.k8s.io/name", "operator": "Exists"}]}
    for d in docs:
        d["metadata"]["name"] = "lws-" + d["metadata"]["name"]
        for wh in d["webhooks"]:
            path = wh["clientConfig"]["service"]["path"]
            wh["clientConfig"] = {"url": f"https://127.0.0.1:{PORTS['lws-webhook']}{path}", "caBundle": ca}
            if path.endswith("--v1-pod"):  # upstream patches: only LWS pods go through the pod webhooks
                wh["objectSelector"] = selector
    return yaml.safe_dump_all(docs)


def start_lws() -> None:
    crds = sorted((STATE / "lws-config/crd").glob("*.yaml"))
    for c in crds:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(c))
    cfg = STATE / "lws-config.yaml"
    cfg.write_text(yaml.safe_dump({
        "apiVersion": "config.lws.x-k8s.io/v1alpha1", "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"host": "127.0.0.1", "port": PORTS["lws-webhook"], "certDir": str(PKI / "lws-certs")},
        "metrics": {"bindAddress": "0"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{PORTS['lws-health']}"},
        "clientConnection": {"qps": 500, "burst": 500},
    }))
    _start("lws-controller", [f"--kubeconfig={KUBECONFIG}", f"--config={cfg}", "--zap-log-level=info"])
    _wait("LWS webhook server", lambda: _port_open(PORTS["lws-webhook"]), 60, "lws-controller")
    _wait("LWS readyz", lambda: _http_ok(f"http://127.0.0.1:{PORTS['lws-health']}/readyz"), 60, "lws-controller")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=_lws_webhook_manifests())


# ---------------------------------------------------------------------------------------------------------- nodes
@dataclass(frozen=True)
class PoolKind:
    name: str
    resource: str | None
    devices: int
    labels: dict[str, str]
    device_memory_gb: int
    cpu: str
    memory: str
    extra: dict[str, str]


POOLS = {
    "h200": PoolKind("h200", "nvidia.com/gpu", 8, {
        "nvidia.com/gpu.product": "NVIDIA-H200", "nvidia.com/gpu.count": "8", "nvidia.com/gpu.memory": "144384",
        "node.kubernetes.io/instance-type": "gpu-h200-8x"}, 141, "224", "2Ti", {"rdma/ib": "8"}),
    "b200": PoolKind("b200", "nvidia.com/gpu", 8, {
        "nvidia.com/gpu.product": "NVIDIA-B200", "nvidia.com/gpu.count": "8", "nvidia.com/gpu.memory": "184320",
        "node.kubernetes.io/instance-type": "gpu-b200-8x"}, 180, "224", "2Ti", {"rdma/ib": "8"}),
    "ascend": PoolKind("ascend", "huawei.com/Ascend910", 16, {
        "accelerator": "huawei-Ascend910", "node.kubernetes.io/instance-type": "atlas-800i-a3"}, 64, "320", "1536Gi",
        {}),
    "cpu": PoolKind("cpu", None, 0, {"node.kubernetes.io/instance-type": "cpu-32"}, 0, "32", "128Gi", {}),
}
NODES_PER_DOMAIN = 2  # two nodes per rack / NVLink domain, so exclusive-topology placement has something to do


def pod_cidr(index: int) -> str:
    """Per-node /24 inside 127.0.0.0/8: node i -> 127.(1 + i // 256).(i % 256).0/24."""
    return f"127.{1 + index // 256}.{index % 256}.0/24"


def make_node(kind: PoolKind, i: int, global_index: int) -> dict:
    name = f"{kind.name}-{i:03d}" if i < 1000 else f"{kind.name}-{i}"
    domain = f"{kind.name}-domain-{i // NODES_PER_DOMAIN}"
    labels = {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "moe-operator.io/pool": kind.name, **kind.labels}
    annotations = {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}
    taints = []
    if kind.resource:
        labels[TOPOLOGY_KEY] = domain
        labels[RACK_KEY] = domain
        labels["moe-operator.io/device-memory-gb"] = str(kind.device_memory_gb)
        annotations["moe-operator.io/device-memory-gb"] = str(kind.device_memory_gb)
        taints.append(KWOK_TAINT)
    cap = {"cpu": kind.cpu, "memory": kind.memory, "pods": "110", "ephemeral-storage": "4Ti", **kind.extra}
    if kind.resource:
        cap[kind.resource] = str(kind.devices)
    cidr = pod_cidr(global_index)
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {"providerID": f"kwok://{name}", "taints": taints, "podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"capacity": cap, "allocatable": cap}}


# Each pool owns a fixed block of podCIDR indexes so a node keeps its CIDR however the pool sizes change.
CIDR_BLOCK = {"h200": 0, "b200": 16_000, "ascend": 32_000, "cpu": 48_000}
MAX_NODES_PER_POOL = 16_000


def create_nodes(counts: dict[str, int]) -> int:
    nodes = []
    for kind_name, base in CIDR_BLOCK.items():
        if counts.get(kind_name, 0) > MAX_NODES_PER_POOL:
            raise SystemExit(f"at most {MAX_NODES_PER_POOL} {kind_name} nodes (pod CIDRs live in 127.0.0.0/8)")
        for i in range(counts.get(kind_name, 0)):
            nodes.append(make_node(POOLS[kind_name], i, base + i))

    def create(node: dict) -> int:
        code, body = api("POST", "/api/v1/nodes", node)
        if code not in (201, 409):
            raise RuntimeError(f"creating node {node['metadata']['name']}: {code} {body}")
        return code

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as ex:
        created = sum(1 for c in ex.map(create, nodes) if c == 201)
    (STATE / "nodes.json").write_text(json.dumps(counts))
    return created


def nodes_ready(expected: int) -> bool:
    code, body = api("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")
    if code != 200:
        return False
    ready = sum(1 for n in body.get("items", []) for c in n.get("status", {}).get("conditions", [])
                if c["type"] == "Ready" and c["status"] == "True")
    return ready >= expected


# -------------------------------------------------------------------------------------------------------- commands
def is_up() -> bool:
    return all(_alive(c) for c in COMPONENTS) and apiserver_ready()


def up(counts: dict[str, int]) -> None:
    missing = [b for b in COMPONENTS + ["kubectl"] if not (BIN / b).exists()]
    if missing:
        raise SystemExit(f"missing binaries {missing} in {BIN}: run hack/build-rig first")
    if is_up():
        log(f"already up (kubeconfig {KUBECONFIG})")
        return
    if any(_alive(c) for c in COMPONENTS):
        log("partially up: restarting the missing components")
    t0 = time.monotonic()
    STATE.mkdir(parents=True, exist_ok=True)
    _write_pki()
    _write_kubeconfig()
    start_etcd()
    start_apiserver()
    start_controller_manager()
    start_scheduler()
    start_kwok()
    start_lws()
    n = sum(counts.values())
    log(f"creating {n} simulated nodes {counts}")
    create_nodes(counts)
    _wait(f"{n} kwok nodes Ready", lambda: nodes_ready(n), 120, "kwok")
    _wait("default ServiceAccount", lambda: api("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
          60, "kube-controller-manager")
    (STATE / "bin-path").write_text(str(BIN))
    log(f"up in {time.monotonic() - t0:.1f}s; export KUBECONFIG={KUBECONFIG} PATH={BIN}:$PATH")


def _stop_helper(name: str) -> None:
    """Processes `make demo` started beside the rig (the operator, the simulator pod runner)."""
    pf = _pidfile(name)
    try:
        pid = int(pf.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (ValueError, OSError):
        pf.unlink(missing_ok=True)
        return
    if "moe" in cmdline:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        log(f"stopped {name} (pid {pid})")
    pf.unlink(missing_ok=True)


def down() -> None:
    for helper in ("pod-runner", "operator"):
        _stop_helper(helper)
    for name in reversed(COMPONENTS):
        pid = _alive(name)
        if pid:
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not _alive(name):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
            log(f"stopped {name} (pid {pid})")
        _pidfile(name).unlink(missing_ok=True)
    for p in [STATE / "etcd-data", RUN, PKI, KUBECONFIG, STATE / "nodes.json"]:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def status() -> int:
    ok = True
    for name in COMPONENTS:
        pid = _alive(name)
        ok &= bool(pid)
        print(f"{name:26s} {'running pid ' + str(pid) if pid else 'not running'}")
    ready = apiserver_ready() if (PKI / "done").exists() else False
    print(f"{'apiserver /readyz':26s} {'ok' if ready else 'not ready'}")
    if ready:
        code, body = api("GET", "/version")
        print(f"{'server version':26s} {body.get('gitVersion')}")
        code, body = api("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")
        pools: dict[str, int] = {}
        for n in body.get("items", []):
            p = n["metadata"]["labels"].get("moe-operator.io/pool", "?")
            pools[p] = pools.get(p, 0) + 1
        print(f"{'kwok nodes':26s} {pools}")
        print(f"{'kubeconfig':26s} {KUBECONFIG}")
    return 0 if ok and ready else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hack/testcluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["up", "down", "status", "nodes"])
    for k, default in [("h200", 8), ("b200", 8), ("ascend", 4), ("cpu", 3)]:
        env = f"MOE_RIG_{k.upper()}_NODES"
        p.add_argument(f"--{k}", type=int, default=int(os.environ.get(env, default)),
                       help=f"number of {k} nodes (env {env}, default {default})")
    a = p.parse_args(argv)
    counts = {"h200": a.h200, "b200": a.b200, "ascend": a.ascend, "cpu": a.cpu}
    if a.command == "up":
        up(counts)
    elif a.command == "down":
        down()
    elif a.command == "status":
        return status()
    elif a.command == "nodes":  # add nodes to a running cluster (benchmarks: thousands of nodes)
        if not is_up():
            raise SystemExit("cluster is not up")
        t0 = time.monotonic()
        create_nodes(counts)
        n = sum(counts.values())
        _wait(f"{n} nodes Ready", lambda: nodes_ready(n), 600)
        log(f"{n} nodes present and Ready in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
