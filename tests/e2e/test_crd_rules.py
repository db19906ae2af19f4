"""Every cross-field rule of the CRD, evaluated by the real API server's CEL and by Python, agrees case by case.

The cases come from the method catalogue (each method's GPU, training, calibration and model-format rules, for
every method and every format) and one violation per remaining rule, applied to the examples/ manifests with a
server-side dry run: nothing is stored, the full validation runs.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from edgequant.api import v1alpha1 as api
from tests.harness.cluster import Cluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "edgequant.io_quantizationjobs.yaml"
RULES = {rule.field: rule for rule in api.CROSS_FIELD_RULES}


def _example(method: api.Method) -> dict[str, Any]:
    for path in sorted((REPO / "examples").glob("*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        if manifest.get("kind") == api.KIND and manifest["spec"]["method"] == method.value:
            return manifest
    raise AssertionError(f"examples/ has no QuantizationJob for {method.value}")


def _python_refuses(spec: dict[str, Any]) -> set[str]:
    """The cross-field rules Python's validation reports for ``spec``."""
    try:
        api.QuantizationJobSpec.model_validate(spec)
    except ValidationError as exc:
        text = str(exc)
        return {field for field, rule in RULES.items() if f"{field}: {rule.text}" in text}
    return set()


Mutation = Callable[[dict[str, Any]], None]


def _cases() -> Iterator[tuple[str, api.Method, Mutation, set[str]]]:
    """(case id, method, change to its example's spec, rule fields that must refuse it)."""

    def cpu(spec: dict[str, Any]) -> None:
        spec.setdefault("resources", {})["accelerator"] = "cpu"

    def no_training(spec: dict[str, Any]) -> None:
        spec.pop("training", None)

    def no_calibration(spec: dict[str, Any]) -> None:
        spec.pop("calibration", None)

    for method in api.Method:
        yield f"{method.value}-as-is", method, lambda spec: None, set()
        yield f"{method.value}-on-cpu", method, cpu, {"spec.resources.accelerator"} if method.needs_gpu else set()
        yield f"{method.value}-no-training", method, no_training, {"spec.training"} if method.needs_training else set()
        yield (
            f"{method.value}-no-calibration",
            method,
            no_calibration,
            {"spec.calibration"} if method.needs_calibration else set(),
        )
        for fmt in api.ModelFormat:

            def set_format(spec: dict[str, Any], fmt: api.ModelFormat = fmt) -> None:
                spec["model"]["format"] = fmt.value

            yield (
                f"{method.value}-format-{fmt.value}",
                method,
                set_format,
                set() if fmt in method.formats else {"spec.model.format"},
            )

    static = api.Method.ONNX_STATIC

    def folder_with_sha(spec: dict[str, Any]) -> None:
        spec["model"] = {**spec["model"], "uri": "s3://models/saved/", "sha256": "a" * 64}

    def min_over_samples(spec: dict[str, Any]) -> None:
        spec["calibration"]["minSamples"] = spec["calibration"]["samples"] + 1

    def manual_without_pins(spec: dict[str, Any]) -> None:
        spec["mixedPrecision"] = {"mode": "manual"}

    def auto_without_evaluation(spec: dict[str, Any]) -> None:
        spec.pop("evaluation")
        spec["mixedPrecision"] = {"mode": "auto"}
        spec["acceptance"].pop("maxAccuracyDrop", None)

    def agreement_without_evaluation(spec: dict[str, Any]) -> None:
        spec.pop("evaluation")
        spec["acceptance"] = {"minAgreement": 0.99}

    def sqnr_without_evaluation(spec: dict[str, Any]) -> None:
        spec.pop("evaluation")
        spec["acceptance"] = {"minSqnrDb": 20}

    def accuracy_drop_without_labels(spec: dict[str, Any]) -> None:
        spec["evaluation"]["dataset"]["labels"] = "none"
        spec["acceptance"]["maxAccuracyDrop"] = 0.02

    def neither_method_nor_target(spec: dict[str, Any]) -> None:
        spec.pop("method")
        spec.pop("target", None)

    yield "neither-method-nor-target", static, neither_method_nor_target, {"spec.method"}
    yield "savedmodel-folder-with-sha256", api.Method.TFLITE_DYNAMIC_RANGE, folder_with_sha, {"spec.model.sha256"}
    yield "min-samples-over-samples", static, min_over_samples, {"spec.calibration.minSamples"}
    yield "manual-without-pins", static, manual_without_pins, {"spec.mixedPrecision.pinnedLayers"}
    yield "auto-without-evaluation", static, auto_without_evaluation, {"spec.mixedPrecision.mode"}
    yield "agreement-without-evaluation", static, agreement_without_evaluation, {"spec.acceptance.minAgreement"}
    yield "sqnr-without-evaluation", static, sqnr_without_evaluation, {"spec.acceptance.minSqnrDb"}
    yield "accuracy-drop-without-labels", static, accuracy_drop_without_labels, {"spec.acceptance.maxAccuracyDrop"}


CASES = list(_cases())


def test_every_rule_has_a_case_that_breaks_it() -> None:
    broken = set().union(*(fields for *_, fields in CASES))
    assert broken == set(RULES)


@pytest.fixture(scope="module")
def crd(k8s_cluster: Cluster) -> None:
    name = yaml.safe_load(CRD_FILE.read_text())["metadata"]["name"]
    k8s_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    k8s_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")


def _server_refuses(objects: client.CustomObjectsApi, namespace: str, manifest: dict[str, Any]) -> set[str] | None:
    """The fields the API server's validation names for ``manifest`` (dry run), or None while the CRD is not served yet."""
    try:
        objects.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, manifest, dry_run="All")
    except ApiException as exc:
        if exc.status == 404:
            return None
        assert exc.status == 422, exc.body
        causes = json.loads(exc.body)["details"]["causes"]
        return {
            cause["field"]
            for cause in causes
            if cause.get("field") in RULES and RULES[cause["field"]].text in cause.get("message", "")
        }
    return set()


def test_server_and_python_apply_every_cross_field_rule_alike(k8s_cluster: Cluster, namespace: str, crd: None) -> None:
    objects = client.CustomObjectsApi(k8s_cluster.api_client())
    disagreements = []
    for index, (case, method, mutate, expected) in enumerate(CASES):
        manifest = copy.deepcopy(_example(method))
        manifest["metadata"] = {"name": f"case-{index}", "namespace": namespace}
        mutate(manifest["spec"])
        server = _server_refuses(objects, namespace, manifest)
        for _ in range(30):  # discovery of a new CRD can lag its Established condition briefly
            if server is not None:
                break
            time.sleep(1)
            server = _server_refuses(objects, namespace, manifest)
        python = _python_refuses(manifest["spec"])
        if not (server == python == expected):
            disagreements.append(
                f"{case}: expected {sorted(expected)}, server {sorted(server or [])}, python {sorted(python)}"
            )
    assert disagreements == [], "\n".join(disagreements)
    assert len(CASES) >= len(api.Method) * (4 + len(api.ModelFormat))
