"""spec.ptq on the tflite-int8 path: bias correction on real Keras weights and real data, through the worker too."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.api.exitcodes import ExitCode

pytestmark = pytest.mark.integration


def _calibration(fashion_mnist: Any, samples: int = 300) -> np.ndarray:
    return (fashion_mnist.train_x[-samples:, ..., None] / np.float32(255)).astype(np.float32)


def _with_quantized_kernels(model: Any) -> Any:
    """``model`` with every Conv/Dense kernel replaced by TFLite's int8 weights (folded BatchNorm factors ignored:
    per-channel symmetric quantization commutes with them), the float stand-in for what the converter ships."""
    from edgequant.analysis import post_training as pt
    from edgequant.backends.tflite import ptq
    from edgequant.backends.tflite.tf import import_keras

    keras = import_keras()
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for layer in clone.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "Dense"):
            weights = layer.get_weights()
            onnx_layout, _ = ptq.keras_weight_as_onnx(kind, weights[0])
            quantized = pt.quantize_weights_symmetric(onnx_layout, qmax=127, per_channel=True)
            weights[0] = quantized.T if kind == "Dense" else quantized.transpose(2, 3, 1, 0)
            layer.set_weights(weights)
    return clone


def test_bias_correction_cancels_the_first_layers_mean_shift(trained_cnn: Path, fashion_mnist: Any) -> None:
    from edgequant.backends.tflite import ptq
    from edgequant.backends.tflite.tf import import_keras

    keras = import_keras()
    model = keras.models.load_model(str(trained_cnn), compile=False)
    x = _calibration(fashion_mnist)
    plan = ptq.plan_bias_correction(model)
    assert [(t.kind, t.batch_norm) for t in plan.targets] == [
        ("Conv2D", True),
        ("Conv2D", True),
        ("Dense", False),
        ("Dense", False),
    ]
    means = ptq.input_means(model, [t.layer for t in plan.targets], iter([x[:150], x[150:]]))
    np.testing.assert_allclose(means[plan.targets[0].layer], [x.mean()], rtol=1e-5)
    corrected, changed = ptq.bias_corrected(model, plan, means)
    assert changed == 4

    first_bn = plan.targets[0].target

    def bn_means(m: Any) -> np.ndarray:
        probe = keras.Model(m.inputs, m.get_layer(first_bn).output)
        return np.asarray(probe.predict_on_batch(x)).mean(axis=(0, 1, 2))

    reference = bn_means(model)
    shift_before = np.abs(bn_means(_with_quantized_kernels(model)) - reference).max()
    shift_after = np.abs(bn_means(_with_quantized_kernels(corrected)) - reference).max()
    # exact but for the zero border of 'same' padding (Fashion-MNIST's borders are near black anyway)
    assert shift_before > 0 and shift_after <= 0.05 * shift_before, (shift_before, shift_after)


def test_the_worker_reports_the_held_out_choice(
    trained_cnn: Path, fmnist_files: dict[str, Path], spec_for: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    from edgequant.worker.progress import SilentProgress
    from edgequant.worker.runner import run_job, spec_from_document

    spec = spec_for(
        "tflite-int8",
        model=trained_cnn.as_uri(),
        out=(tmp_path / "out").as_uri() + "/",
        calibration=fmnist_files["calibration"].as_uri() + "/",
        evaluation=fmnist_files["test.npz"].as_uri(),
        mixedPrecision={"sensitivity": "off"},
    )
    result, _ctx = run_job(spec_from_document(spec)[0], workdir=tmp_path / "work", progress=SilentProgress())
    assert result.exit_code == ExitCode.SUCCESS, result.message
    notes = json.loads((tmp_path / "out" / "report.json").read_text())["notes"]
    (held_out,) = [n for n in notes if n.startswith("ptq: held-out top-1 agreement with FP32 on 60 calibration")]
    assert (
        "converter " in held_out
        and "bias correction " in held_out
        and "(ranges from the other 240, calibrated once on the 'converter' weights)" in held_out
    )
    assert "adaptive rounding + bias correction " in held_out
    # both off is the converter alone: no ptq note
    spec["ptq"] = {"biasCorrection": "off", "adaptiveRounding": "off"}
    spec["output"]["uri"] = (tmp_path / "off").as_uri() + "/"
    result, _ctx = run_job(spec_from_document(spec)[0], workdir=tmp_path / "work-off", progress=SilentProgress())
    assert result.exit_code == ExitCode.SUCCESS, result.message
    notes = json.loads((tmp_path / "off" / "report.json").read_text())["notes"]
    assert not [n for n in notes if n.startswith("ptq:")]


def _separable_model(rng: np.random.Generator) -> Any:
    """Stem conv (3x3, stride 2), depthwise (multiplier 2), 1x1 conv, each with a BatchNormalization the converter
    folds, and a Dense head: every kernel layout adaptive rounding handles."""
    from edgequant.backends.tflite.tf import import_keras

    keras = import_keras()
    layers = keras.layers
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.ReLU(6.0)(layers.BatchNormalization(name="stem_bn")(x))
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False, name="dw")(x)
    x = layers.ReLU(6.0)(layers.BatchNormalization(name="dw_bn")(x))
    x = layers.BatchNormalization(name="pw_bn")(layers.Conv2D(6, 1, use_bias=False, name="pw")(x))
    outputs = layers.Dense(5, name="fc")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            gamma, var = rng.uniform(0.5, 2, n), rng.uniform(0.5, 2, n)
            layer.set_weights(
                [a.astype(np.float32) for a in (gamma, rng.normal(0, 0.1, n), rng.normal(0, 0.1, n), var)]
            )
    return model


def test_the_converter_stores_exactly_the_adaptively_rounded_codes(tmp_path: Path) -> None:
    """Through BatchNormalization folding, for Conv2D, DepthwiseConv2D (multiplier 2) and Dense: the int8 weights in
    the converted model are round(k_c * W_rounded / scale_c) with no rounding left to the converter."""
    from ai_edge_litert.interpreter import Interpreter

    from edgequant.backends.base import Batches
    from edgequant.backends.tflite import layers as tl
    from edgequant.backends.tflite import ptq

    rng = np.random.default_rng(0)
    model = _separable_model(rng)
    x = rng.uniform(-1, 1, (40, 16, 16, 3)).astype(np.float32)
    targets = ptq.plan_adaptive_rounding(model)
    assert [(t.layer, t.kind) for t in targets] == [
        ("stem", "Conv2D"),
        ("dw", "DepthwiseConv2D"),
        ("pw", "Conv2D"),
        ("fc", "Dense"),
    ]
    stats = ptq.input_statistics(model, ["dw"], iter([x[:20], x[20:]]), moments=targets)
    # the depthwise moment by definition: 'same' 3x3 patches of its input, per channel
    from edgequant.backends.tflite.tf import import_keras

    keras = import_keras()
    a = np.asarray(keras.Model(model.inputs, model.get_layer("stem_bn").output).predict_on_batch(x))
    a = np.minimum(np.maximum(a, 0), 6)
    padded = np.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)))
    taps = np.stack([padded[:, i : i + 8, j : j + 8] for i in range(3) for j in range(3)], axis=-2)
    taps = taps.reshape(-1, 9, a.shape[-1])
    np.testing.assert_allclose(stats.moments["dw"], np.einsum("ptc,puc->ctu", taps, taps), rtol=1e-4)
    np.testing.assert_allclose(stats.means["dw"], a.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)

    rounded, share = ptq.adaptively_rounded(model, targets, stats.moments)
    assert share < 1.0
    data = Batches(make_iter=lambda: iter([(x, np.zeros(len(x)))]), count=len(x), batch_size=len(x))
    int8 = tl.quantize_calibrated(ptq.calibrate(rounded, data), io_dtype="uint8")
    interpreter = Interpreter(model_content=int8)
    interpreter.allocate_tensors()

    def factor(bn: str) -> np.ndarray:
        layer = rounded.get_layer(bn)
        return np.asarray(layer.gamma) / np.sqrt(np.asarray(layer.moving_variance) + layer.epsilon)

    kernel = {name: np.asarray(rounded.get_layer(name).kernel) for name in ("stem", "dw", "pw", "fc")}
    folded = {  # in TFLite's layouts: conv [out, kh, kw, in], depthwise [1, kh, kw, in * mult], dense [out, in]
        "stem": kernel["stem"].transpose(3, 0, 1, 2) * factor("stem_bn")[:, None, None, None],
        "dw": kernel["dw"].reshape(1, 3, 3, 16) * factor("dw_bn"),
        "pw": kernel["pw"].transpose(3, 0, 1, 2) * factor("pw_bn")[:, None, None, None],
        "fc": kernel["fc"].T,
    }
    checked = set()
    for detail in interpreter.get_tensor_details():
        owner = [name for name in folded if f"/{name}_1/" in detail["name"]]
        params = detail["quantization_parameters"]
        if detail["dtype"] != np.int8 or len(owner) != 1 or len(params["scales"]) < 2:  # weights: per channel
            continue
        (name,) = owner
        codes = interpreter.get_tensor(detail["index"]).astype(np.float64)
        shape = [1] * codes.ndim
        shape[params["quantized_dimension"]] = -1
        ours = np.round(folded[name] / np.asarray(params["scales"]).reshape(shape))
        np.testing.assert_array_equal(ours, codes, err_msg=name)
        checked.add(name)
    assert checked == set(folded)


def test_the_statistics_come_from_every_nth_sample_up_to_the_limit() -> None:
    from edgequant.backends.tflite import ptq

    rng = np.random.default_rng(1)
    model = _separable_model(rng)
    x = rng.uniform(-1, 1, (40, 16, 16, 3)).astype(np.float32)
    targets = ptq.plan_adaptive_rounding(model)
    every_third = ptq.input_statistics(model, ["dw", "pw"], iter([x[:25], x[25:]]), moments=targets, every=3, limit=5)
    assert every_third.samples == 5
    picked = ptq.input_statistics(model, ["dw", "pw"], iter([x[[0, 3, 6, 9, 12]]]), moments=targets)
    for target in targets:
        np.testing.assert_allclose(every_third.moments[target.layer], picked.moments[target.layer], rtol=1e-5)
    for layer in ("dw", "pw"):
        np.testing.assert_allclose(every_third.means[layer], picked.means[layer], rtol=1e-5, atol=1e-7)
    spread = ptq.input_statistics(model, ["dw"], iter([x[:25], x[25:]]), every=3)  # no limit: 0, 3, ..., 39
    assert spread.samples == 14


def _int8_constants(model: bytes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel quantized constants (kernels and their biases): codes and per-channel scales."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    found = {}
    for detail in interpreter.get_tensor_details():
        params = detail["quantization_parameters"]
        if len(params["scales"]) >= 2:
            found[detail["name"]] = (interpreter.get_tensor(detail["index"]).copy(), np.asarray(params["scales"]))
    return found


def _activation_scales(model: bytes) -> dict[str, float]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    return {
        d["name"]: float(d["quantization_parameters"]["scales"][0])
        for d in interpreter.get_tensor_details()
        if d["dtype"] == np.int8 and len(d["quantization_parameters"]["scales"]) == 1
    }


def test_a_weight_variant_takes_the_first_calibrations_ranges_with_its_own_weights() -> None:
    """The rounded and corrected candidates quantize to the int8 weights their own calibration gives, with the
    activation ranges of the first calibration: one converter calibration serves every candidate."""
    from edgequant.backends.base import Batches
    from edgequant.backends.tflite import layers as tl
    from edgequant.backends.tflite import ptq

    rng = np.random.default_rng(2)
    model = _separable_model(rng)
    fc = model.get_layer("fc")  # a non-zero bias, as trained heads have: a zero one is not stored (see below)
    fc.set_weights([np.asarray(fc.kernel), rng.normal(0, 0.1, 5).astype(np.float32)])
    x = rng.uniform(-1, 1, (40, 16, 16, 3)).astype(np.float32)
    data = Batches(make_iter=lambda: iter([(x, np.zeros(len(x)))]), count=len(x), batch_size=len(x))
    targets = ptq.plan_adaptive_rounding(model)
    stats = ptq.input_statistics(
        model, [t.layer for t in ptq.plan_bias_correction(model).targets], iter([x]), moments=targets
    )
    rounded, _share = ptq.adaptively_rounded(model, targets, stats.moments)
    variant, changed = ptq.bias_corrected(rounded, ptq.plan_bias_correction(model), stats.means, float_model=model)
    assert changed > 0
    first = ptq.calibrate(model, data)
    logged: list[str] = []
    reused = ptq.recalibrated(first, variant, data, logged.append)
    assert logged == []
    own = tl.quantize_calibrated(ptq.calibrate(variant, data))
    ours = tl.quantize_calibrated(reused)
    weights, expected = _int8_constants(ours), _int8_constants(own)
    assert len(weights) >= 8 and weights.keys() == expected.keys()  # four kernels and their biases
    for name, (codes, scales) in expected.items():
        mine, my_scales = weights[name]
        if codes.dtype == np.int8:  # kernels: the weights alone set their codes
            np.testing.assert_array_equal(mine, codes, err_msg=name)
        else:  # int32 biases: step input_scale x weight_scale, so their codes follow the first calibration's ranges
            assert (np.abs(mine * my_scales - codes * scales) <= np.maximum(my_scales, scales)).all(), name
    assert _activation_scales(ours) == _activation_scales(tl.quantize_calibrated(first))
    before = _int8_constants(tl.quantize_calibrated(first))
    assert any(not np.array_equal(weights[name][0], before[name][0]) for name in before)


def test_a_variant_whose_graph_differs_is_calibrated_on_its_own() -> None:
    """The converter drops a zero bias; bias correction makes it non-zero, so the variant has one constant more."""
    from edgequant.backends.base import Batches
    from edgequant.backends.tflite import layers as tl
    from edgequant.backends.tflite import ptq
    from edgequant.backends.tflite.tf import import_keras

    keras = import_keras()
    rng = np.random.default_rng(3)
    model = _separable_model(rng)
    assert not np.asarray(model.get_layer("fc").bias).any()
    x = rng.uniform(-1, 1, (20, 16, 16, 3)).astype(np.float32)
    data = Batches(make_iter=lambda: iter([(x, np.zeros(len(x)))]), count=len(x), batch_size=len(x))
    plan = ptq.plan_bias_correction(model)
    variant, _changed = ptq.bias_corrected(
        model, plan, ptq.input_means(model, [t.layer for t in plan.targets], iter([x]))
    )
    first = ptq.calibrate(model, data)
    logged: list[str] = []
    own = ptq.recalibrated(first, variant, data, logged.append)
    assert len(logged) == 1 and "calibrating it on its own" in logged[0]
    assert tl.quantize_calibrated(own) == tl.quantize_calibrated(ptq.calibrate(variant, data))
    inputs = keras.Input((16, 16, 3))
    other = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(inputs)))
    assert tl.with_constants_of(first, ptq.calibrate(other, data)) is None


def test_a_pinned_layer_gets_the_source_float_weights_back_and_the_others_keep_their_tuned_codes() -> None:
    from ai_edge_litert.interpreter import Interpreter

    from edgequant.backends.base import Batches
    from edgequant.backends.tflite import layers as tl
    from edgequant.backends.tflite import ptq
    from edgequant.backends.tflite.tf import import_tf

    rng = np.random.default_rng(4)
    model = _separable_model(rng)
    x = rng.uniform(-1, 1, (40, 16, 16, 3)).astype(np.float32)
    data = Batches(make_iter=lambda: iter([(x, np.zeros(len(x)))]), count=len(x), batch_size=len(x))
    targets = ptq.plan_adaptive_rounding(model)
    stats = ptq.input_statistics(model, [], iter([x]), moments=targets)
    rounded, _share = ptq.adaptively_rounded(model, targets, stats.moments)
    tuned = ptq.calibrate(rounded, data)
    source_float = bytes(import_tf().lite.TFLiteConverter.from_keras_model(model).convert())
    nodes = tl.map_layers(tuned, keras_model=rounded).nodes_of(["dw_bn"])  # the folded depthwise op's layer
    restored = tl.with_constants_of(tuned, source_float, of_ops=nodes)
    assert restored is not None

    def kernels(model_bytes: bytes) -> dict[str, np.ndarray]:
        """Every 4-d constant of the INT8 model with the depthwise op pinned: conv kernels, int8 or float."""
        interpreter = Interpreter(model_content=tl.quantize_calibrated(model_bytes, keep_float_nodes=nodes))
        interpreter.allocate_tensors()
        found = {}
        for d in interpreter.get_tensor_details():
            if len(d["shape"]) == 4 and ("/stem_1/" in d["name"] or "/dw_1/" in d["name"]):
                with contextlib.suppress(ValueError):  # activations have no data before a run
                    found[d["name"]] = interpreter.get_tensor(d["index"]).copy()
        return found

    ours, still_tuned = kernels(restored), kernels(tuned)
    (dw,) = [name for name in ours if "/dw_1/" in name and ours[name].dtype == np.float32]
    bn = model.get_layer("dw_bn")
    factor = np.asarray(bn.gamma) / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
    folded = np.asarray(model.get_layer("dw").kernel).reshape(1, 3, 3, 16) * factor
    np.testing.assert_allclose(ours[dw], folded, rtol=1e-5, atol=1e-6)  # the source's folded weights, not rounded
    assert not np.allclose(still_tuned[dw], folded, rtol=1e-5, atol=1e-6)
    (stem,) = [name for name in ours if "/stem_1/" in name and ours[name].dtype == np.int8]
    np.testing.assert_array_equal(ours[stem], still_tuned[stem])  # the int8 layers keep the rounded codes
