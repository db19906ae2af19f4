"""The ONNX plumbing of spec.ptq (backends/onnxruntime/ptq.py) on small graphs built with onnx.helper, run by ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgequant.analysis import post_training as pt  # noqa: E402
from edgequant.backends.onnxruntime import ptq  # noqa: E402


def _separable_graph(path: Path, *, middle: str = "Relu", seed: int = 0) -> Path:
    """conv 3x3 (3 -> 8) -> act -> depthwise 3x3 (8) -> Relu -> conv 1x1 (8 -> 4) -> GlobalAveragePool -> Flatten.

    Channel ranges spread over three decades, as BatchNorm folding leaves them.
    """
    rng = np.random.default_rng(seed)
    spread = np.logspace(-1.5, 1.5, 8).astype(np.float32)
    inits = {
        "w1": (rng.normal(size=(8, 3, 3, 3)) * spread[:, None, None, None]).astype(np.float32),
        "b1": rng.normal(size=8).astype(np.float32),
        "w2": (rng.normal(size=(8, 1, 3, 3)) * spread[::-1, None, None, None]).astype(np.float32),
        "b2": rng.normal(size=8).astype(np.float32),
        "w3": rng.normal(size=(4, 8, 1, 1)).astype(np.float32),
        "b3": rng.normal(size=4).astype(np.float32),
    }
    act = (
        helper.make_node("Relu", ["c1"], ["a1"], name="act1")
        if middle == "Relu"
        else helper.make_node("Clip", ["c1", "zero", "six"], ["a1"], name="act1")
    )
    if middle != "Relu":
        inits["zero"], inits["six"] = np.array(0.0, np.float32), np.array(6.0, np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        act,
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], name="dw", pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["c2"], ["a2"], name="act2"),
        helper.make_node("Conv", ["a2", "w3", "b3"], ["c3"], name="pw"),
        helper.make_node("GlobalAveragePool", ["c3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["logits"], name="flatten"),
    ]
    graph = helper.make_graph(
        nodes,
        "separable",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = onnx.shape_inference.infer_shapes(model)
    onnx.save(model, str(path))
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    from edgequant.backends.onnxruntime.predictor import OrtPredictor

    return OrtPredictor(path).predict(x)


def _weights(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_equalization_keeps_the_model_function_and_balances_the_ranges(tmp_path: Path) -> None:
    source = _separable_graph(tmp_path / "m.onnx")
    target, search = ptq.equalize_model(source, tmp_path / "eq.onnx")
    assert search.pairs == [("conv1", "dw"), ("dw", "pw")]
    x = np.random.default_rng(1).normal(size=(4, 3, 12, 12)).astype(np.float32)
    before, after = _run(source, x), _run(target, x)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * float(np.abs(before).max()))
    old, new = _weights(source), _weights(target)
    spread = lambda w: float(np.ptp(np.log(pt.output_channel_ranges(w))))  # noqa: E731
    assert spread(new["w1"]) < spread(old["w1"]) and spread(new["w2"]) < spread(old["w2"])


def test_equalization_skips_pairs_joined_by_relu6(tmp_path: Path) -> None:
    source = _separable_graph(tmp_path / "m.onnx", middle="Clip")
    _, search = ptq.equalize_model(source, tmp_path / "eq.onnx")
    assert search.pairs == [("dw", "pw")] and search.skipped == {"clip": 1}


def test_statistics_and_bias_correction_match_the_float_output_means(tmp_path: Path) -> None:
    source = _separable_graph(tmp_path / "m.onnx")
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(24, 3, 12, 12)) + 1.0).astype(np.float32)
    stats = ptq.collect_statistics(source, [x[:10], x[10:]], input_name="input", workdir=tmp_path / "stats")
    assert stats.samples == 24
    np.testing.assert_allclose(stats.input_means["conv1"], x.mean(axis=(0, 2, 3)), rtol=1e-5)
    assert set(stats.histograms) >= {"input", "a1", "a2", "c3"}
    assert stats.histograms["a1"].minimum == 0.0 and stats.histograms["a1"].counts.sum() == 24 * 8 * 12 * 12
    # the convolutions' outputs before their Relu: quantize_static takes the Relu's range, so extremes alone
    assert set(stats.extremes) == {"c1", "c2"} and not set(stats.extremes) & set(stats.histograms)
    assert stats.extremes["c1"][0] < 0.0 < stats.extremes["c1"][1]
    corrected, changed = ptq.correct_biases(
        source, tmp_path / "bc.onnx", input_means=stats.input_means, weight_qmax=7, per_channel=True
    )
    assert changed == 3
    # conv1's output means with its weights quantized (4 bits: a visible shift) move back to the float ones; not
    # exactly, since the zero padding of a 12x12 input lowers the mean at the border, which E[x] does not see
    w, b, b_fixed = _weights(source)["w1"], _weights(source)["b1"], _weights(corrected)["b1"]
    wq = pt.quantize_weights_symmetric(w, qmax=7, per_channel=True)
    target = _conv_mean(x, w, b)
    before = np.abs(_conv_mean(x, wq, b) - target)
    after = np.abs(_conv_mean(x, wq, b_fixed) - target)
    assert np.linalg.norm(after) < 0.25 * np.linalg.norm(before)


def _conv_mean(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-channel mean of a padded 3x3 convolution's output (through ONNX Runtime)."""
    from onnxruntime import InferenceSession

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])],
        "c",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w.astype(np.float32), "w"), numpy_helper.from_array(b.astype(np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    y = InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    return y.mean(axis=(0, 2, 3))


def test_layers_kept_in_float_get_their_uncorrected_biases_back(tmp_path: Path) -> None:
    source = _separable_graph(tmp_path / "m.onnx")
    x = (np.random.default_rng(3).normal(size=(8, 3, 12, 12)) + 1.0).astype(np.float32)
    stats = ptq.collect_statistics(source, [x], input_name="input", workdir=tmp_path / "stats")
    corrected, _ = ptq.correct_biases(
        source, tmp_path / "bc.onnx", input_means=stats.input_means, weight_qmax=7, per_channel=True
    )
    restored = ptq.restore_biases(corrected, source, {"conv1"}, tmp_path / "restored.onnx")
    old, fixed, new = _weights(source), _weights(corrected), _weights(restored)
    np.testing.assert_array_equal(new["b1"], old["b1"])
    np.testing.assert_array_equal(new["b2"], fixed["b2"])
    assert not np.array_equal(fixed["b2"], old["b2"])


def test_narrow_layers_are_the_stem_and_depthwise_convolutions(tmp_path: Path) -> None:
    model = onnx.load(str(_separable_graph(tmp_path / "m.onnx")))
    # conv1: 3x3x3 = 27 weights per output channel, dw: 3x3 = 9; pw: 8 inputs x 1x1 = 8 (also narrow)
    assert [n.name for n in ptq.narrow_layers(model)] == ["conv1", "dw", "pw"]
    assert [n.name for n in ptq.narrow_layers(model, max_fan_in=9)] == ["dw", "pw"]
    assert ptq.weight_count(model, ["w1", "w2"]) == 8 * 27 + 8 * 9


def test_bias_correction_leaves_sixteen_bit_layers_alone(tmp_path: Path) -> None:
    source = _separable_graph(tmp_path / "m.onnx")
    x = (np.random.default_rng(4).normal(size=(8, 3, 12, 12)) + 1.0).astype(np.float32)
    stats = ptq.collect_statistics(source, [x], input_name="input", workdir=tmp_path / "stats")
    corrected, changed = ptq.correct_biases(
        source,
        tmp_path / "bc.onnx",
        input_means=stats.input_means,
        weight_qmax=7,
        per_channel=True,
        skip_weights=frozenset({"w2"}),
    )
    old, new = _weights(source), _weights(corrected)
    assert changed == 2
    np.testing.assert_array_equal(new["b2"], old["b2"])
    assert not np.array_equal(new["b1"], old["b1"])


def _separable_with_minmax_ranges(tmp_path: Path) -> tuple[Path, np.ndarray, Path, Any]:
    """The separable graph, 16 calibration inputs, their MinMax ranges saved as ORT's cache, and the FloatModel."""
    from edgequant.backends.onnxruntime.model import read_model
    from edgequant.backends.onnxruntime.quantize import FloatModel, save_ranges

    source = _separable_graph(tmp_path / "m.onnx")
    x = np.random.default_rng(5).normal(size=(16, 3, 12, 12)).astype(np.float32)
    stats = ptq.collect_statistics(source, [x], input_name="input", workdir=tmp_path / "stats")
    ranges = save_ranges(
        ptq.ranges_by("minmax", stats, percentile=99.99, algorithm=ptq.api.CalibrationAlgorithm.MINMAX),
        tmp_path / "r.json",
    )
    float_model = FloatModel(path=source, model=read_model(source), preprocessed=False)
    return source, x, ranges, float_model


def test_sixteen_bit_weights_are_int16_in_the_qdq_model_and_closer_to_float(tmp_path: Path) -> None:
    from edgequant.backends.onnxruntime.options import StaticSettings
    from edgequant.backends.onnxruntime.quantize import quantize_qdq

    source, _x, ranges, float_model = _separable_with_minmax_ranges(tmp_path)

    def quantized(wide: tuple[str, ...], keep: tuple[str, ...], name: str) -> onnx.ModelProto:
        settings = StaticSettings(sixteen_bit_weights=wide, keep_float=keep)
        out = quantize_qdq(float_model=float_model, output_path=tmp_path / name, ranges_path=ranges, settings=settings)
        return onnx.load(str(out))

    def weight_types(model: onnx.ModelProto) -> dict[str, int]:
        inits = {t.name: t.data_type for t in model.graph.initializer}
        return {
            n.output[0]: inits[n.input[0]]
            for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits and n.input[0].startswith("w")
        }

    plain, wide = quantized((), (), "plain.onnx"), quantized(("w1", "w2"), (), "wide.onnx")
    assert set(weight_types(plain).values()) == {TensorProto.INT8}
    types = {k.split("_")[0]: v for k, v in weight_types(wide).items()}
    assert types["w1"] == types["w2"] == TensorProto.INT16 and types["w3"] == TensorProto.INT8
    # a node kept in float has no quantized weight, so its 16-bit entry is dropped rather than refused
    pinned = quantized(("w1", "w2"), ("dw",), "pinned.onnx")
    assert "w2" not in {k.split("_")[0] for k in weight_types(pinned)}
    err = lambda m: float(np.abs(_dequantized(m, "w1") - _weights(source)["w1"]).max())  # noqa: E731
    assert err(wide) < err(plain) / 100  # 2^8 times finer steps


def _dequantized(model: onnx.ModelProto, weight: str) -> np.ndarray:
    """A weight of a Q/DQ model as its DequantizeLinear gives it back (per output channel)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith(weight + "_"))
    q, scale = inits[node.input[0]].astype(np.float64), inits[node.input[1]].astype(np.float64)
    return q * scale.reshape((-1,) + (1,) * (q.ndim - 1))


def _pointwise_graph(path: Path, *, seed: int = 0) -> Path:
    """conv 3x3 (3 -> 16) -> Relu -> conv 1x1 stride 2 (16 -> 12) -> Relu -> GAP -> Flatten -> Gemm (12 -> 10, transB 0)
    -> Gemm (10 -> 6, transB 1): the layer shapes adaptive rounding covers (the 3x3 over its input patches: 27 weights
    per output channel, an RGB stem)."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(size=(16, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(size=16).astype(np.float32),
        "w2": (rng.normal(size=(12, 16, 1, 1)) * np.logspace(-1, 1, 12)[:, None, None, None]).astype(np.float32),
        "b2": rng.normal(size=12).astype(np.float32),
        "w3": rng.normal(size=(12, 10)).astype(np.float32),
        "b3": rng.normal(size=10).astype(np.float32),
        "w4": rng.normal(size=(6, 10)).astype(np.float32),
        "b4": rng.normal(size=6).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["a1"], name="act1"),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], name="pw", strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["a2"], name="act2"),
        helper.make_node("GlobalAveragePool", ["a2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["h"], name="fc1"),
        helper.make_node("Gemm", ["h", "w4", "b4"], ["logits"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "pointwise",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 6])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    onnx.save(model, str(path))
    return path


def test_second_moments_are_those_of_the_layer_inputs(tmp_path: Path) -> None:
    source = _pointwise_graph(tmp_path / "m.onnx")
    x = np.random.default_rng(1).normal(size=(20, 3, 12, 12)).astype(np.float32)
    stats = ptq.collect_statistics(
        source, [x[:7], x[7:]], input_name="input", workdir=tmp_path / "stats", second_moments=True
    )
    assert set(stats.second_moments) == {"conv1", "pw", "fc1", "fc2"}
    from onnxruntime import InferenceSession

    model = onnx.load(str(source))
    model.graph.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a1", "h")])
    sess = InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a1, h = sess.run(["a1", "h"], {"input": x})
    rows = pt.conv1x1_rows(a1[:, :, ::2, ::2])  # stride 2: the positions the 1x1 convolution reads
    patches = pt.patch_columns(x, kernel=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1])
    for name, r in (("pw", rows), ("fc2", h), ("conv1", patches.reshape(27, -1).T)):
        exact = r.astype(np.float64).T @ r.astype(np.float64)
        np.testing.assert_allclose(stats.second_moments[name].matrix, exact, atol=1e-4 * float(np.abs(exact).max()))
        assert stats.second_moments[name].rows == len(r)
    plain = ptq.collect_statistics(source, [x], input_name="input", workdir=tmp_path / "plain")
    assert plain.second_moments == {}


@pytest.mark.parametrize(("per_channel", "reduce_range"), [(True, False), (True, True), (False, False)])
def test_quantize_static_keeps_adaptively_rounded_weights_exactly(
    tmp_path: Path, per_channel: bool, reduce_range: bool
) -> None:
    from edgequant.backends.onnxruntime.model import read_model
    from edgequant.backends.onnxruntime.options import StaticSettings
    from edgequant.backends.onnxruntime.quantize import FloatModel, quantize_qdq, save_ranges

    source = _pointwise_graph(tmp_path / "m.onnx")
    x = np.random.default_rng(2).normal(size=(16, 3, 12, 12)).astype(np.float32)
    stats = ptq.collect_statistics(source, [x], input_name="input", workdir=tmp_path / "stats", second_moments=True)
    qmax = 64 if reduce_range else 127
    rounded = ptq.round_weights_adaptively(
        source,
        tmp_path / "rounded.onnx",
        moments=stats.second_moments,
        weight_qmax=qmax,
        per_channel=per_channel,
        skip_weights=frozenset({"w4"}),
    )
    assert rounded.layers == 3 and rounded.with_kernel == 1 and rounded.error_ratio < 1.0
    old, new = _weights(source), _weights(rounded.path)
    np.testing.assert_array_equal(new["w4"], old["w4"])  # skipped (16-bit weights)
    ranges = save_ranges(
        ptq.ranges_by("minmax", stats, percentile=99.99, algorithm=ptq.api.CalibrationAlgorithm.MINMAX),
        tmp_path / "r.json",
    )
    settings = StaticSettings(per_channel=per_channel, reduce_range=reduce_range)
    out = quantize_qdq(
        float_model=FloatModel(path=rounded.path, model=read_model(rounded.path), preprocessed=False),
        output_path=tmp_path / "q.onnx",
        ranges_path=ranges,
        settings=settings,
    )
    qdq = onnx.load(str(out))
    for name, matrix in (
        ("w1", new["w1"].reshape(16, 27)),
        ("w2", new["w2"].reshape(12, 16)),
        ("w3", new["w3"].T),
    ):
        original = old[name].T if name == "w3" else old[name].reshape(matrix.shape)
        expected_scale = pt.symmetric_weight_scales(original, qmax=qmax, per_channel=per_channel)
        codes = np.round(matrix / expected_scale[:, None])
        q, scale = _quantized(qdq, name)
        q = q.T if name == "w3" else q.reshape(q.shape[0], -1)
        np.testing.assert_array_equal(np.broadcast_to(scale, expected_scale.shape), expected_scale)
        np.testing.assert_array_equal(q, codes)  # ORT's own rounding reproduces the adaptive grid values
        assert np.abs(q).max() <= qmax
        # and they are not ORT's round-to-nearest of the float weights
        assert np.any(q != np.round(original / expected_scale[:, None]))


def _quantized(model: onnx.ModelProto, weight: str) -> tuple[np.ndarray, np.ndarray]:
    """The integer codes and scale(s) of a weight in a Q/DQ model."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith(weight + "_"))
    return inits[node.input[0]].astype(np.int64), inits[node.input[1]]


def test_bias_correction_after_adaptive_rounding_measures_the_shift_from_the_float_weights(tmp_path: Path) -> None:
    source = _pointwise_graph(tmp_path / "m.onnx")
    x = (np.random.default_rng(3).normal(size=(16, 3, 12, 12)) + 0.5).astype(np.float32)
    stats = ptq.collect_statistics(source, [x], input_name="input", workdir=tmp_path / "stats", second_moments=True)
    rounded = ptq.round_weights_adaptively(
        source, tmp_path / "rounded.onnx", moments=stats.second_moments, weight_qmax=127, per_channel=True
    )
    corrected, _ = ptq.correct_biases(
        rounded.path,
        tmp_path / "bc.onnx",
        input_means=stats.input_means,
        weight_qmax=127,
        per_channel=True,
        float_weights=source,
    )
    old, grid, new = _weights(source), _weights(rounded.path), _weights(corrected)
    shift = pt.conv_output_shift(grid["w2"] - old["w2"], stats.input_means["pw"])
    np.testing.assert_allclose(new["b2"], old["b2"] - shift, rtol=1e-5, atol=1e-7)
    # without the float weights the rounded ones look exact (already on the grid): nothing would be corrected
    blind, _ = ptq.correct_biases(
        rounded.path, tmp_path / "blind.onnx", input_means=stats.input_means, weight_qmax=127, per_channel=True
    )
    np.testing.assert_allclose(_weights(blind)["b2"], old["b2"], atol=1e-6 * float(np.abs(old["b2"]).max()))
    # a layer kept in float gets its float weights back, not the rounded ones
    restored = ptq.restore_biases(corrected, source, {"pw"}, tmp_path / "restored.onnx")
    np.testing.assert_array_equal(_weights(restored)["w2"], old["w2"])
    np.testing.assert_array_equal(_weights(restored)["b2"], old["b2"])


def test_narrow_activations_are_the_tensors_around_the_stem_and_depthwise_convolutions(tmp_path: Path) -> None:
    model = onnx.load(str(_separable_graph(tmp_path / "m.onnx")))
    narrow = ptq.narrow_layers(model)
    # conv1 (27 weights per channel), dw (9) and pw (8): each one's input, output and the Relu after it, once each
    assert [n.name for n in narrow] == ["conv1", "dw", "pw"]
    assert ptq.narrow_activations(model, narrow) == ("input", "c1", "a1", "c2", "a2", "c3")
    assert ptq.narrow_activations(model, [n for n in narrow if n.name == "dw"]) == ("a1", "c2", "a2")


def _activation_types(model: onnx.ModelProto) -> dict[str, int]:
    """Each quantized activation tensor's type, read from its QuantizeLinear's zero point."""
    inits = {t.name: t.data_type for t in model.graph.initializer}
    return {n.input[0]: inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"}


def test_sixteen_bit_activations_are_uint16_in_the_qdq_model_and_closer_to_float(tmp_path: Path) -> None:
    from edgequant.backends.onnxruntime.options import StaticSettings
    from edgequant.backends.onnxruntime.predictor import OrtPredictor
    from edgequant.backends.onnxruntime.quantize import quantize_qdq

    source, x, ranges, float_model = _separable_with_minmax_ranges(tmp_path)
    wide = ("a1", "c2", "a2")

    def quantized(activations: tuple[str, ...], keep: tuple[str, ...], name: str) -> Path:
        settings = StaticSettings(sixteen_bit_activations=activations, keep_float=keep)
        return quantize_qdq(float_model=float_model, output_path=tmp_path / name, ranges_path=ranges, settings=settings)

    plain, sixteen = quantized((), (), "plain.onnx"), quantized(wide, (), "wide.onnx")
    assert set(_activation_types(onnx.load(str(plain))).values()) == {TensorProto.UINT8}
    types = _activation_types(onnx.load(str(sixteen)))
    # ORT folds each Relu into the Conv before it (c2 is gone), so the Relu's output carries the 16-bit Q/DQ
    assert types["a1"] == types["a2"] == TensorProto.UINT16 and "c2" not in types
    assert types["input"] == types["c3"] == TensorProto.UINT8
    # a node kept in float next to 16-bit tensors still quantizes, and its neighbours keep their 16 bits
    pinned = _activation_types(onnx.load(str(quantized(wide, ("dw",), "pinned.onnx"))))
    assert pinned["a2"] == TensorProto.UINT16
    reference = OrtPredictor(source).predict(x)
    error = {p: float(np.abs(OrtPredictor(p).predict(x) - reference).mean()) for p in (plain, sixteen)}
    assert error[sixteen] < error[plain]


def _on_the_int8_grid(path: Path) -> Path:
    """The model with every weight moved onto its own per-channel symmetric int8 grid, so weight quantization loses
    nothing and what a quantized model loses is its activations' rounding."""
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if init.name.startswith("w"):
            scale = np.abs(w).reshape(len(w), -1).max(axis=1).reshape((-1,) + (1,) * (w.ndim - 1)) / 127
            init.CopyFrom(numpy_helper.from_array((np.round(w / scale) * scale).astype(np.float32), init.name))
    onnx.save(model, str(path))
    return path


def _spiked_batches(count: int = 100) -> tuple[object, np.ndarray]:
    """Calibration inputs whose first sample (never held out) carries one value 1000: min-max ranges then span
    [-4, 100], where an 8-bit step (0.4) blurs the other samples' N(0, 1) signal and a 16-bit step does not."""
    from edgequant.backends.base import Batches

    x = np.random.default_rng(3).normal(size=(count, 3, 12, 12)).astype(np.float32)
    x[0, 0, 6, 6] = 100.0

    def make() -> object:
        for i in range(0, count, 20):
            yield x[i : i + 20], np.zeros(len(x[i : i + 20]), dtype=np.int64)

    return Batches(make_iter=make, count=count, batch_size=20), x  # type: ignore[arg-type]


def _tune_sixteen_bit_activations(source: Path, workdir: Path, min_agreement: float | None) -> ptq.Tuned:
    """spec.ptq with only sixteenBitActivations auto, on the spiked calibration data."""
    from edgequant.backends.onnxruntime.model import read_model
    from edgequant.backends.onnxruntime.options import StaticSettings
    from edgequant.backends.onnxruntime.quantize import FloatModel

    calibration, _x = _spiked_batches()
    options = ptq.api.PostTraining.bare().model_copy(update={"sixteen_bit_activations": ptq.api.Technique.AUTO})
    return ptq.tune(
        float_model=FloatModel(path=source, model=read_model(source), preprocessed=False),
        calibration=calibration,  # type: ignore[arg-type]
        settings=StaticSettings(),
        options=options,
        workdir=workdir,
        min_agreement=min_agreement,
    )


@pytest.mark.parametrize("min_agreement", [None, 0.95])
def test_sixteen_bit_activations_auto_widens_the_narrow_layers_activations_only_below_the_budget(
    tmp_path: Path, min_agreement: float | None
) -> None:
    source = _on_the_int8_grid(_separable_graph(tmp_path / "m.onnx"))
    tuned = _tune_sixteen_bit_activations(source, tmp_path / "ptq", min_agreement)
    text = "\n".join(tuned.notes)
    if min_agreement is None:
        assert tuned.sixteen_bit_activations == () and not tuned.scores  # no budget: nothing to hold out for
        assert "acceptance.minAgreement is not set" in text
        return
    # 8-bit activations miss the budget, those around the narrow convolutions reach it: the search stops there
    eight_bit, around_narrow = tuned.scores
    assert eight_bit.agreement < min_agreement <= around_narrow.agreement
    model = onnx.load(str(source))
    assert tuned.sixteen_bit_activations == ptq.narrow_activations(model, ptq.narrow_layers(model))
    assert "16-bit activations for the activations around 3 narrow convolutions" in text


def test_sixteen_bit_activations_auto_widens_every_activation_when_no_layer_is_narrow(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(4, 3, 5, 5)).astype(np.float32)  # 75 weights per output channel: not narrow
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[2, 2, 2, 2]),
            helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
            helper.make_node("Flatten", ["g"], ["logits"], name="flatten"),
        ],
        "wide",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.zeros(4, np.float32), "b")],
    )
    source = tmp_path / "wide.onnx"
    onnx.save(
        onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])),
        str(source),
    )
    source = _on_the_int8_grid(source)
    tuned = _tune_sixteen_bit_activations(source, tmp_path / "ptq", 0.95)
    eight_bit, every = tuned.scores
    assert eight_bit.agreement < 0.95 <= every.agreement
    assert set(tuned.sixteen_bit_activations) == set(ptq.calibrated_tensors(onnx.load(str(source))))
    assert any("16-bit activations for every activation" in note for note in tuned.notes)


