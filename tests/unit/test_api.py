"""The API models: examples are valid, each invalid manifest fails naming its field, rules agree with CEL."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgequant.api import v1alpha1 as api
from edgequant.api import validation

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
INVALID = Path(__file__).parent / "manifests" / "invalid"

#: invalid manifest -> (field path that must be named, words the message must contain)
EXPECTED = {
    "unknown-method": ("spec.method", "tflite-int8"),
    "int8-without-calibration": ("spec.calibration", "calibration.dataset"),
    "qat-without-training": ("spec.training", "training.dataset"),
    "tensorrt-on-cpu": ("spec.resources.accelerator", "GPU"),
    "min-samples-above-samples": ("spec.calibration.minSamples", "must not exceed"),
    "negative-samples": ("spec.calibration.samples", "greater than or equal to 1"),
    "manual-without-pinned": ("spec.mixedPrecision.pinnedLayers", "pinnedLayers"),
    "wrong-format": ("spec.model.format", "onnx"),
    "secret-in-spec": ("spec.storage.accessKey", "not permitted"),
    "credentials-in-url": ("spec.storage.endpoint", "credentialsSecret"),
    "missing-output": ("spec.output", "required"),
    "gray-with-three-channels": ("spec.model.input", "GRAY"),
    "bad-uri-scheme": ("spec.model.uri", "s3://"),
    "accuracy-budget-without-labels": ("spec.acceptance.maxAccuracyDrop", "acceptance.minAgreement"),
    "agreement-without-evaluation": ("spec.acceptance.minAgreement", "evaluation.dataset"),
    "mean-std-in-255-units": ("spec.model.input.scaling", "mean [0.485, 0.456, 0.406]"),
    "sha256-on-a-folder": ("spec.model.sha256", "SavedModel"),
    "sha256-not-hex": ("spec.model.sha256", "[0-9a-fA-F]{64}"),
}


def test_there_is_one_example_per_method() -> None:
    specs = [yaml.safe_load(p.read_text())["spec"] for p in EXAMPLES]
    methods = {s["method"] for s in specs if "method" in s}  # the others name a target that chooses it
    assert methods == {m.value for m in api.Method}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    job, problems = validation.validate_document(yaml.safe_load(path.read_text()))
    assert problems == []
    assert job is not None and job.kind == "QuantizationJob"


def test_every_invalid_manifest_has_an_expectation() -> None:
    assert {p.stem for p in INVALID.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_manifest_names_field_and_fix(name: str) -> None:
    field, words = EXPECTED[name]
    job, problems = validation.validate_document(yaml.safe_load((INVALID / f"{name}.yaml").read_text()))
    assert job is None
    assert field in [p.field for p in problems], problems
    text = " ".join(f"{p.message} {p.fix}" for p in problems if p.field == field)
    assert words in text
    assert all(p.fix for p in problems)


def test_wire_names_are_camel_case_and_defaults_apply() -> None:
    doc = yaml.safe_load((ROOT / "examples" / "03-tflite-int8.yaml").read_text())
    job = api.QuantizationJob.model_validate(doc)
    assert job.spec.calibration is not None
    assert job.spec.calibration.min_samples == 100
    assert job.spec.mixed_precision.sensitivity_threshold == 0.005
    wire = job.spec.to_wire()
    assert "minSamples" in wire["calibration"] and "mixedPrecision" in wire


@pytest.mark.parametrize(
    ("uri", "fmt"),
    [
        ("s3://b/m.keras", api.ModelFormat.KERAS),
        ("s3://b/m.h5", api.ModelFormat.H5),
        ("s3://b/saved/", api.ModelFormat.SAVED_MODEL),
        ("file:///x/m.onnx", api.ModelFormat.ONNX),
        ("s3://b/m.pt", api.ModelFormat.TORCHSCRIPT),
        ("s3://b/m.pt2", api.ModelFormat.TORCH_EXPORT),
        ("s3://b/m.bin", None),
    ],
)
def test_format_inferred_from_uri(uri: str, fmt: api.ModelFormat | None) -> None:
    assert api.infer_model_format(uri) == fmt


def test_every_method_has_a_family_and_formats() -> None:
    for method in api.Method:
        assert method.family in api.MethodFamily
        assert method.formats


def test_oversized_fields_are_refused_naming_the_field() -> None:
    """Issue 13, item 8: the same bounds the CRD carries hold for `edgequant validate` and the worker."""
    doc = yaml.safe_load(EXAMPLES[0].read_text())
    doc["spec"]["model"]["uri"] = "s3://a/" + "k" * api.MAX_URI
    doc["spec"]["model"]["input"]["shape"][0] = api.MAX_DIMENSION + 1
    doc["spec"]["mixedPrecision"] = {"pinnedLayers": ["conv"] * (api.MAX_LAYERS + 1)}
    job, problems = validation.validate_document(doc)
    assert job is None
    fields = {p.field for p in problems}
    assert {"spec.model.uri", "spec.mixedPrecision.pinnedLayers"} <= fields, problems
    assert any(f.startswith("spec.model.input.shape") for f in fields), problems
