"""Backend options (api/backend_options.py): each backend receives its own typed slice of the spec, never the spec.

Pure: specs are built in memory, nothing is read or written.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel, TypeAdapter

from edgequant.api import v1alpha1 as api
from edgequant.api.backend_options import (
    MODELS,
    AnyBackendOptions,
    BackendOptions,
    OnnxRuntimeBackendOptions,
    TensorRTBackendOptions,
    TFLiteBackendOptions,
    TorchQATBackendOptions,
    backend_options,
)
from edgequant.backends.base import own_options
from edgequant.util.errors import InvalidInputError

#: What each backend reads, and nothing else: a new field here is a decision, not an accident.
FIELDS = {
    TFLiteBackendOptions: {
        "backend",
        "method",
        "model_format",
        "input",
        "calibration",
        "training",
        "ptq",
        "output_uri",
    },
    OnnxRuntimeBackendOptions: {
        "backend",
        "method",
        "model_format",
        "input",
        "onnx",
        "ptq",
        "min_agreement",
        "calibration",
        "output_uri",
    },
    TorchQATBackendOptions: {"backend", "method", "model_format", "input", "training", "onnx"},
    TensorRTBackendOptions: {
        "backend",
        "method",
        "tensorrt",
        "calibration",
        "fallback_precision",
        "output_uri",
        "layer_ranking",
    },
}

ROOT = Path(__file__).resolve().parents[2]

MODEL_URI = {"tflite": "s3://m/model.keras", "pytorch": "s3://m/model.pt2"}


def _spec(method: api.Method, **extra: Any) -> api.QuantizationJobSpec:
    doc: dict[str, Any] = {
        "method": method.value,
        "model": {
            "uri": MODEL_URI.get(method.backend_name, "s3://m/model.onnx"),
            "input": {"shape": [3, 32, 32], "layout": "NCHW"},
        },
        "output": {"uri": "s3://out/run"},
        "calibration": {"dataset": {"uri": "s3://d/cal/"}},
        "training": {"dataset": {"uri": "s3://d/train/"}, "epochs": 2},
    }
    if method.needs_gpu:
        doc["resources"] = {"accelerator": "gpu"}
    doc.update(extra)
    return api.QuantizationJobSpec.model_validate(doc)


def test_each_model_holds_only_its_backends_fields() -> None:
    assert set(FIELDS) == set(get_args(AnyBackendOptions))
    for model, fields in FIELDS.items():
        assert set(model.model_fields) == fields, model.__name__
        assert not any(info.annotation is api.QuantizationJobSpec for info in model.model_fields.values())


@pytest.mark.parametrize("method", list(api.Method))
def test_the_catalogue_row_and_the_discriminator_agree(method: api.Method) -> None:
    """The row's backend ("module:factory") names the package whose options the method gets; its class says the same."""
    options = backend_options(_spec(method))
    package = method.row.backend.partition(":")[0].split(".")
    assert package[:2] == ["edgequant", "backends"] and options.backend == package[2] == method.backend_name
    assert type(options) is MODELS[method.backend_name] and options.method is method
    module, _, factory = method.row.backend.partition(":")
    assert getattr(importlib.import_module(module), factory).name == options.backend
    assert TypeAdapter(BackendOptions).validate_python(options.model_dump()) == options


def test_every_backend_the_catalogue_names_has_one_options_model() -> None:
    assert set(MODELS) == {m.backend_name for m in api.Method}
    assert len(MODELS) == len(get_args(AnyBackendOptions))


def _sections(options: BaseModel) -> dict[str, Any]:
    return {name: getattr(options, name) for name in type(options).model_fields}


def test_a_backend_does_not_see_other_backends_sections() -> None:
    """Changing a section only one backend reads changes only that backend's options."""
    changes = {
        "onnx": {"onnx": {"perChannel": False}},
        "ptq": {"ptq": {"biasCorrection": "off"}},
        "tensorrt": {"tensorrt": {"batchSize": 8}},
        "mixedPrecision": {"mixedPrecision": {"fallbackPrecision": "fp32"}},
        "acceptance": {"acceptance": {"maxAccuracyDrop": 0.05}},
    }
    readers = {
        "onnx": {"onnxruntime", "pytorch", "tensorrt-ranked"},
        "ptq": {"onnxruntime", "tflite"},
        "tensorrt": {"tensorrt"},
        "mixedPrecision": {"tensorrt"},
        "acceptance": set(),
    }
    for method in api.Method:
        # tensorrt-int8/-mixed see spec.onnx through their ONNX Runtime layer ranking (a proxy layer tool)
        reader = method.backend_name + ("-ranked" if method.row.layer_tool_proxy else "")
        before = _sections(backend_options(_spec(method)))
        for section, change in changes.items():
            after = _sections(backend_options(_spec(method, **change)))
            reads = method.backend_name in readers[section] or reader in readers[section]
            assert (after != before) is reads, (method.value, section)


