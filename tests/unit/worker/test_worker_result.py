"""The compact result stays under 4 KiB whatever the run produced; the input contract says how to feed the artifact."""

from __future__ import annotations

from edgequant.api import v1alpha1 as api
from edgequant.api.exitcodes import ExitCode
from edgequant.api.result import WorkerResult
from edgequant.backends.base import TensorContract
from edgequant.report.build import artifact_input_contract

GRAY = api.InputContract(shape=[28, 28, 1], color_order=api.ColorOrder.GRAY)


def test_uint8_contract_says_pixels_as_they_are() -> None:
    contract = artifact_input_contract(
        GRAY, TensorContract(dtype="uint8", shape=(1, 28, 28, 1), scale=1 / 255, zero_point=0)
    )
    assert contract.dtype == "uint8" and contract.value_range == [0.0, 255.0]
    assert contract.quant_scale == 1 / 255 and contract.quant_zero_point == 0
    assert "feed the uint8 pixels 0-255 as they are, never float/255" in contract.preprocessing


def test_int8_and_float_contracts() -> None:
    signed = artifact_input_contract(
        GRAY.model_copy(update={"scaling": api.Scaling(scale=1 / 127.5, offset=-1)}),
        TensorContract(dtype="int8", shape=(1, 28, 28, 1), scale=1 / 127.5, zero_point=0),
    )
    assert -128.0 <= signed.value_range[0] <= -127.0 and signed.value_range[1] == 127.0
    assert "as they are" not in signed.preprocessing
    plain = artifact_input_contract(GRAY, TensorContract(dtype="float32", shape=(1, 28, 28, 1)))
    assert plain.value_range == [0.0, 1.0] and plain.quant_scale is None


def test_termination_message_fits_4kib_in_the_worst_case() -> None:
    long = "calibration: 200 of 200 image(s) have no spatial structure: " + ", ".join(
        f"{c:02d}_class/{i:05d}.png" for c in range(10) for i in range(40)
    )
    results = api.Results(
        artifact=api.ArtifactInfo(
            uri="s3://artifacts/" + "x" * 200 + "/model.int8.tflite", sha256="f" * 64, size_bytes=123456
        ),
        method=api.Method.TFLITE_INT8,
        baseline=api.ModelMeasurement(accuracy=0.9, size_bytes=400000, latency_ms=0.03),
        quantized=api.ModelMeasurement(accuracy=0.89, size_bytes=100000, latency_ms=0.02),
        compression_ratio=4.0,
        accuracy_drop=0.01,
        report_uri="s3://artifacts/" + "x" * 200 + "/report.json",
        input_contract=artifact_input_contract(
            GRAY, TensorContract(dtype="uint8", shape=(1, 28, 28, 1), scale=1 / 255, zero_point=0)
        ),
        sensitive_layers=[f"layer_{i}_" + "n" * 60 for i in range(10)],
        warnings=[long[:200]] * 5,
    )
    result = WorkerResult.for_exit(ExitCode.DATA_VALIDATION_FAILED, long * 3, results)
    text = result.to_termination_message()
    assert len(text.encode()) < 4096
    back = WorkerResult.from_termination_message(text)
    assert back.exit_code == 11 and back.reason == "DataValidationFailed"
    assert back.results is not None and back.results.artifact is not None and back.results.artifact.sha256 == "f" * 64
