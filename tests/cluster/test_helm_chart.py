"""The Helm chart: lint, server-side dry run of the rendered manifests, a real install on the rig, and least
privilege proven with `kubectl auth can-i` as the operator's ServiceAccount on the RBAC-enabled apiserver."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kube import Cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/moe-operator"
NS = "moe-system"
RELEASE = "moe"
SA = f"system:serviceaccount:{NS}:{RELEASE}-moe-operator"


def helm(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(cluster.bin_dir / "helm"), "--kubeconfig", str(cluster.kubeconfig), *args],
                          capture_output=True, text=True)


def test_helm_lint(cluster: Cluster) -> None:
    r = helm(cluster, "lint", str(CHART), "--strict")
    assert r.returncode == 0, r.stdout + r.stderr


def test_rendered_chart_passes_server_side_dry_run(cluster: Cluster) -> None:
    """Both RBAC modes: cluster-wide, and namespaced (Roles in the watched namespaces)."""
    for ns in (NS, "team-a", "team-b"):
        cluster.kubectl("create", "namespace", ns, check=False)
    for values in ([], ["--set", "webhook.enabled=false", "--set", "watchNamespaces={team-a,team-b}",
                        "--set", "networkPolicy.enabled=true"]):
        r = helm(cluster, "template", RELEASE, str(CHART), "-n", NS, "--include-crds",
                 "--kube-version", "1.36.3", *values)
        assert r.returncode == 0, r.stderr
        applied = cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=r.stdout, check=False)
        assert applied.returncode == 0, applied.stderr


@pytest.fixture(scope="module")
def installed(cluster: Cluster) -> Iterator[None]:
    # failurePolicy Ignore: on the rig the in-cluster webhook Service points at a kwok pod that serves nothing;
    # the operator-under-test's own URL webhook keeps admission real for the other tests.
    r = helm(cluster, "upgrade", "--install", RELEASE, str(CHART), "-n", NS, "--create-namespace",
             "--set", "webhook.failurePolicy=Ignore", "--wait", "--timeout", "90s")
    assert r.returncode == 0, r.stdout + r.stderr
    yield
    helm(cluster, "uninstall", RELEASE, "-n", NS, "--wait")


def test_chart_installs_and_its_operator_pod_runs(cluster: Cluster, installed: None) -> None:
    dep = cluster.kubectl_json("-n", NS, "get", "deployment", f"{RELEASE}-moe-operator")
    # two replicas (every one serves the webhook, the Lease holder reconciles), rolled one at a time, kept by a PDB
    assert dep["status"].get("availableReplicas") == 2
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate",
                                       "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"] == \
        "kubernetes.io/hostname"
    pdb = cluster.kubectl_json("-n", NS, "get", "pdb", f"{RELEASE}-moe-operator")
    assert pdb["spec"]["minAvailable"] == 1
    vwc = cluster.kubectl_json("get", "validatingwebhookconfiguration", f"{RELEASE}-moe-operator")
    paths = sorted(w["clientConfig"]["service"]["path"] for w in vwc["webhooks"])
    assert paths == ["/validate-acceleratorpool", "/validate-moedeployment"]
    assert all(w["clientConfig"].get("caBundle") for w in vwc["webhooks"])
    secret_before = cluster.kubectl_json("-n", NS, "get", "secret", f"{RELEASE}-moe-operator-webhook-cert")
    r = helm(cluster, "upgrade", RELEASE, str(CHART), "-n", NS, "--reuse-values", "--wait")
    assert r.returncode == 0, r.stderr
    secret_after = cluster.kubectl_json("-n", NS, "get", "secret", f"{RELEASE}-moe-operator-webhook-cert")
    assert secret_after["data"] == secret_before["data"], "webhook certificate must survive upgrades"


ALLOWED = [
    ("watch", "moedeployments.moe-operator.io", ""),
    ("patch", "moedeployments.moe-operator.io", ""),
    ("patch", "moedeployments.moe-operator.io", "status"),
    ("list", "acceleratorpools.moe-operator.io", ""),
    ("patch", "acceleratorpools.moe-operator.io", "status"),
    ("create", "leaderworkersets.leaderworkerset.x-k8s.io", ""),
    ("patch", "leaderworkersets.leaderworkerset.x-k8s.io", ""),
    ("delete", "leaderworkersets.leaderworkerset.x-k8s.io", ""),
    ("create", "deployments.apps", ""),
    ("create", "services", ""),
    ("create", "serviceaccounts", ""),
    ("create", "roles.rbac.authorization.k8s.io", ""),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""),
    ("create", "poddisruptionbudgets.policy", ""),
    ("list", "pods", ""),
    ("patch", "pods", ""),
    ("delete", "pods", ""),  # the leader of a group whose placement deadlocked
    ("list", "nodes", ""),
    ("get", "configmaps", ""),
    ("create", "events", ""),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", ""),
]
DENIED = [
    ("get", "secrets", ""),
    ("list", "secrets", ""),
    ("deletecollection", "pods", ""),
    ("create", "pods", ""),
    ("patch", "nodes", ""),
    ("delete", "nodes", ""),
    ("create", "moedeployments.moe-operator.io", ""),
    ("delete", "moedeployments.moe-operator.io", ""),
    ("create", "clusterroles.rbac.authorization.k8s.io", ""),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
    ("create", "validatingwebhookconfigurations.admissionregistration.k8s.io", ""),
    ("list", "configmaps", ""),
    ("create", "statefulsets.apps", ""),
    ("update", "deployments.apps", ""),
]


def _watched() -> list[tuple[str, str, str]]:
    """list + watch on every kind the operator's stores watch, and patch + delete on every kind it creates: derived
    from the operator's own tables, so a kind added there without RBAC fails here."""
    from moe_operator.cache import CHILD_KINDS, STORED_KINDS
    from moe_operator.kube import RESOURCES

    def res(api_version: str, kind: str) -> str:
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        return RESOURCES[(api_version, kind)][0] + (f".{group}" if group else "")

    return ([(v, res(a, k), "") for a, k in STORED_KINDS for v in ("list", "watch")]
            + [(v, res(a, k), "") for a, k in CHILD_KINDS for v in ("patch", "delete")])


