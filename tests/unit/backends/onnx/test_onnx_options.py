"""spec.onnx, the typed ORT settings built from it, and the reduce-range decision per CPU (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from edgequant.api import v1alpha1 as api
from edgequant.api.backend_options import OnnxRuntimeBackendOptions, backend_options
from edgequant.backends.onnxruntime.options import (
    DynamicSettings,
    StaticSettings,
    choose_reduce_range,
    dynamic_settings,
    static_settings,
)
from edgequant.util.cpu import parse_cpuinfo
from edgequant.util.errors import InvalidInputError

NO_VNNI = parse_cpuinfo("model name\t: old\nflags\t: avx avx2\n", machine="x86_64")
VNNI = parse_cpuinfo("model name\t: new\nflags\t: avx2 avx512f avx512_vnni\n", machine="x86_64")
ARM = parse_cpuinfo("Features\t: asimd asimddp\n", machine="aarch64")
UNKNOWN = parse_cpuinfo("", machine="")
INT8, UINT8 = api.OnnxQuantType.INT8, api.OnnxQuantType.UINT8


def _options(**extra: Any) -> OnnxRuntimeBackendOptions:
    options = backend_options(_spec(**extra))
    assert isinstance(options, OnnxRuntimeBackendOptions)
    return options


def _spec(**extra: Any) -> api.QuantizationJobSpec:
    doc: dict[str, Any] = {
        "method": "onnx-static",
        "model": {"uri": "s3://m/cnn.onnx", "input": {"shape": [1, 28, 28], "layout": "NCHW", "colorOrder": "GRAY"}},
        "calibration": {"dataset": {"uri": "s3://d/cal/"}, "algorithm": "percentile", "percentile": 99.9},
        "output": {"uri": "s3://a/out/"},
    }
    doc.update(extra)
    return api.QuantizationJobSpec.model_validate(doc)


@pytest.mark.parametrize(
    ("mode", "cpu", "weights", "enabled", "warning", "words"),
    [
        (api.ReduceRange.AUTO, NO_VNNI, INT8, True, False, "lacks VNNI/AMX"),
        (api.ReduceRange.AUTO, VNNI, INT8, False, False, "set spec.onnx.reduceRange: always"),
        (api.ReduceRange.AUTO, ARM, INT8, False, False, "accumulates int8 products in int32"),
        (api.ReduceRange.AUTO, NO_VNNI, UINT8, False, False, "u8u8 kernels"),
        (api.ReduceRange.AUTO, UNKNOWN, INT8, False, True, "CPU features unknown"),
        (api.ReduceRange.ALWAYS, VNNI, INT8, True, False, "would not need it"),
        (api.ReduceRange.ALWAYS, NO_VNNI, INT8, True, False, "reduceRange always"),
        (api.ReduceRange.NEVER, NO_VNNI, INT8, False, True, "can saturate"),
        (api.ReduceRange.NEVER, VNNI, INT8, False, False, "reduceRange never"),
    ],
)
def test_reduce_range_choice(
    mode: api.ReduceRange, cpu: Any, weights: api.OnnxQuantType, enabled: bool, warning: bool, words: str
) -> None:
    choice = choose_reduce_range(mode, cpu=cpu, weight_type=weights)
    assert (choice.enabled, choice.warning) == (enabled, warning)
    assert words in choice.note and choice.note.startswith(f"reduce_range {'on' if enabled else 'off'}")


def test_static_settings_come_from_spec_onnx_and_calibration() -> None:
    options = _options(
        onnx={
            "perChannel": False,
            "reduceRange": "auto",
            "weightType": "int8",
            "activationType": "int8",
            "preprocess": False,
        }
    )
    settings, choice = static_settings(options, cpu=NO_VNNI, keep_float=("conv1",))
    assert settings == StaticSettings(
        algorithm=api.CalibrationAlgorithm.PERCENTILE,
        percentile=99.9,
        per_channel=False,
        reduce_range=True,
        weight_type=INT8,
        activation_type=INT8,
        preprocess=False,
        keep_float=("conv1",),
        float_outputs=True,  # spec.ptq.floatOutputs' default
    )
    assert choice.enabled
    assert not static_settings(_options(ptq={"floatOutputs": False}), cpu=VNNI)[0].float_outputs
    defaults, _ = static_settings(_options(), cpu=VNNI)
    assert (
        defaults.per_channel,
        defaults.reduce_range,
        defaults.activation_type,
        defaults.weight_type,
        defaults.preprocess,
    ) == (True, False, UINT8, INT8, True)
    assert defaults.symmetric_weights and not defaults.symmetric_activations


def test_dynamic_settings() -> None:
    options = _options(method="onnx-dynamic", calibration=None, onnx={"weightType": "uint8"})
    settings, choice = dynamic_settings(options, cpu=NO_VNNI)
    assert settings == DynamicSettings(per_channel=True, reduce_range=False, weight_type=UINT8)
    assert "u8u8" in choice.note


def test_static_settings_need_calibration() -> None:
    options = _options(method="onnx-dynamic", calibration=None)
    with pytest.raises(InvalidInputError, match="spec.calibration"):
        static_settings(options, cpu=VNNI)


def test_settings_are_typed_and_closed() -> None:
    with pytest.raises(ValidationError, match="extra"):
        StaticSettings(CalibMovingAverage=True)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="int8 activations with uint8 weights"):
        StaticSettings(activation_type=INT8, weight_type=UINT8)
    with pytest.raises(ValidationError):
        StaticSettings(percentile=40)


def test_spec_onnx_rejects_unknown_keys_and_the_unsupported_pair() -> None:
    with pytest.raises(ValidationError, match="symmetric"):
        _spec(onnx={"symmetric": True})
    with pytest.raises(ValidationError, match="activationType int8 with weightType uint8"):
        _spec(onnx={"activationType": "int8", "weightType": "uint8"})
    with pytest.raises(ValidationError):
        _spec(onnx={"reduceRange": True})  # auto | always | never, not a boolean
    assert _spec().to_wire()["onnx"] == {
        "perChannel": True,
        "reduceRange": "auto",
        "weightType": "int8",
        "activationType": "uint8",
        "preprocess": True,
    }


def test_torch_qat_takes_torch_export_programs_only() -> None:
    base = {
        "method": "torch-qat",
        "training": {"dataset": {"uri": "s3://d/train.npz", "layout": "npz"}},
        "output": {"uri": "s3://a/out/"},
    }
    contract = {"shape": [1, 28, 28], "layout": "NCHW", "colorOrder": "GRAY"}
    api.QuantizationJobSpec.model_validate({**base, "model": {"uri": "s3://m/cnn.pt2", "input": contract}})
    with pytest.raises(
        ValidationError, match=r"torch-qat takes torch-export \(a .pt2 file from torch.export.save, not TorchScript\)"
    ):
        api.QuantizationJobSpec.model_validate({**base, "model": {"uri": "s3://m/cnn.pt", "input": contract}})
