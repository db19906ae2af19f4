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

from edgequant.api import sweep as sweep_api
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
            node["description"] = (
                f"{node.get('description', '')} Default {default} when neither the spec nor spec.target sets it.".strip()
            )
    schema["x-kubernetes-validations"] = [
        {"rule": r.cel, "message": r.text, "fieldPath": _cel_field_path(r.field)} for r in api.CROSS_FIELD_RULES
    ]
    # Conditions are a map keyed by type, as in metav1.Condition lists.
    return schema


def _cel_field_path(field: str) -> str:
    """JSONPath relative to spec, as apiextensions expects (``.calibration.minSamples``)."""
    return field.removeprefix("spec")


def _status_schema(model: type[api.ApiModel] = api.QuantizationJobStatus) -> dict[str, Any]:
    schema = _model_schema(model)
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    description: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{api.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "edgequant"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": list(api.CATEGORIES),
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "edgequant.io/v1alpha1"},
                                "kind": {"type": "string", "description": kind},
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


def build_crd() -> dict[str, Any]:
    """The QuantizationJob CustomResourceDefinition as a dict."""
    spec = _spec_schema()
    spec["description"] = api.QuantizationJob.model_fields["spec"].description
    status = _status_schema()
    status["description"] = api.QuantizationJob.model_fields["status"].description
    return _crd(
        kind=api.KIND,
        plural=api.PLURAL,
        singular=api.SINGULAR,
        short_names=list(api.SHORT_NAMES),
        description="QuantizationJob quantizes a trained model for edge devices and records the result: "
        "method, calibration and evaluation data, an acceptance budget; status holds the artifact, "
        "its sha256, size, accuracy and latency against FP32.",
        spec=spec,
        status=status,
        columns=[
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
            # A job that names only a target shows it here; the method it chose is in status.results.method.
            {"name": "Target", "type": "string", "jsonPath": ".spec.target"},
            {
                "name": "Ratio",
                "type": "number",
                "format": "float",
                "jsonPath": ".status.results.compressionRatio",
                "description": "FP32 size / quantized size",
            },
            {
                "name": "Drop",
                "type": "number",
                "format": "float",
                "jsonPath": ".status.results.accuracyDrop",
                "description": "FP32 minus quantized accuracy",
            },
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def build_sweep_crd() -> dict[str, Any]:
    """The QuantizationSweep CustomResourceDefinition as a dict."""
    spec = _model_schema(sweep_api.QuantizationSweepSpec)
    spec["description"] = sweep_api.QuantizationSweep.model_fields["spec"].description
    status = _status_schema(sweep_api.QuantizationSweepStatus)
    status["description"] = sweep_api.QuantizationSweep.model_fields["status"].description
    return _crd(
        kind=sweep_api.KIND,
        plural=sweep_api.PLURAL,
        singular=sweep_api.SINGULAR,
        short_names=list(sweep_api.SHORT_NAMES),
        description="QuantizationSweep quantizes one model over a matrix of targets, methods and calibration algorithms: "
        "one QuantizationJob per cell; status holds the candidates, their Pareto front and the recommendation per target.",
        spec=spec,
        status=status,
        columns=[
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Cells", "type": "integer", "jsonPath": ".status.cells", "description": "Cells in the matrix"},
            {
                "name": "Finished",
                "type": "integer",
                "jsonPath": ".status.finished",
                "description": "Cells in a terminal phase",
            },
            {
                "name": "Passed",
                "type": "integer",
                "jsonPath": ".status.passed",
                "description": "Cells within the acceptance budget",
            },
            {
                "name": "Recommended",
                "type": "string",
                "jsonPath": ".status.recommendations[0].candidate",
                "description": "Recommended cell of the first target",
            },
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


#: kind -> (builder, the file under crds/ and charts/edgequant/crds/).
CRDS = {
    api.KIND: (build_crd, f"{api.GROUP}_{api.PLURAL}.yaml"),
    sweep_api.KIND: (build_sweep_crd, f"{api.GROUP}_{sweep_api.PLURAL}.yaml"),
}


def render_crd_yaml(kind: str = api.KIND) -> str:
    source = "v1alpha1.py" if kind == api.KIND else "sweep.py"
    flag = "" if kind == api.KIND else f" --kind {kind}"
    header = f"# Generated by `edgequant crd{flag}` from operator/edgequant/api/{source}. Do not edit.\n"
    body: str = yaml.safe_dump(CRDS[kind][0](), sort_keys=False, width=120)
    return header + body
