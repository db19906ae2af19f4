"""The pure parts of spec.ptq on the TFLite path: Keras kernel layouts and the output shift of int8 weights."""

from __future__ import annotations

import numpy as np
import pytest

from edgequant.analysis import post_training as pt
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