def test_options_carry_the_spec_sections_as_given() -> None:
    spec = _spec(api.Method.ONNX_STATIC, calibration={"dataset": {"uri": "s3://d/cal/"}, "percentile": 99.9})
    options = backend_options(spec)
    assert isinstance(options, OnnxRuntimeBackendOptions)
    assert options.onnx == spec.onnx and options.ptq == spec.ptq and options.input == spec.model.input
    assert options.model_format is api.ModelFormat.ONNX and options.output_uri == "s3://out/run"
    assert options.calibration is not None and options.calibration.percentile == 99.9
    assert "algorithm" not in options.calibration.model_fields_set  # the ptq search reads what the author wrote
    given = backend_options(
        _spec(api.Method.ONNX_STATIC, calibration={"dataset": {"uri": "s3://d/cal/"}, "algorithm": "minmax"})
    )
    assert isinstance(given, OnnxRuntimeBackendOptions) and given.calibration is not None
    assert "algorithm" in given.calibration.model_fields_set


def test_onnx_runtime_reads_the_agreement_budget_its_sixteen_bit_activations_answer_to() -> None:
    budget = {"minAgreement": 0.95}
    evaluation = {"dataset": {"uri": "s3://d/eval/"}}
    options = backend_options(_spec(api.Method.ONNX_STATIC, acceptance=budget, evaluation=evaluation))
    assert isinstance(options, OnnxRuntimeBackendOptions) and options.min_agreement == 0.95
    assert options.ptq.sixteen_bit_activations is api.Technique.AUTO
    unset = backend_options(_spec(api.Method.ONNX_STATIC))
    assert isinstance(unset, OnnxRuntimeBackendOptions) and unset.min_agreement is None


def test_another_method_of_the_same_backend() -> None:
    """The degrade ladder and the remedies ask for another method's options from the same spec."""
    options = backend_options(_spec(api.Method.TFLITE_INT8), api.Method.TFLITE_FLOAT16)
    assert isinstance(options, TFLiteBackendOptions) and options.method is api.Method.TFLITE_FLOAT16
    torch = backend_options(_spec(api.Method.TORCH_QAT))
    assert isinstance(torch, TorchQATBackendOptions) and torch.training is not None and torch.training.epochs == 2


def test_tensorrt_ranks_layers_with_bare_onnx_static_options() -> None:
    spec = _spec(api.Method.TENSORRT_MIXED, onnx={"perChannel": False}, tensorrt={"workspaceMib": 512})
    options = backend_options(spec)
    assert isinstance(options, TensorRTBackendOptions)
    assert (
        options.tensorrt.workspace_mib == 512 and options.fallback_precision is spec.mixed_precision.fallback_precision
    )
    ranking = options.layer_ranking
    assert ranking is not None and ranking.method is api.Method.ONNX_STATIC
    assert ranking.ptq == api.PostTraining.bare() and not ranking.onnx.per_channel
    assert ranking.calibration == spec.calibration and ranking.input == spec.model.input
    fp16 = backend_options(_spec(api.Method.TENSORRT_FP16))
    assert isinstance(fp16, TensorRTBackendOptions) and fp16.layer_ranking is None  # no layer tool, no proxy


def test_options_are_frozen() -> None:
    options = backend_options(_spec(api.Method.TFLITE_INT8))
    with pytest.raises(ValueError, match="frozen"):
        options.output_uri = "s3://elsewhere/"  # type: ignore[misc]


def test_a_backend_refuses_another_backends_options_naming_the_method() -> None:
    tflite = backend_options(_spec(api.Method.TFLITE_INT8))
    with pytest.raises(InvalidInputError, match="spec.method: the ONNX Runtime backend does not run tflite-int8"):
        own_options(tflite, OnnxRuntimeBackendOptions, backend="ONNX Runtime")
    assert own_options(tflite, TFLiteBackendOptions, backend="TFLite") is tflite


TRESPASS = """from edgequant.api.backend_options import OnnxRuntimeBackendOptions
from edgequant.backends.base import QuantizeRequest


def reads(request: QuantizeRequest, own: OnnxRuntimeBackendOptions) -> object:
    mine = own.ptq, own.onnx, own.calibration
    another_backends = own.tensorrt
    unnarrowed = request.options.ptq
    return mine, another_backends, unnarrowed
"""


def test_reading_another_backends_field_fails_type_checking(tmp_path: Path) -> None:
    """The project's own mypy configuration refuses a backend reading a field its options do not have."""
    snippet = tmp_path / "trespass.py"
    snippet.write_text(TRESPASS)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), str(snippet)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "MYPYPATH": str(ROOT / "operator")},
        timeout=600,
    )
    errors = [line for line in proc.stdout.splitlines() if ": error: " in line]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert {line.split(":")[1] for line in errors} == {"7", "8"}, errors  # never line 6: its own fields
    assert any('"OnnxRuntimeBackendOptions" has no attribute "tensorrt"' in line for line in errors)
    assert any('Item "TensorRTBackendOptions" of' in line and '"ptq"' in line for line in errors)


def test_budget_driven_techniques_without_a_budget_leave_the_bare_path() -> None:
    """16-bit weights and activations auto apply only under acceptance.minAgreement: a spec that turns every other
    technique off keeps ONNX Runtime's own calibration on every sample unless it sets a budget."""
    budget_driven_auto = api.PostTraining.bare().model_copy(
        update={"sixteen_bit_weights": api.Technique.AUTO, "sixteen_bit_activations": api.Technique.AUTO}
    )
    assert budget_driven_auto.all_off_under(None)
    assert not budget_driven_auto.all_off_under(0.95)
    assert not api.PostTraining().all_off_under(None)  # the default: range rules, rounding, bias correction
    forced = api.PostTraining.bare().model_copy(update={"sixteen_bit_activations": api.Technique.ON})
    assert not forced.all_off_under(None)