def test_the_statistics_pass_counts_its_histograms_and_second_moments_in_the_memory_budget(tmp_path: Path) -> None:
    model = onnx.load(str(_pointwise_graph(tmp_path / "m.onnx")))
    histograms = ptq.statistics_fixed_bytes(model, second_moments=False)
    binned = len(ptq.calibrated_tensors(model)) - len(ptq.ranges_replaced(model))  # both convs' pre-Relu outputs
    assert binned == len(ptq.calibrated_tensors(model)) - 2 and histograms == binned * ptq.HISTOGRAM_BINS * 8
    # the 3x3 stem (27 patch inputs), the 1x1 conv (16 inputs) and both Gemms (12 and 10) hold an in x in float64 each
    moments = (27 * 27 + 16 * 16 + 12 * 12 + 10 * 10) * 8
    assert ptq.statistics_fixed_bytes(model, second_moments=True) - histograms == moments
    mib = 2**20
    assert ptq.statistics_chunk(budget_bytes=2048 * mib, fixed_bytes=0, bytes_per_sample=None) == ptq.STATISTICS_CHUNK
    assert ptq.statistics_chunk(budget_bytes=2048 * mib, fixed_bytes=0, bytes_per_sample=mib) == ptq.STATISTICS_CHUNK
    # a quarter of what the fixed statistics leave, per sample: 100 MiB left -> 25 MiB -> 2 samples of 10 MiB
    assert ptq.statistics_chunk(budget_bytes=612 * mib, fixed_bytes=512 * mib, bytes_per_sample=10 * mib) == 2
    assert ptq.statistics_chunk(budget_bytes=512 * mib, fixed_bytes=600 * mib, bytes_per_sample=10 * mib) == 1


