"""The generated CRDs: structural, bounded, described, CEL rules well-formed, committed files up to date."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from moe_operator.api import crd_manifests
from moe_operator.api.base import ApiModel
from moe_operator.api.crd import CRDS, check_crds, crd_manifest, openapi_schema, rendered, write_crds
from moe_operator.api.openapi import apply_defaults, validate
from moe_operator.api.schema import SchemaError, model_schema

ROOT = Path(__file__).resolve().parents[2]

# keys a CRD's JSONSchemaProps can carry
ALLOWED_KEYS = {
    "description", "type", "format", "enum", "default", "nullable", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "pattern", "minItems", "maxItems", "minProperties",
    "maxProperties", "required", "properties", "additionalProperties", "items", "anyOf",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string", "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type", "x-kubernetes-validations",
}  # fmt: skip


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")


def structural_problems(schema: dict[str, Any]) -> list[str]:
    """Kubernetes' structural-schema rules, plus what CRDs reject outright."""
    problems = []
    for path, node in walk(schema):
        where = path or "<root>"
        unknown = set(node) - ALLOWED_KEYS
        if unknown:
            problems.append(f"{where}: keys not allowed in a CRD schema: {sorted(unknown)}")
        ios = node.get("x-kubernetes-int-or-string")
        puf = node.get("x-kubernetes-preserve-unknown-fields")
        if not node.get("type") and not ios and not puf:
            problems.append(f"{where}: no type")
        if "anyOf" in node:
            if not ios or node["anyOf"] != [{"type": "integer"}, {"type": "string"}]:
                problems.append(f"{where}: anyOf allowed only as the int-or-string pattern")
        if "additionalProperties" in node:
            if "properties" in node:
                problems.append(f"{where}: properties and additionalProperties together")
            if not isinstance(node["additionalProperties"], dict):
                problems.append(f"{where}: additionalProperties must be a schema, not a boolean")
        if node.get("type") == "object" and "items" in node:
            problems.append(f"{where}: object with items")
        if node.get("type") == "array" and not isinstance(node.get("items"), dict):
            problems.append(f"{where}: array without items schema")
        for flag in ("exclusiveMinimum", "exclusiveMaximum"):
            if flag in node and not isinstance(node[flag], bool):
                problems.append(f"{where}: {flag} must be a boolean (OpenAPI 3.0)")
        if node.get("nullable") and "default" in node and node["default"] is None:
            problems.append(f"{where}: null default")
        for key in node.get("required", []):
            if key not in node.get("properties", {}):
                problems.append(f"{where}: required {key!r} is not a property")
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node.get("x-kubernetes-list-map-keys", []):
                if key not in item.get("required", []) and "default" not in item["properties"].get(key, {}):
                    problems.append(f"{where}: list-map key {key!r} must be required or defaulted")
        if "x-kubernetes-validations" in node and not node.get("type"):
            problems.append(f"{where}: CEL rules on an untyped node")
    return problems


def schemas() -> list[tuple[str, dict[str, Any]]]:
    return [(info.kind, openapi_schema(info)) for info in CRDS]


@pytest.mark.parametrize(("kind", "schema"), schemas(), ids=[k for k, _ in schemas()])
def test_schema_is_structural(kind: str, schema: dict[str, Any]) -> None:
    assert structural_problems(schema) == []
    assert "$ref" not in yaml.safe_dump(schema)
    assert "$defs" not in yaml.safe_dump(schema)


@pytest.mark.parametrize(("kind", "schema"), schemas(), ids=[k for k, _ in schemas()])
def test_every_field_described_and_bounded(kind: str, schema: dict[str, Any]) -> None:
    missing, unbounded = [], []
    for top in ("spec", "status"):
        for path, node in walk(schema["properties"][top], f".{top}"):
            if not path.endswith("[]") and not path.endswith(".*") and not node.get("description"):
                missing.append(path)
            if node.get("x-kubernetes-preserve-unknown-fields") and node.get("type") == "object":
                if "maxProperties" not in node:
                    unbounded.append(f"{path} (maxProperties)")
                continue
            if (node.get("type") == "string" or node.get("x-kubernetes-int-or-string")) and not (
                "maxLength" in node or "enum" in node
            ):
                unbounded.append(f"{path} (maxLength)")
            if node.get("type") == "array" and "maxItems" not in node:
                unbounded.append(f"{path} (maxItems)")
            if node.get("type") == "object" and "additionalProperties" in node and "maxProperties" not in node:
                unbounded.append(f"{path} (maxProperties)")
            if node.get("type") in ("integer", "number") and "maximum" not in node and "minimum" not in node:
                unbounded.append(f"{path} (minimum/maximum)")
    assert missing == [], "fields without description (kubectl explain): " + ", ".join(missing)
    assert unbounded == [], "unbounded fields (CEL cost estimation): " + ", ".join(unbounded)


