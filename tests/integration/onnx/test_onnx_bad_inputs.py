"""Bad inputs give errors that name the file or field and the fix: not ONNX, wrong input shape, opset too old, wrong PyTorch file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgequant.api.exitcodes import ExitCode
from edgequant.backends.onnxruntime.backend import OnnxRuntimeBackend
from edgequant.util.errors import InvalidInputError
from tests.integration.onnx.conftest import WITH_VNNI, CnnFiles

pytestmark = pytest.mark.integration


def _error(call: Callable[[], Any]) -> str:
    with pytest.raises(InvalidInputError) as caught:
        call()
    assert caught.value.exit_code is ExitCode.INVALID_INPUT
    return str(caught.value)


def _old_opset_model(path: Path, opset: int) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((4, 1, 3, 3), 0.1, dtype=np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
            helper.make_node("Flatten", ["p"], ["logits"], name="flatten"),
        ],
        "old",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=4)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_a_file_that_is_not_onnx_is_named(tmp_path: Path, quantize_request: Callable[..., Any]) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_text("this is a text file, not a model\n")
    backend = OnnxRuntimeBackend(cpu=WITH_VNNI)
    request = quantize_request("onnx-static", model=fake)
    for message in (
        _error(lambda: backend.load(fake, options=request.options)),
        _error(lambda: backend.quantize(request)),
    ):
        assert message.startswith("model.onnx is not an ONNX model")
        assert "spec.model.uri must point to an ONNX model" in message


def test_wrong_input_shape_names_the_field_and_the_layout(
    fmnist_cnn: CnnFiles, quantize_request: Callable[..., Any]
) -> None:
    backend = OnnxRuntimeBackend(cpu=WITH_VNNI)
    nhwc = {"shape": [28, 28, 1], "layout": "NHWC", "colorOrder": "GRAY"}
    request = quantize_request("onnx-static", model=fmnist_cnn.onnx, contract=nhwc)
    for message in (
        _error(lambda: backend.load(fmnist_cnn.onnx, options=request.options)),
        _error(lambda: backend.quantize(request)),
    ):
        assert message.startswith("spec.model.input.shape [28, 28, 1] (NHWC) does not match fmnist-cnn.onnx")
        assert "the model is NCHW: set spec.model.input.layout NCHW and shape [1, 28, 28]" in message
    bigger = {"shape": [1, 32, 32], "layout": "NCHW", "colorOrder": "GRAY"}
    message = _error(lambda: backend.quantize(quantize_request("onnx-dynamic", model=fmnist_cnn.onnx, contract=bigger)))
    assert "expected [batch, 1, 32, 32]" in message and "set spec.model.input.shape to [1, 28, 28]" in message


def test_an_opset_too_old_is_refused_with_the_upgrade(tmp_path: Path, quantize_request: Callable[..., Any]) -> None:
    backend = OnnxRuntimeBackend(cpu=WITH_VNNI)
    old = _old_opset_model(tmp_path / "old.onnx", 9)
    message = _error(lambda: backend.quantize(quantize_request("onnx-static", model=old)))
    assert message.startswith("old.onnx uses opset 9, older than 13")
    assert "onnx.version_converter.convert_version" in message
    per_tensor = _error(
        lambda: backend.quantize(quantize_request("onnx-dynamic", model=old, onnx={"perChannel": False}))
    )
    assert "older than 10" in per_tensor
    eleven = _old_opset_model(tmp_path / "eleven.onnx", 11)
    assert "set spec.onnx.perChannel false" in _error(
        lambda: backend.quantize(quantize_request("onnx-static", model=eleven))
    )
    artifact = backend.quantize(quantize_request("onnx-dynamic", model=eleven, onnx={"perChannel": False}))
    assert artifact.path.is_file()


def test_torch_qat_refuses_torchscript_and_pickles_with_the_export_recipe(
    tmp_path: Path, quantize_request: Callable[..., Any]
) -> None:
    import torch

    from edgequant.backends.pytorch.backend import TorchQATBackend

    module = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten())
    scripted = tmp_path / "model.pt2"  # a misleading suffix: the content decides
    torch.jit.save(torch.jit.script(module), str(scripted))
    weights = tmp_path / "weights.pt2"
    torch.save(module.state_dict(), str(weights))
    backend = TorchQATBackend(cpu=WITH_VNNI)
    message = _error(lambda: backend.quantize(quantize_request("torch-qat", model=scripted)))
    assert message.startswith("model.pt2 is TorchScript") and "torch.export.save(torch.export.export(" in message
    message = _error(lambda: backend.export_baseline(quantize_request("torch-qat", model=weights)))
    assert message.startswith("weights.pt2 is a torch.save pickle") and "without the model's Python code" in message


def test_torch_qat_checks_the_program_input(fmnist_cnn: CnnFiles, quantize_request: Callable[..., Any]) -> None:
    from edgequant.backends.pytorch.backend import TorchQATBackend

    nhwc = {"shape": [28, 28, 1], "layout": "NHWC", "colorOrder": "GRAY"}
    message = _error(
        lambda: TorchQATBackend(cpu=WITH_VNNI).export_baseline(
            quantize_request("torch-qat", model=fmnist_cnn.pt2, contract=nhwc)
        )
    )
    assert message.startswith("spec.model.input.shape [28, 28, 1] (NHWC) does not match fmnist-cnn.pt2: input 'x'")
    assert "set spec.model.input.layout NCHW" in message
