"""The pure parts of spec.ptq on the TFLite path: Keras kernel layouts and the output shift of int8 weights."""

from __future__ import annotations

import numpy as np
import pytest

from edgequant.analysis import post_training as pt
from edgequant.api import v1alpha1 as api
from edgequant.backends.base import held_out_mask
from edgequant.backends.tflite import ptq


def _conv_nhwc(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'valid' Conv2D of x [h, w, in] with a Keras kernel [kh, kw, in, out], by definition."""
    kh, kw, _cin, cout = kernel.shape
    h, w = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    out = np.zeros((h, w, cout))
    for i in range(h):
        for j in range(w):
            out[i, j] = np.tensordot(x[i : i + kh, j : j + kw], kernel, axes=3)
    return out


def _depthwise_nhwc(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'valid' DepthwiseConv2D with a Keras kernel [kh, kw, in, mult]: output channel c * mult + m."""
    kh, kw, cin, mult = kernel.shape
    h, w = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    out = np.zeros((h, w, cin * mult))
    for i in range(h):
        for j in range(w):
            patch = x[i : i + kh, j : j + kw]  # [kh, kw, in]
            out[i, j] = np.einsum("abc,abcm->cm", patch, kernel).reshape(-1)
    return out


def _quantized_keras(kind: str, kernel: np.ndarray) -> np.ndarray:
    """TFLite's int8 weights of a Keras kernel, dequantized, per output channel, by direct definition."""
    if kind == "DepthwiseConv2D":
        kh, kw, cin, mult = kernel.shape
        flat = kernel.reshape(kh, kw, cin * mult)
        scale = np.abs(flat).max(axis=(0, 1)) / 127
        return (np.clip(np.round(flat / scale), -127, 127) * scale).reshape(kernel.shape)
    scale = np.abs(kernel).max(axis=tuple(range(kernel.ndim - 1))) / 127
    return np.clip(np.round(kernel / scale), -127, 127) * scale


@pytest.mark.parametrize(("kind", "shape"), [("Conv2D", (3, 3, 4, 5)), ("DepthwiseConv2D", (3, 3, 4, 2))])
def test_output_shift_is_the_mean_change_of_the_layer_output(kind: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=shape).astype(np.float32)
    channel_means = rng.normal(size=shape[2])
    x = np.broadcast_to(channel_means, (6, 6, shape[2]))  # constant per channel: no border effect, exact
    layer = _conv_nhwc if kind == "Conv2D" else _depthwise_nhwc
    measured = (layer(x, _quantized_keras(kind, kernel)) - layer(x, kernel)).mean(axis=(0, 1))
    np.testing.assert_allclose(ptq.output_shift(kind, kernel, channel_means), measured, rtol=1e-4, atol=1e-6)


def test_dense_output_shift_uses_per_output_channel_weights() -> None:
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(6, 3)).astype(np.float32)  # Keras Dense [in, out]
    mean = rng.normal(size=6)
    expected = mean @ (_quantized_keras("Dense", kernel) - kernel)
    np.testing.assert_allclose(ptq.output_shift("Dense", kernel, mean), expected, rtol=1e-4, atol=1e-6)


def test_folding_a_per_channel_factor_scales_the_quantization_error_by_it() -> None:
    """Why the shift can be computed on the unfolded weights: the converter quantizes k_c * W per channel."""
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)
    factor = rng.uniform(-3, 3, size=8).astype(np.float32)
    folded = weight * factor[:, None, None, None]
    error_folded = pt.quantize_weights_symmetric(folded, qmax=127, per_channel=True) - folded
    error = pt.quantize_weights_symmetric(weight, qmax=127, per_channel=True) - weight
    np.testing.assert_allclose(error_folded, error * factor[:, None, None, None], atol=1e-5)


def test_held_out_mask_takes_every_nth_sample_across_batches() -> None:
    first, second = held_out_mask(0, 7, 5), held_out_mask(7, 7, 5)
    held = np.flatnonzero(np.concatenate([first, second]))
    assert held.tolist() == [4, 9]


def _patches(x: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """'valid' stride-1 patches of x [n, h, w, c] as [positions, kh, kw, c]."""
    n, h, w, _channels = x.shape
    return np.stack(
        [x[i, r : r + kh, s : s + kw] for i in range(n) for r in range(h - kh + 1) for s in range(w - kw + 1)]
    )


@pytest.mark.parametrize(
    ("kind", "shape"), [("Conv2D", (3, 3, 4, 5)), ("DepthwiseConv2D", (3, 3, 4, 2)), ("Dense", (6, 3))]
)
def test_adaptive_rounding_stays_on_the_converters_grid_and_lowers_the_output_error(
    kind: str, shape: tuple[int, ...]
) -> None:
    """The converter re-derives each channel's scale from the absmax and rounds to nearest: it must store exactly our
    codes; and the layer's output error on the inputs the moment came from must not exceed round-to-nearest's."""
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=shape).astype(np.float32)
    if kind == "Dense":
        mixing = rng.normal(size=(shape[0], shape[0]))
        rows = rng.normal(size=(400, shape[0])) @ mixing + 0.5  # correlated, off-centre inputs
        moment = rows.T @ rows
        outputs = [rows]
    else:
        channels = shape[2]
        x = rng.normal(size=(4, 7, 7, channels)).cumsum(axis=1) + 0.3  # spatially correlated
        patches = _patches(x, shape[0], shape[1])
        if kind == "Conv2D":
            flat = patches.reshape(len(patches), -1)
            moment = flat.T @ flat
        else:
            taps = patches.reshape(len(patches), -1, channels)
            moment = np.einsum("ptc,puc->ctu", taps, taps)
        outputs = [x]
    rounded = ptq.rounded_kernel(kind, kernel, moment)
    assert rounded.shape == kernel.shape and rounded.dtype == np.float32
    np.testing.assert_allclose(_quantized_keras(kind, rounded), rounded, rtol=0, atol=1e-6)
    axes = (0, 1) if kind == "DepthwiseConv2D" else tuple(range(kernel.ndim - 1))
    np.testing.assert_array_equal(np.abs(rounded).max(axis=axes), np.abs(kernel).max(axis=axes))

    def error(weights: np.ndarray) -> float:
        if kind == "Dense":
            return float(np.sum((outputs[0] @ (weights - kernel)) ** 2))
        layer = _conv_nhwc if kind == "Conv2D" else _depthwise_nhwc
        return float(sum(np.sum(layer(x, weights - kernel) ** 2) for x in outputs[0]))

    nearest = _quantized_keras(kind, kernel)
    assert error(rounded) < error(nearest)


def _candidate_names(**techniques: str) -> list[str]:
    options = api.PostTraining(**{k: api.Technique(v) for k, v in techniques.items()})
    return [c.name for c in ptq.candidates_for(options)]


def test_candidates_follow_off_auto_on() -> None:
    both = "adaptive rounding + bias correction"
    assert _candidate_names() == ["converter", "bias correction", both]
    assert _candidate_names(adaptive_rounding="off") == ["converter", "bias correction"]
    assert _candidate_names(bias_correction="off") == ["converter", "adaptive rounding"]
    assert _candidate_names(bias_correction="on") == ["bias correction", both]
    assert _candidate_names(adaptive_rounding="on") == [both]
    assert _candidate_names(adaptive_rounding="on", bias_correction="off") == ["adaptive rounding"]
    assert _candidate_names(bias_correction="on", adaptive_rounding="off") == ["bias correction"]
