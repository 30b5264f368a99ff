"""The chart's Grafana dashboard and Prometheus alerts (issue 12 §5), without a cluster or Grafana.

Every metric a dashboard panel, a template variable or an alert reads exists: the operator's from the collectors of
`moe_operator.metrics`, SGLang's from its 0.5.23 exposition (tests/fixtures/sglang_metrics_0.5.23.txt); every label
they group or match by is one those series carry (or one the chart's scrape configs add). The dashboard JSON is
well-formed for Grafana's sidecar. With promtool (hack/setup-monitoring) the rule file passes `promtool check rules`
and its unit tests (`promtool test rules`), and so do the rules the chart renders (with helm, if the rig built it).
The queries against real data: bench/dashboard_render.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from moe_operator import metrics

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/moe-operator"
DASHBOARD = CHART / "dashboards/moe-operator.json"
RULES = CHART / "rules/moe-operator.rules.yaml"
RULES_TEST = CHART / "rules/moe-operator.rules.test.yaml"
FIXTURE = ROOT / "tests/fixtures/sglang_metrics_0.5.23.txt"
HELM = ROOT / ".testcluster/bin/helm"

ALERTS = {"MoEKVCacheExhausted", "MoEGroupsNotReady", "MoEDrainTimeout", "MoEMetricsMissing", "MoEReconcileErrors",
          "MoEOperatorNoLeader"}
# labels Prometheus adds to every scraped series (target labels; `namespace`/`pod` from the Prometheus Operator's
# ServiceMonitor/PodMonitor) and the two the chart's PodMonitor relabels from pod labels
TARGET_LABELS = {"instance", "job", "namespace", "pod"}
RELABELLED = {"moe_deployment", "group", "pd_role"}

# PromQL words that look like identifiers but are not metric names
KEYWORDS = {"sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
            "group", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
            "offset", "bool", "atan2", "inf", "nan"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"\{([^}]*)\}")


def _strip(expr: str) -> str:
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, regexes)
    s = re.sub(r"\$\{?\w+\}?", "", s)  # Grafana variables ($__rate_interval, ${datasource})
    return s


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a small lexer: enough for the queries of this chart)."""
    s = _strip(expr)
    s = MATCHERS.sub("", s)
    s = re.sub(r"\[[^\]]*\]", "", s)  # range selectors
    s = GROUPING.sub(r"\1 ", s)
    names = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)", s):
        word, rest = m.group(1), s[m.end():]
        if word in KEYWORDS or rest.lstrip().startswith("("):  # an aggregation or a function call
            continue
        names.add(word)
    return names


def label_names(expr: str) -> set[str]:
    """Label names an expression groups, joins or matches on."""
    s = _strip(expr)
    out = set()
    for _, labels in GROUPING.findall(s):
        out |= {x.strip() for x in labels.split(",") if x.strip()}
    for body in MATCHERS.findall(s):
        out |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", body))
    return out


def test_lexer() -> None:
    e = ('histogram_quantile(0.99, sum by (namespace, le) (rate(sglang:time_to_first_token_seconds_bucket'
         '{namespace=~"$namespace", moe_deployment=~"a.b"}[$__rate_interval]))) > 0.95 and on (instance) '
         '(moe_operator_leader == 1)')
    assert metric_names(e) == {"sglang:time_to_first_token_seconds_bucket", "moe_operator_leader"}
    assert label_names(e) == {"namespace", "le", "moe_deployment", "instance"}


def operator_series() -> tuple[set[str], set[str]]:
    """Sample names (counter `_total`, histogram `_bucket/_sum/_count`) and label names of the operator's
    collectors."""
    names: set[str] = set()
    labels: set[str] = {"le"}
    collectors = [c for c in vars(metrics).values() if isinstance(c, MetricWrapperBase)]
    assert len(collectors) >= 13
    for c in collectors:
        labels |= set(c._labelnames)
        for fam in c.describe():
            names |= {"counter": {fam.name + "_total"}, "gauge": {fam.name},
                      "histogram": {fam.name + s for s in ("_bucket", "_sum", "_count")}}[fam.type]
    return names, labels