def test_sixteen_bit_activations_on_widens_the_narrow_layers_activations_without_a_budget(tmp_path: Path) -> None:
    from edgequant.backends.onnxruntime.model import read_model
    from edgequant.backends.onnxruntime.options import StaticSettings
    from edgequant.backends.onnxruntime.quantize import FloatModel

    source = _separable_graph(tmp_path / "m.onnx")
    calibration, _x = _spiked_batches()
    options = ptq.api.PostTraining.bare().model_copy(update={"sixteen_bit_activations": ptq.api.Technique.ON})
    tuned = ptq.tune(
        float_model=FloatModel(path=source, model=read_model(source), preprocessed=False),
        calibration=calibration,  # type: ignore[arg-type]
        settings=StaticSettings(),
        options=options,
        workdir=tmp_path / "ptq",
    )
    model = onnx.load(str(source))
    assert tuned.sixteen_bit_activations == ptq.narrow_activations(model, ptq.narrow_layers(model))
    assert not tuned.scores  # on is not scored: nothing auto, no held-out split
    assert "ptq: 16-bit activations for the activations around 3 narrow convolutions (6 tensors)" in tuned.notes


@pytest.mark.parametrize(
    ("mode", "min_agreement"), [("auto", None), ("auto", 0.0), ("auto", 1.0), ("on", None), ("off", 1.0)]
)
def test_sixteen_bit_weights_are_tried_only_below_the_agreement_budget_or_when_on(
    tmp_path: Path, mode: str, min_agreement: float | None
) -> None:
    """16-bit weights run unfused (slower than int8 and often than float on CPU): auto tries them only when an
    agreement budget is set and the 8-bit choice misses it on the held-out split, and keeps them if they score higher."""
    from edgequant.backends.base import Batches
    from edgequant.backends.onnxruntime.model import read_model
    from edgequant.backends.onnxruntime.options import StaticSettings
    from edgequant.backends.onnxruntime.quantize import FloatModel

    source = _separable_graph(tmp_path / "m.onnx")
    x = np.random.default_rng(3).normal(size=(100, 3, 12, 12)).astype(np.float32)

    def make() -> object:
        for i in range(0, 100, 20):
            yield x[i : i + 20], np.zeros(20, dtype=np.int64)

    options = ptq.api.PostTraining.bare().model_copy(
        update={"sixteen_bit_weights": ptq.api.Technique(mode), "select_algorithm": mode == "auto"}
    )
    tuned = ptq.tune(
        float_model=FloatModel(path=source, model=read_model(source), preprocessed=False),
        calibration=Batches(make_iter=make, count=100, batch_size=20),  # type: ignore[arg-type]
        settings=StaticSettings(),
        options=options,
        workdir=tmp_path / "ptq",
        algorithm_given=True,  # one range rule: the 8-bit choice is the first candidate
        min_agreement=min_agreement,
    )
    text = "\n".join(tuned.notes)
    every_narrow_weight = ("w1", "w2", "w3")
    if mode == "on":
        assert tuned.sixteen_bit_weights == every_narrow_weight
    elif mode == "off" or min_agreement is None:
        assert tuned.sixteen_bit_weights == ()
        assert mode == "off" or "16-bit weights not tried: acceptance.minAgreement is not set" in text
    elif min_agreement == 0.0:
        assert tuned.sixteen_bit_weights == () and "16-bit weights not needed" in text
        assert [s.name for s in tuned.scores] == ["minmax"]
    else:  # a budget of 1.0 that 8-bit weights miss on the held-out split: tried, kept when it scores higher
        eight_bit, sixteen = tuned.scores
        assert eight_bit.agreement < 1.0 and sixteen.name == "minmax+w16"
        kept = pt.best_candidate([eight_bit, sixteen]) is sixteen
        assert (tuned.sixteen_bit_weights == every_narrow_weight) == kept


