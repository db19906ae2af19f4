"""How the shared pipeline's batches reach ONNX Runtime's calibrator: re-chunking and the per-call reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgequant.api import v1alpha1 as api
from edgequant.backends.onnxruntime.calibration import BatchesReader, calibrator_options, model_batches
from edgequant.backends.onnxruntime.options import StaticSettings


def _batches(sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    out, start = [], 0
    for n in sizes:
        x = np.arange(start, start + n, dtype=np.float64).reshape(n, 1, 1, 1)
        out.append((x, np.zeros(n, dtype=np.int64)))
        start += n
    return out


def test_dynamic_batch_models_get_the_batches_as_they_come() -> None:
    got = list(model_batches(_batches([4, 4, 2]), fixed_batch=None))
    assert [len(b) for b in got] == [4, 4, 2]
    assert all(b.dtype == np.float32 and b.flags.c_contiguous for b in got)


def test_batches_above_the_memory_budgets_size_are_split_in_order() -> None:
    got = list(model_batches(_batches([4, 4, 2]), fixed_batch=None, max_batch=3))
    assert [len(b) for b in got] == [3, 1, 3, 1, 2]
    assert np.concatenate(got).ravel().tolist() == list(range(10))


def test_fixed_batch_models_get_exact_chunks_padded_with_real_samples() -> None:
    got = list(model_batches(_batches([4, 4, 2]), fixed_batch=3))
    assert [len(b) for b in got] == [3, 3, 3, 3]
    values = np.concatenate(got).ravel().tolist()
    assert values[:10] == list(range(10))
    assert values[10:] == [9.0, 9.0]  # the last chunk [9] completed with itself, never zeros
    assert (
        list(model_batches(_batches([2, 2]), fixed_batch=1))
        and len(list(model_batches(_batches([2, 2]), fixed_batch=1))) == 4
    )


def test_reader_ends_each_collect_call_after_per_call_batches() -> None:
    reader = BatchesReader(iter([np.zeros(1), np.ones(1), np.full(1, 2.0)]), input_name="input", per_call=2)
    first = [reader.get_next(), reader.get_next(), reader.get_next()]
    assert [f is None for f in first] == [False, False, True] and not reader.exhausted
    assert float(first[1]["input"][0]) == 1.0  # type: ignore[index]
    second = reader.get_next()
    assert second is not None and float(second["input"][0]) == 2.0
    assert reader.get_next() is None and reader.exhausted


def test_reader_without_per_call_feeds_everything_once() -> None:
    reader = BatchesReader(iter([np.zeros(1)] * 5), input_name="x")
    assert sum(1 for _ in iter(reader.get_next, None)) == 5 and reader.exhausted


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (api.CalibrationAlgorithm.MINMAX, {"symmetric": False}),
        (api.CalibrationAlgorithm.ENTROPY, {"symmetric": False}),
        (api.CalibrationAlgorithm.PERCENTILE, {"symmetric": False, "percentile": 99.9}),
    ],
)
def test_calibrator_options(algorithm: api.CalibrationAlgorithm, expected: dict[str, object]) -> None:
    assert calibrator_options(StaticSettings(algorithm=algorithm, percentile=99.9)) == expected
    assert calibrator_options(StaticSettings(symmetric_activations=True))["symmetric"] is True


def test_activation_bytes_per_sample_sums_every_float_activation_from_the_inferred_shapes(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgequant.backends.onnxruntime.model import activation_bytes_per_sample

    weights = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
    ]

    def save(input_dims: list[object], name: str) -> Path:
        graph = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_dims)],
            [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)],
            initializer=[weights],
        )
        path = tmp_path / name
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return path

    # input 3x32x32, conv and relu outputs 8x32x32 each; the weights are no activation
    assert activation_bytes_per_sample(save(["n", 3, 32, 32], "known.onnx")) == 4 * (3 + 8 + 8) * 32 * 32
    assert activation_bytes_per_sample(save(["n", 3, "h", "w"], "unknown.onnx")) is None
