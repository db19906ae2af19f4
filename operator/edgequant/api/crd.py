"""Generate the QuantizationJob CRD (apiextensions.k8s.io/v1) from the pydantic models.

Pydantic emits JSON Schema 2020-12; a structural OpenAPI v3 schema differs in
ways that a real API server enforces, so the conversion is explicit: $refs are
inlined, ``Optional`` unions collapse to their non-null branch, numeric
exclusive bounds become booleans, titles and ``additionalProperties: false``
(illegal beside ``properties``) are dropped, and free-form objects say
``x-kubernetes-preserve-unknown-fields`` on purpose.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from edgequant.api import v1alpha1 as api
from edgequant.api.targets import FILLABLE_FIELDS

_DROP_KEYS = {"title", "examples", "discriminator", "$defs"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
            return _resolve(merged, defs)
        return {k: _resolve(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one resolved JSON-Schema node into a structural OpenAPI v3 node."""
    node = dict(node)
    for key in _DROP_KEYS:
        node.pop(key, None)

    for union_key in ("anyOf", "oneOf"):
        if union_key in node:
            branches = [b for b in node.pop(union_key) if b.get("type") != "null"]
            if len(branches) != 1:
                raise ValueError(f"cannot express a union of {len(branches)} types structurally: {branches}")
            inner = _structural(branches[0])
            for key, value in node.items():
                if key != "default" or value is not None:
                    inner.setdefault(key, value)
            node = inner
    if node.get("default", 0) is None:
        node.pop("default")

    if "allOf" in node:
        (only,) = node.pop("allOf")
        node = {**_structural(only), **node}

    if "const" in node:
        node["enum"] = [node.pop("const")]

    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[plain] = node.pop(bound)
            node[bound] = True

    if node.get("type") == "object":
        props = node.get("properties")
        extra = node.get("additionalProperties")
        if props is not None:
            node["properties"] = {k: _structural(v) for k, v in props.items()}
            node.pop("additionalProperties", None)
        elif isinstance(extra, dict) and extra:
            node["additionalProperties"] = _structural(extra)
        else:
            # dict[str, Any] and friends: a free-form object, preserved on purpose.
            node.pop("additionalProperties", None)
            node["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("type") == "array" and "items" in node:
        node["items"] = _structural(node["items"])
    return node


def _model_schema(model: type[api.ApiModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    return _structural(_resolve(raw, defs))


def _spec_schema() -> dict[str, Any]:
    schema = _model_schema(api.QuantizationJobSpec)
    for path in FILLABLE_FIELDS:
        node = schema
        for key in path.split(".")[1:]:
            node = node["properties"][key]
        if "default" in node:
            default = node.pop("default")
            node["description"] = f"{node.get('description', '')} Default {default} when neither the spec nor spec.target sets it.".strip()
    schema["x-kubernetes-validations"] = [
        {"rule": r.cel, "message": r.text, "fieldPath": _cel_field_path(r.field)} for r in api.CROSS_FIELD_RULES
    ]
    # Conditions are a map keyed by type, as in metav1.Condition lists.
    return schema


def _cel_field_path(field: str) -> str:
    """JSONPath relative to spec, as apiextensions expects (``.calibration.minSamples``)."""
    return field.removeprefix("spec")


def _status_schema() -> dict[str, Any]:
    schema = _model_schema(api.QuantizationJobStatus)
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def build_crd() -> dict[str, Any]:
    """The complete CustomResourceDefinition as a dict."""
    spec_desc = api.QuantizationJob.model_fields["spec"].description
    status_desc = api.QuantizationJob.model_fields["status"].description
    spec = _spec_schema()
    spec["description"] = spec_desc
    status = _status_schema()
    status["description"] = status_desc
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "edgequant"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": list(api.CATEGORIES),
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
                        {"name": "Ratio", "type": "number", "format": "float", "jsonPath": ".status.results.compressionRatio", "description": "FP32 size / quantized size"},
                        {"name": "Drop", "type": "number", "format": "float", "jsonPath": ".status.results.accuracyDrop", "description": "FP32 minus quantized accuracy"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "QuantizationJob quantizes a trained model for edge devices and records the result: "
                            "method, calibration and evaluation data, an acceptance budget; status holds the artifact, "
                            "its sha256, size, accuracy and latency against FP32.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "edgequant.io/v1alpha1"},
                                "kind": {"type": "string", "description": "QuantizationJob"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    header = "# Generated by `edgequant crd` from operator/edgequant/api/v1alpha1.py. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)