def sglang_series() -> tuple[set[str], set[str]]:
    """Sample and label names of SGLang 0.5.23's exposition (histograms from their TYPE lines: the fixture has no
    observations)."""
    names: set[str] = set()
    labels: set[str] = {"le"}
    for line in FIXTURE.read_text().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= ({name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram"
                      else {name + s for s in ("", "_sum", "_count")} if kind == "summary" else {name})
        elif line and not line.startswith("#"):
            m = re.match(r"([\w:]+)(?:\{(.*)\})?\s", line)
            assert m, line
            names.add(m.group(1))
            labels |= set(re.findall(r'(\w+)="', m.group(2) or ""))
    return names, labels


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries(d: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target, annotation and query variable."""
    out = [(f"panel {p['title']!r} {t['refId']}", t["expr"]) for p in d["panels"] for t in p.get("targets", [])]
    out += [(f"annotation {a['name']!r}", a["expr"]) for a in d["annotations"]["list"] if "expr" in a]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v["query"])
            assert m, v["query"]
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def check_names(queries: list[tuple[str, str]]) -> None:
    op_names, op_labels = operator_series()
    sg_names, sg_labels = sglang_series()
    assert "sglang:time_to_first_token_seconds_bucket" in sg_names and "dp_rank" in sg_labels
    known_labels = op_labels | sg_labels | TARGET_LABELS | RELABELLED
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        for n in names:
            assert n in (op_names if n.startswith("moe_operator_") else sg_names), \
                f"{where}: {n} is neither an operator metric nor in SGLang 0.5.23's exposition"
        assert label_names(expr) <= known_labels, f"{where}: unknown labels {label_names(expr) - known_labels}"


def test_dashboard_and_rule_metrics_exist() -> None:
    check_names(dashboard_queries(dashboard()))
    check_names([(f"alert {r['alert']}", r["expr"]) for r in rules()])


def test_podmonitor_adds_the_labels_the_queries_group_by() -> None:
    text = (CHART / "templates/monitoring.yaml").read_text()
    for label, pod_label in (("moe_deployment", "moe-operator.io/deployment"),
                             ("group", "leaderworkerset.sigs.k8s.io/group-index"),
                             ("pd_role", "moe-operator.io/pd-role")):
        source = "__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9]", "_", pod_label)
        assert re.search(rf"sourceLabels: \[{source}\]\s+targetLabel: {label}\b", text), (label, source)
    assert "honorLabels: true" in text  # the operator's namespace/name labels survive the ServiceMonitor


def test_dashboard_shape() -> None:
    d = dashboard()
    assert d["schemaVersion"] >= 36 and d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ds = {"type": "prometheus", "uid": "${datasource}"}
    for name in ("namespace", "deployment"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"] == ds
        assert variables[name]["query"].startswith("label_values(")
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"] == ds, p["title"]
        assert p["targets"], f"panel {p['title']!r} has no target"
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
        for t in p["targets"]:
            assert t["datasource"] == ds and t["expr"].strip(), p["title"]
    exprs = "\n".join(e for _, e in dashboard_queries(d))
    for needed in ("moe_operator_groups_desired", "moe_operator_groups_ready", "sglang:kv_used_tokens", "dp_rank",
                   "sglang:num_queue_reqs", "sglang:num_running_reqs", "sglang:time_to_first_token_seconds_bucket",
                   "sglang:inter_token_latency_seconds_bucket", "moe_operator_scale_events_total",
                   "moe_operator_drain_timeouts_total", "moe_operator_reconcile_total",
                   "moe_operator_reconcile_errors_total", "moe_operator_reconcile_duration_seconds_bucket",
                   "moe_operator_admission_total"):
        assert needed in exprs, needed
    for q in ("0.5", "0.99"):
        assert f"histogram_quantile({q}, sum by (namespace, moe_deployment, le) (rate(sglang:time_to_first" in exprs


def test_alerts() -> None:
    rs = rules()
    assert {r["alert"] for r in rs} == ALERTS
    for r in rs:
        ann = r["annotations"]
        assert ann["summary"] and ann["description"] and r["labels"]["severity"] in {"warning", "critical"}
        if r["alert"] not in {"MoEReconcileErrors", "MoEOperatorNoLeader"}:  # those have no deployment label
            assert re.search(r"\$labels\.(name|moe_deployment)", ann["summary"] + ann["description"]), r["alert"]
    by = {r["alert"]: r for r in rs}
    assert by["MoEGroupsNotReady"]["for"] == "15m"
    assert by["MoEKVCacheExhausted"]["for"] == "5m" and "0.95" in by["MoEKVCacheExhausted"]["expr"]
    assert "[30m]" in by["MoEDrainTimeout"]["expr"]


def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        msg = ("promtool not found (hack/setup-monitoring installs Debian's prometheus package; `make test` runs "
               "it): `promtool check rules` / `promtool test rules` not run")
        if os.environ.get("CI", "").lower() == "true" or os.environ.get("MOE_REQUIRE_CLUSTER") == "1":
            pytest.fail(msg)  # CI runs hack/test, which installs it: missing there is a broken set-up
        pytest.skip(msg)
    return found


def run(cmd: list[str], cwd: Path | None = None) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{' '.join(cmd)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def test_promtool_check_and_unit_test_rules() -> None:
    tool = promtool()
    assert f"SUCCESS: {len(ALERTS)} rules found" in run([tool, "check", "rules", str(RULES)])
    out = run([tool, "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent)
    assert "SUCCESS" in out


def test_rendered_chart(tmp_path: Path) -> None:
    """What the chart renders: the dashboard ConfigMap for the sidecar and the PrometheusRule (the rule file, with
    MoEGroupsNotReady's `for` from the values), checked by promtool when present."""
    if not HELM.exists():
        pytest.skip(f"{HELM} missing (hack/build-rig builds it): chart rendering not checked")
    out = run([str(HELM), "template", "x", str(CHART), "--kube-version", "1.36.3", "--set", "dashboards.enabled=true",
               "--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.prometheusRule.notReadyMinutes=20",
               "--set", "dashboards.labelValue=yes"])
    docs = [d for d in yaml.safe_load_all(out) if d]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "yes"
    assert json.loads(cm["data"]["moe-operator.json"]) == dashboard()
    pr = next(d for d in docs if d["kind"] == "PrometheusRule")
    assert pr["apiVersion"] == "monitoring.coreos.com/v1"
    rendered = [r for g in pr["spec"]["groups"] for r in g["rules"]]
    expected = rules()
    for r in expected:
        if r["alert"] == "MoEGroupsNotReady":
            r["for"] = "20m"
    assert rendered == expected
    off = run([str(HELM), "template", "x", str(CHART), "--kube-version", "1.36.3"])
    assert "PrometheusRule" not in off and "grafana_dashboard" not in off  # both off by default
    if shutil.which("promtool") or Path("/usr/bin/promtool").exists():
        f = tmp_path / "rendered.rules.yaml"
        f.write_text(yaml.safe_dump({"groups": pr["spec"]["groups"]}))
        run([promtool(), "check", "rules", str(f)])