def test_the_equalized_statistics_collected_beside_the_source_equal_a_full_pass_on_the_equalized_model(
    tmp_path: Path,
) -> None:
    source = _separable_graph(tmp_path / "m.onnx")
    target, search = ptq.equalize_model(source, tmp_path / "eq.onnx")
    tensors, layers = ptq.equalized_tensors(onnx.load(str(target)), search.pairs)
    assert tensors == {"c1", "a1", "c2", "a2"} and layers == {"dw", "pw"}  # a chain: dw is second, then first
    x = (np.random.default_rng(3).normal(size=(20, 3, 12, 12)) + 0.5).astype(np.float32)

    def collect(path: Path, name: str, **equalized: Any) -> ptq.Statistics:
        return ptq.collect_statistics(
            path, [x[:8], x[8:]], input_name="input", workdir=tmp_path / name, second_moments=True, **equalized
        )

    full = collect(target, "full")
    both = collect(source, "both", equalized=(target, search.pairs))
    assert both.equalized is not None and set(both.equalized.histograms) == {"a1", "a2"}
    assert set(both.equalized.extremes) == {"c1", "c2"}  # read by a Relu alone: their range is the Relu's
    # both read a rescaled tensor: pw (1x1) its input vectors, dw (depthwise) its input patches per channel
    assert set(both.equalized.second_moments) == layers and set(both.equalized.input_means) == layers
    alone = collect(source, "alone")  # the source's own statistics are as without the equalized model beside them
    for name, hist in alone.histograms.items():
        np.testing.assert_array_equal(both.histograms[name].counts, hist.counts)
    merged = ptq.equalized_statistics(both, tensors)
    assert set(merged.histograms) == set(full.histograms) and set(merged.input_means) == set(full.input_means)
    assert set(merged.extremes) == set(full.extremes)
    for name in tensors & set(full.extremes):
        assert merged.extremes[name] == full.extremes[name]
    for name, hist in merged.histograms.items():
        expected = full.histograms[name]
        if name in tensors:  # what equalization rescaled: the same values as the equalized model's own session
            np.testing.assert_array_equal(hist.counts, expected.counts)
            np.testing.assert_array_equal(hist.edges, expected.edges)
            assert (hist.minimum, hist.maximum) == (expected.minimum, expected.maximum)
        else:  # the rest is the source model's (the same function; float rounding apart)
            assert hist is both.histograms[name]
            np.testing.assert_allclose([hist.minimum, hist.maximum], [expected.minimum, expected.maximum], rtol=1e-5)
            assert hist.counts.sum() == expected.counts.sum()
    for name, mean in full.input_means.items():
        np.testing.assert_allclose(merged.input_means[name], mean, rtol=1e-5, atol=1e-6)
        if name in layers:
            np.testing.assert_array_equal(merged.input_means[name], mean)
    for name in layers:
        np.testing.assert_array_equal(merged.second_moments[name].matrix, full.second_moments[name].matrix)
    assert merged.histograms["a1"].maximum != both.histograms["a1"].maximum  # equalization did rescale a1
    with pytest.raises(ValueError, match="equalized"):
        ptq.equalized_statistics(alone, tensors)


