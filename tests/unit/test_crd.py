"""The committed CRD is exactly what the models generate, and it is a structural apiextensions/v1 schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edgequant.api import crd
from edgequant.api import v1alpha1 as api

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "crds" / "edgequant.io_quantizationjobs.yaml"

# Keywords apiextensions.k8s.io/v1 JSONSchemaProps understands (a subset: what we may emit).
ALLOWED = {
    "type",
    "description",
    "properties",
    "items",
    "required",
    "enum",
    "default",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "maxProperties",
    "pattern",
    "additionalProperties",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}


def _walk(node: dict[str, Any], path: str, found: list[str]) -> None:
    for key in node:
        if key not in ALLOWED:
            found.append(f"{path}: unsupported keyword {key}")
    if "properties" in node and "additionalProperties" in node:
        found.append(f"{path}: properties and additionalProperties together")
    if (
        node.get("type") == "object"
        and "properties" not in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and path != ".metadata"
    ):
        found.append(f"{path}: object without properties must preserve unknown fields explicitly")
    if "type" not in node:
        found.append(f"{path}: missing type (structural schemas need one)")
    for name, child in node.get("properties", {}).items():
        if "description" not in child and path.count(".") >= 1:
            found.append(f"{path}.{name}: no description")
        _walk(child, f"{path}.{name}", found)
    if isinstance(node.get("items"), dict):
        _walk(node["items"], f"{path}[]", found)
    if isinstance(node.get("additionalProperties"), dict):
        _walk(node["additionalProperties"], f"{path}{{}}", found)


@pytest.mark.parametrize("kind", sorted(crd.CRDS))
def test_committed_crd_matches_generated(kind: str) -> None:
    committed = ROOT / "crds" / crd.CRDS[kind][1]
    assert committed.read_text() == crd.render_crd_yaml(kind), "run `make crd` and commit crds/"


@pytest.mark.parametrize("kind", sorted(crd.CRDS))
def test_schema_is_structural_and_documented(kind: str) -> None:
    schema = crd.CRDS[kind][0]()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    problems: list[str] = []
    _walk(schema, "", problems)
    assert problems == []


def test_cross_field_rules_are_cel_validations() -> None:
    spec = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = spec["x-kubernetes-validations"]
    assert len(rules) == len(api.CROSS_FIELD_RULES)
    assert all(r["fieldPath"].startswith(".") for r in rules)


def test_names_columns_and_subresource() -> None:
    doc = yaml.safe_load(COMMITTED.read_text())
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("QuantizationJob", "quantizationjobs", ["qj"])
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase",
        "Method",
        "Target",
        "Ratio",
        "Drop",
        "Age",
    ]
    methods = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["method"]["enum"]
    assert methods == [m.value for m in api.Method]


def _unbounded(node: dict[str, Any], path: str, found: list[str]) -> None:
    """Every string has a maxLength (or an enum), every list a maxItems, every map a maxProperties."""
    kind = node.get("type")
    if kind == "string" and "maxLength" not in node and "enum" not in node:
        found.append(f"{path}: string without maxLength")
    if kind == "array" and "maxItems" not in node:
        found.append(f"{path}: list without maxItems")
    if kind == "object" and isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node:
        found.append(f"{path}: map without maxProperties")
    for name, child in (node.get("properties") or {}).items():
        if path == "" and name in ("apiVersion", "kind", "metadata"):
            continue  # the API server checks these itself
        _unbounded(child, f"{path}.{name}", found)
    if isinstance(node.get("items"), dict):
        _unbounded(node["items"], f"{path}[]", found)
    if isinstance(node.get("additionalProperties"), dict):
        _unbounded(node["additionalProperties"], f"{path}{{}}", found)


@pytest.mark.parametrize("kind", sorted(crd.CRDS))
def test_every_string_list_and_map_is_bounded(kind: str) -> None:
    """Issue 13, item 8: the API server refuses oversized objects; fields added later are walked too.

    Free-form objects (``x-kubernetes-preserve-unknown-fields``, e.g. scheduling.affinity) are passed to the pod as
    they are and bounded there by the core/v1 schema.
    """
    schema = crd.CRDS[kind][0]()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    problems: list[str] = []
    _unbounded(schema, "", problems)
    assert problems == []


def test_shape_dimensions_and_sample_counts_have_a_maximum() -> None:
    spec = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["model"]["properties"]["input"]["properties"]["shape"]["items"]["maximum"] == api.MAX_DIMENSION
    for section, field in (
        ("calibration", "samples"),
        ("calibration", "minSamples"),
        ("evaluation", "samples"),
        ("training", "maxSamples"),
    ):
        assert "maximum" in spec[section]["properties"][field], (section, field)


def test_sweep_names_columns_and_subresource() -> None:
    doc = yaml.safe_load((ROOT / "crds" / "edgequant.io_quantizationsweeps.yaml").read_text())
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("QuantizationSweep", "quantizationsweeps", ["qs"])
    assert doc["spec"]["group"] == api.GROUP
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase",
        "Cells",
        "Finished",
        "Passed",
        "Recommended",
        "Age",
    ]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["matrix"]["properties"]["methods"]["items"]["enum"] == [m.value for m in api.Method]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