ALLOWED += _watched()


def can_i(cluster: Cluster, verb: str, resource: str, sub: str, namespace: str = "default") -> bool:
    args = ["auth", "can-i", verb, resource, "--as", SA, "-n", namespace]
    if sub:
        args += ["--subresource", sub]
    r = cluster.kubectl(*args, check=False)
    return r.stdout.strip() == "yes"


def test_operator_service_account_has_exactly_what_it_needs(cluster: Cluster, installed: None) -> None:
    missing = [a for a in ALLOWED if not can_i(cluster, *a)]
    excess = [d for d in DENIED if can_i(cluster, *d)]
    # the leader Lease: in the release namespace only
    lease = "leases.coordination.k8s.io"
    missing += [(v, lease, NS) for v in ("get", "create", "update") if not can_i(cluster, v, lease, "", NS)]
    excess += [(v, lease, "default") for v in ("get", "update") if can_i(cluster, v, lease, "")]
    assert not missing, f"the operator's ServiceAccount lacks {missing}"
    assert not excess, f"the operator's ServiceAccount may {excess}"


NS_RELEASE, TEAM = "moe-ns", "moe-team-a"
NS_SA = f"system:serviceaccount:{NS}:{NS_RELEASE}-moe-operator"


@pytest.fixture(scope="module")
def installed_namespaced(cluster: Cluster) -> Iterator[None]:
    """A second release in namespaced mode (watchNamespaces): its own ServiceAccount, ClusterRole and Roles."""
    cluster.kubectl("create", "namespace", TEAM, check=False)
    r = helm(cluster, "upgrade", "--install", NS_RELEASE, str(CHART), "-n", NS, "--create-namespace",
             "--set", f"watchNamespaces={{{TEAM}}}", "--set", "webhook.enabled=false", "--set", "replicas=1",
             "--skip-crds", "--timeout", "90s")
    assert r.returncode == 0, r.stdout + r.stderr
    yield
    helm(cluster, "uninstall", NS_RELEASE, "-n", NS, "--wait")


def test_namespaced_mode_writes_only_the_watched_namespaces(cluster: Cluster, installed_namespaced: None) -> None:
    """Issue 12 §4: with watchNamespaces the operator's writes reach only those namespaces; what stays cluster-wide
    is read-only (nodes, pods for capacity) plus our AcceleratorPools and events."""
    def sa_can(verb: str, resource: str, namespace: str, sub: str = "") -> bool:
        args = ["auth", "can-i", verb, resource, "--as", NS_SA, "-n", namespace] + (["--subresource", sub] if sub
                                                                                 else [])
        return cluster.kubectl(*args, check=False).stdout.strip() == "yes"

    writes = [("create", "leaderworkersets.leaderworkerset.x-k8s.io"), ("create", "deployments.apps"),
              ("create", "services"), ("create", "serviceaccounts"), ("create", "roles.rbac.authorization.k8s.io"),
              ("create", "rolebindings.rbac.authorization.k8s.io"), ("patch", "pods"), ("delete", "pods"),
              ("patch", "moedeployments.moe-operator.io")]
    missing = [(v, r) for v, r in writes if not sa_can(v, r, TEAM)]
    excess = [(v, r, ns) for v, r in writes for ns in ("default", "kube-system") if sa_can(v, r, ns)]
    # cluster-wide: reads the stores and capacity need, pools and their status
    for verb, res, sub in (("list", "nodes", ""), ("watch", "nodes", ""), ("list", "pods", ""),
                           ("patch", "acceleratorpools.moe-operator.io", "status")):
        if not sa_can(verb, res, "default", sub):
            missing.append((verb, res))
    for verb, res in (("watch", "pods"), ("list", "moedeployments.moe-operator.io"), ("get", "secrets"),
                      ("get", "configmaps")):
        if sa_can(verb, res, "default"):
            excess.append((verb, res, "default"))
    assert not missing, f"namespaced mode lacks {missing}"
    assert not excess, f"namespaced mode may {excess}"