def test_ranges_by_computes_each_rule_once_per_histogram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _separable_graph(tmp_path / "m.onnx")
    x = np.random.default_rng(4).normal(size=(12, 3, 12, 12)).astype(np.float32)
    stats = ptq.collect_statistics(source, [x], input_name="input", workdir=tmp_path / "stats")
    calls: list[int] = []
    rule = ptq.RANGE_RULES["mse"]
    monkeypatch.setitem(ptq.RANGE_RULES, "mse", lambda h, p: calls.append(1) or rule(h, p))
    algorithm = ptq.api.CalibrationAlgorithm.MINMAX
    plain = ptq.ranges_by("mse", stats, percentile=99.99, algorithm=algorithm)
    assert len(calls) == len(stats.histograms)
    cache: ptq.RangeCache = {}
    first = ptq.ranges_by("mse", stats, percentile=99.99, algorithm=algorithm, cache=cache)
    again = ptq.ranges_by("mse", stats, percentile=99.99, algorithm=algorithm, cache=cache)
    assert len(calls) == 2 * len(stats.histograms)  # the second call with the cache computed nothing
    for name in stats.histograms:
        assert plain[name].range_value == first[name].range_value == again[name].range_value
        assert first[name] is not again[name]
    # statistics sharing all but one histogram (the equalized model's): only that one is computed
    changed = dict(stats.histograms)
    changed["a1"] = pt.Histogram(
        counts=stats.histograms["a1"].counts, edges=stats.histograms["a1"].edges * 2, minimum=0.0, maximum=1.0
    )
    shared = ptq.Statistics(histograms=changed, input_means={}, samples=stats.samples)
    ptq.ranges_by("mse", shared, percentile=99.99, algorithm=algorithm, cache=cache)
    assert len(calls) == 2 * len(stats.histograms) + 1
    other = ptq.ranges_by("mse", stats, percentile=99.9, algorithm=algorithm, cache=cache)  # another setting: computed
    assert len(calls) == 3 * len(stats.histograms) + 1 and other["a1"].range_value == plain["a1"].range_value