@pytest.mark.parametrize(("kind", "schema"), schemas(), ids=[k for k, _ in schemas()])
def test_every_fractional_minimum_has_a_cel_twin(kind: str, schema: dict[str, Any]) -> None:
    """The apiserver compares an integer value with a number field's `minimum` truncated to an int (0 passes
    `minimum: 0.001`; found on the rig, tests/cluster/test_crd_validation.py): every fractional minimum needs a CEL
    rule on its object, where numbers compare as doubles."""
    missing = []

    def visit(node: dict[str, Any], where: str) -> None:
        rules = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
        for name, child in (node.get("properties") or {}).items():
            low = child.get("minimum")
            if child.get("type") == "number" and low is not None and float(low) != int(float(low)) and not any(
                    f"self.{name} >= {low}" in r for r in rules):
                missing.append(f"{where}.{name} (minimum {low})")
            visit(child, f"{where}.{name}")
        if isinstance(node.get("items"), dict):
            visit(node["items"], f"{where}[]")
        if isinstance(node.get("additionalProperties"), dict):
            visit(node["additionalProperties"], f"{where}.*")

    visit(schema, "")
    assert missing == [], "fractional minimums without a CEL twin: " + ", ".join(missing)


@pytest.mark.parametrize(("kind", "schema"), schemas(), ids=[k for k, _ in schemas()])
def test_defaults_validate_against_their_schema(kind: str, schema: dict[str, Any]) -> None:
    seen = 0
    for path, node in walk(schema):
        if "default" in node:
            seen += 1
            value = apply_defaults(node["default"], node)
            assert validate(value, node, path) == [], path
            assert node["default"] is not None, path
    assert seen > 0 or kind == "AcceleratorPool"