def _random_histogram(rng: np.random.Generator, kind: int, bins: int) -> np.ndarray:
    if kind == 0:  # dense, noisy
        return rng.poisson(rng.exponential(1000, bins)).astype(np.int64)
    if kind == 1:  # heavy tails
        v = rng.standard_t(3, 50_000)
        return np.histogram(v, bins=bins, range=(-np.abs(v).max(), np.abs(v).max()))[0]
    if kind == 2:  # one-sided (after ReLU) on symmetric edges
        v = np.maximum(rng.normal(0, 1, 50_000), 0)
        return np.histogram(v, bins=bins, range=(-v.max(), v.max()))[0]
    counts = np.zeros(bins, np.int64)  # a few huge spikes
    spikes = int(rng.integers(1, 40))
    counts[rng.integers(0, bins, spikes)] = rng.integers(1, 10**9, spikes)
    return counts


def test_the_entropy_threshold_search_is_onnx_runtimes() -> None:
    from onnxruntime.quantization.calibrate import HistogramCollector

    collector = HistogramCollector(
        method="entropy", symmetric=False, num_bins=512, num_quantized_bins=128, percentile=99.999, scenario="same"
    )
    rng = np.random.default_rng(5)
    for trial in range(10):
        bins = 512 if trial < 8 else int(rng.integers(130, 500))
        counts = _random_histogram(rng, trial % 4, bins)
        reach = float(rng.uniform(0.5, 20))
        edges = np.linspace(-reach, reach, bins + 1).astype(np.float32)
        low, high = np.float32(-reach * rng.uniform(0.5, 1)), np.float32(reach * rng.uniform(0.5, 1))
        expected = collector.get_entropy_threshold((counts, edges, low, high), 128)
        found = ptq.kl_threshold(counts, edges, low, high, 128)
        assert (found[0], found[1]) == (expected[0], expected[1]), trial
        assert found[0].dtype == expected[0].dtype == np.float32


def test_one_blas_thread_gives_the_same_second_moments_and_rounding() -> None:
    from threadpoolctl import threadpool_info

    from edgequant.util.blas import one_blas_thread

    rng = np.random.default_rng(6)
    rows = rng.normal(size=(4096, 192)).astype(np.float32)
    weight = rng.normal(size=(96, 192)).astype(np.float32)

    def moment_and_rounding() -> tuple[np.ndarray, np.ndarray]:
        moment = pt.SecondMoment(192)
        moment.add(rows)
        return moment.matrix, pt.adaptive_rounding(weight, moment.matrix, qmax=127, per_channel=True)

    default = moment_and_rounding()
    with one_blas_thread():
        assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")
        single = moment_and_rounding()
    np.testing.assert_array_equal(single[0], default[0])
    np.testing.assert_array_equal(single[1], default[1])


def test_equalization_kept_gets_the_equalized_models_own_statistics_for_what_follows(tmp_path: Path) -> None:
    from edgequant.backends.onnxruntime.model import read_model
    from edgequant.backends.onnxruntime.options import StaticSettings
    from edgequant.backends.onnxruntime.quantize import FloatModel

    source = _separable_graph(tmp_path / "m.onnx")
    calibration, x = _spiked_batches()
    messages: list[str] = []
    tuned = ptq.tune(
        float_model=FloatModel(path=source, model=read_model(source), preprocessed=False),
        calibration=calibration,  # type: ignore[arg-type]
        settings=StaticSettings(),
        options=ptq.api.PostTraining.bare().model_copy(update={"cross_layer_equalization": ptq.api.Technique.ON}),
        workdir=tmp_path / "ptq",
        log=messages.append,
    )
    assert "cross-layer equalization" in tuned.notes[0]
    passes = [m for m in messages if m.startswith("ptq statistics pass")]
    assert len(passes) == 2 and "equalized" in passes[0]  # the changed tensors beside the source, then the kept model
    full = ptq.collect_statistics(tuned.float_model.path, [x], input_name="input", workdir=tmp_path / "full")
    expected = ptq.ranges_by("minmax", full, percentile=99.999, algorithm=ptq.api.CalibrationAlgorithm.MINMAX)
    chosen = ptq.load_ranges(tuned.ranges_path)
    assert set(chosen.data) == set(full.histograms) | set(full.extremes)
    for name in chosen.data:
        assert chosen[name].range_value == expected[name].range_value, name