IDENT = re.compile(r"\bself((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
CEL_FUNCS = {"size", "startsWith", "endsWith", "contains", "matches", "all", "exists", "format", "split"}


def _resolve_path(node: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    for part in dotted.strip(".").split("."):
        if part in CEL_FUNCS:
            return node
        props = node.get("properties", {})
        if part not in props:
            return None
        node = props[part]
    return node


@pytest.mark.parametrize(("kind", "schema"), schemas(), ids=[k for k, _ in schemas()])
def test_cel_rules_are_well_formed(kind: str, schema: dict[str, Any]) -> None:
    count = 0
    for path, node in walk(schema):
        for rule in node.get("x-kubernetes-validations", []):
            count += 1
            where = f"{path or '<root>'}: {rule['rule']}"
            assert set(rule) <= {"rule", "message", "messageExpression", "fieldPath", "reason"}, where
            assert rule.get("message"), f"{where}: no message"
            # the message names a field (camelCase identifier of this node or its children)
            names = set(re.findall(r"[A-Za-z][A-Za-z0-9]*", rule["message"]))
            fields = {p.rsplit(".", 1)[-1].rstrip("[]") for p, _ in walk(node, "x")} | set(node.get("properties", {}))
            assert names & (fields | {"spec", "model", "weights", "sessions", "autoscaling", "accelerator"}), where
            # every self.a.b reference exists in the schema (typos would fail only at apply time)
            if node.get("type") == "object" and "properties" in node:
                for ref in IDENT.findall(rule["rule"]):
                    assert _resolve_path(node, ref) is not None, f"{where}: self{ref} is not a field"
            if "fieldPath" in rule:
                assert _resolve_path(node, rule["fieldPath"]) is not None, f"{where}: bad fieldPath"
            assert rule.get("reason", "FieldValueInvalid") in {
                "FieldValueInvalid",
                "FieldValueRequired",
                "FieldValueForbidden",
                "FieldValueDuplicate",
            }
            # kube-apiserver 1.36 rejects `'...' + string(int)` in messageExpression (unbounded estimated cost);
            # '...%d...'.format([...]) is accepted
            assert "string(" not in rule.get("messageExpression", ""), f"{where}: use .format() in messageExpression"
            assert rule["rule"].count("(") == rule["rule"].count(")"), where
            # has() on optional fields: a bare self.x.y on a non-required child must be guarded
            for ref in IDENT.findall(rule["rule"]):
                first = ref.strip(".").split(".")[0]
                if first in node.get("properties", {}) and first not in node.get("required", []):
                    sub = node["properties"][first]
                    guarded = f"has(self.{first})" in rule["rule"] or "default" in sub
                    assert guarded, f"{where}: self.{first} is optional, guard it with has()"
    assert count >= 3


def test_crd_metadata() -> None:
    by_kind = {m["spec"]["names"]["kind"]: m for m in crd_manifests()}
    moed, pool = by_kind["MoEDeployment"], by_kind["AcceleratorPool"]
    assert moed["metadata"]["name"] == "moedeployments.moe-operator.io"
    assert moed["spec"]["scope"] == "Namespaced" and pool["spec"]["scope"] == "Cluster"
    assert moed["spec"]["names"]["shortNames"] == ["moed"]
    assert pool["spec"]["names"]["shortNames"] == ["accpool"]
    for m in (moed, pool):
        assert "all" not in m["spec"]["names"]["categories"]
        assert "moe-operator" in m["spec"]["names"]["categories"]
        (version,) = m["spec"]["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"]["status"] == {}
    scale = moed["spec"]["versions"][0]["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "scale" not in pool["spec"]["versions"][0]["subresources"]


@pytest.mark.parametrize("info", CRDS, ids=[i.kind for i in CRDS])
def test_printer_columns_and_paths_exist(info: Any) -> None:
    manifest = crd_manifest(info)
    version = manifest["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    paths = [c["jsonPath"] for c in version["additionalPrinterColumns"]]
    paths += [f["jsonPath"] for f in version.get("selectableFields", [])]
    if info.scale:
        paths += list(version["subresources"]["scale"].values())
    type_of = {"string": "string", "integer": "integer", "number": "number"}
    for col in version["additionalPrinterColumns"]:
        if col["jsonPath"].startswith(".metadata"):
            continue
        plain = col["jsonPath"].split("[?")[0]
        node = _resolve_path(schema, plain)
        assert node is not None, col
        if "[?" not in col["jsonPath"]:
            assert type_of.get(node.get("type", "")) == col["type"], col
    for p in paths:
        if not p.startswith(".metadata"):
            assert _resolve_path(schema, p.split("[?")[0]) is not None, p
    if info.kind == "MoEDeployment":
        names = [c["name"] for c in version["additionalPrinterColumns"]]
        assert names == ["Model", "Precision", "Pool", "Groups", "Prefill", "Updated", "Sessions", "KV%", "Ready",
                         "Age"]
        assert '.status.conditions[?(@.type=="Ready")].status' in paths


def test_committed_crds_match_generator() -> None:
    problems = check_crds(ROOT / "crds")
    assert problems == [], "run `moe-operator crds`:\n" + "\n".join(problems)
    for name, text in rendered().items():
        assert yaml.safe_load(text)["metadata"]["name"] + ".yaml" == name


def test_cli_write_check_and_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from moe_operator.api import cli

    def run(*argv: str) -> int:
        parser = argparse.ArgumentParser()
        cli.add_arguments(parser)
        return cli.run(parser.parse_args(list(argv)))

    out, chart = tmp_path / "crds", tmp_path / "chart"
    assert run("--out", str(out), "--check") == 1  # nothing written yet
    assert run("--out", str(out), "--chart", str(chart)) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(rendered())
    assert sorted(p.name for p in (chart / "crds").iterdir()) == sorted(rendered())
    assert run("--out", str(out), "--chart", str(chart), "--check") == 0
    target = out / "moedeployments.moe-operator.io.yaml"
    target.write_text(target.read_text().replace("maxLength: 45", "maxLength: 46"))
    (chart / "crds" / "old.moe-operator.io.yaml").write_text("{}\n")
    capsys.readouterr()
    assert run("--out", str(out), "--chart", str(chart), "--check") == 1
    err = capsys.readouterr().err
    assert "moedeployments.moe-operator.io.yaml: differs" in err and "old.moe-operator.io.yaml: stale" in err
    write_crds(chart / "crds")
    assert not (chart / "crds" / "old.moe-operator.io.yaml").exists()


def test_generator_handles_pydantic_shapes() -> None:
    class Inner(ApiModel):
        """Inner doc."""

        x: int = Field(default=3, ge=0, le=9, description="x.")

    class Outer(ApiModel):
        """Outer doc."""

        inner: Inner | None = Field(default=None, description="field doc wins")
        mode: str = Field(default="a", max_length=3, description="m.")
        ratio: float = Field(default=0.5, gt=0, lt=1, description="r.")
        blob: dict[str, Any] | None = Field(default=None, description="b.", json_schema_extra={"maxProperties": 9})

    s = model_schema(Outer)
    assert s["properties"]["inner"]["description"] == "field doc wins"
    assert s["properties"]["inner"]["type"] == "object" and "default" not in s["properties"]["inner"]
    assert s["properties"]["inner"]["properties"]["x"] == {
        "description": "x.",
        "type": "integer",
        "default": 3,
        "maximum": 9,
        "minimum": 0,
    }
    assert s["properties"]["ratio"]["exclusiveMinimum"] is True and s["properties"]["ratio"]["minimum"] == 0
    assert s["properties"]["blob"]["x-kubernetes-preserve-unknown-fields"] is True
    assert structural_problems(s) == []

    class Bad(BaseModel):
        v: int | list[int] = Field(description="not structural")

    with pytest.raises(SchemaError, match="v: union"):
        model_schema(Bad)


def test_docs_field_reference_up_to_date() -> None:
    from moe_operator.api.docs import docs_drift

    assert not docs_drift(ROOT / "docs" / "api.md"), "run `moe-operator crds --docs docs/api.md`"