def test_depthwise_and_stem_second_moments_are_those_of_their_input_patches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _separable_graph(tmp_path / "m.onnx")
    x = np.random.default_rng(5).normal(size=(12, 3, 12, 12)).astype(np.float32)
    monkeypatch.setattr(pt, "PATCH_MOMENT_SAMPLES", 3)  # every 2nd sample, at most 3: samples 0, 2 and 4
    stats = ptq.collect_statistics(
        source,
        [x[:4], x[4:]],
        input_name="input",
        workdir=tmp_path / "stats",
        second_moments=True,
        chunk=2,
        moment_every=2,
    )
    assert set(stats.second_moments) == {"conv1", "dw", "pw"}
    from onnxruntime import InferenceSession

    model = onnx.load(str(source))
    model.graph.output.extend([helper.make_tensor_value_info("a1", TensorProto.FLOAT, None)])
    (a1,) = InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["a1"], {"input": x})
    geometry = {"kernel": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1]}
    picked = [0, 2, 4]
    stem = pt.patch_columns(x[picked], **geometry).reshape(27, -1).astype(np.float64)
    depthwise = pt.patch_columns(a1[picked], **geometry).astype(np.float64)
    moment = stats.second_moments["conv1"]
    assert isinstance(moment, pt.SecondMoment) and moment.rows == 3 * 144
    np.testing.assert_allclose(moment.matrix, stem @ stem.T, rtol=1e-4, atol=1e-3)
    channels = stats.second_moments["dw"]
    assert isinstance(channels, pt.ChannelSecondMoments) and channels.rows == 3 * 144
    np.testing.assert_allclose(channels.matrix, depthwise @ depthwise.transpose(0, 2, 1), rtol=1e-4, atol=1e-3)
    assert stats.second_moments["pw"].rows == 12 * 144  # a 1x1 layer's moment sees every sample
    # the statistics pass budgets them: 27 x 27 for the stem, 8 channels x 9 x 9 for the depthwise, 8 x 8 for the 1x1
    loaded = onnx.load(str(source))
    extra = ptq.statistics_fixed_bytes(loaded, second_moments=True) - ptq.statistics_fixed_bytes(
        loaded, second_moments=False
    )
    assert extra == (27 * 27 + 8 * 9 * 9 + 8 * 8) * 8


def test_wide_convolutions_with_a_kernel_are_not_rounded(tmp_path: Path) -> None:
    # a 3x3 over 4 channels has 36 weights per output channel: its patch moment would grow with channels x taps
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(6, 4, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["input", "w"], ["out"], name="wide", pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node],
        "wide",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 4, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 6, 8, 8])],
        [w],
    )
    assert ptq.roundable_layers(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])) == {}


@pytest.mark.parametrize("per_channel", [True, False])
def test_depthwise_weights_are_rounded_adaptively_and_quantize_static_keeps_them(
    tmp_path: Path, per_channel: bool
) -> None:
    from edgequant.backends.onnxruntime.model import read_model
    from edgequant.backends.onnxruntime.options import StaticSettings
    from edgequant.backends.onnxruntime.quantize import FloatModel, quantize_qdq, save_ranges

    source = _separable_graph(tmp_path / "m.onnx", middle="Clip")
    # smooth inputs: neighbouring pixels nearly equal, as in photographs
    coarse = np.random.default_rng(6).uniform(0, 1, size=(16, 3, 4, 4)).astype(np.float32)
    x = np.repeat(np.repeat(coarse, 3, axis=2), 3, axis=3)
    stats = ptq.collect_statistics(source, [x], input_name="input", workdir=tmp_path / "stats", second_moments=True)
    rounded = ptq.round_weights_adaptively(
        source, tmp_path / "rounded.onnx", moments=stats.second_moments, weight_qmax=127, per_channel=per_channel
    )
    old, new = _weights(source), _weights(rounded.path)
    if not per_channel:  # one scale for all channels: rounding each channel on its own grid does not apply
        assert rounded.layers == 2 and rounded.with_kernel == 1
        np.testing.assert_array_equal(new["w2"], old["w2"])
        return
    assert rounded.layers == 3 and rounded.with_kernel == 2 and rounded.error_ratio < 1.0
    moment = stats.second_moments["dw"]
    assert isinstance(moment, pt.ChannelSecondMoments)
    flat_old, flat_new = old["w2"].reshape(8, 9), new["w2"].reshape(8, 9)
    nearest = pt.quantize_weights_symmetric(flat_old, qmax=127, per_channel=True)
    assert pt.output_error_per_channel(flat_old, flat_new, moment.matrix) < pt.output_error_per_channel(
        flat_old, nearest, moment.matrix
    )
    ranges = save_ranges(
        ptq.ranges_by("minmax", stats, percentile=99.99, algorithm=ptq.api.CalibrationAlgorithm.MINMAX),
        tmp_path / "r.json",
    )
    out = quantize_qdq(
        float_model=FloatModel(path=rounded.path, model=read_model(rounded.path), preprocessed=False),
        output_path=tmp_path / "q.onnx",
        ranges_path=ranges,
        settings=StaticSettings(per_channel=True, reduce_range=False),
    )
    q, scale = _quantized(onnx.load(str(out)), "w2")
    scales = pt.symmetric_weight_scales(flat_old, qmax=127, per_channel=True)
    np.testing.assert_array_equal(scale, scales)  # the converter's scales are unchanged
    np.testing.assert_array_equal(q.reshape(8, 9), np.round(flat_new / scales[:, None]))  # and it keeps the codes
    assert np.any(q.reshape(8, 9) != np.round(flat_old / scales[:, None]))


@pytest.mark.parametrize("reduce_range", [True, False])
def test_symmetric_weight_codes_are_quantize_statics_per_channel_loop(reduce_range: bool) -> None:
    from onnxruntime.quantization.quant_utils import compute_data_quant_params, quantize_nparray

    from edgequant.backends.onnxruntime.quantize import symmetric_weight_codes

    rng = np.random.default_rng(5)
    weight = (rng.normal(size=(6, 4, 3, 3)) * np.logspace(-9, 1, 6)[:, None, None, None]).astype(np.float32)
    weight[2] = 0.0  # a dead channel: scale 1.0
    weight[3] = np.abs(weight[3])  # one-signed
    for axis in (0, 1, None):
        scales, codes = symmetric_weight_codes(weight, axis=axis, reduce_range=reduce_range)
        channels = range(weight.shape[axis]) if axis is not None else [None]
        for i, channel in enumerate(channels):
            data = weight if channel is None else weight.take(channel, axis)
            zero, scale = compute_data_quant_params(data.ravel(), TensorProto.INT8, True, reduce_range=reduce_range)
            expected = quantize_nparray(TensorProto.INT8, data.ravel(), scale, zero)
            got = codes if channel is None else codes.take(channel, axis)
            assert np.ravel(scales)[i] == scale and scales.dtype == np.float32
            np.testing.assert_array_equal(got.ravel(), expected)
        assert codes.dtype == np.int8 and codes.shape == weight.shape
