"""Post-training quantization techniques as pure numpy: what the bare converters do not do.

Framework-free so every backend can use them on float weights before its
converter runs (graph plumbing lives in the backend):

- cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization"):
  rescale the output channels of one layer and the input channels of the
  next so both have the same per-channel weight range; exact for layers
  joined by nothing or by a positively homogeneous activation (ReLU);
- bias correction: the expected output shift a layer's weight quantization
  causes, ``(W_q - W) E[x]``, subtracted from its bias, with ``E[x]``
  measured on calibration data;
- activation range search: the clipping range that minimises the expected
  squared quantization error on a calibration histogram, instead of the raw
  extremes (MinMax);
- adaptive weight rounding (GPTQ / OBQ, Frantar et al. 2022): each weight
  column rounded in turn onto the converter's own symmetric grid, the rounding
  error spread over the columns not yet rounded through the Cholesky factor of
  the inverse input second moment, so the layer's output error, not each
  weight's, is what is minimised; convolutions with a kernel see their input
  as patches (``patch_columns``), depthwise ones with a second moment per
  channel (``ChannelSecondMoments``, ``adaptive_rounding_per_channel``);
- percentile and histogram re-binning helpers, and the held-out choice among
  candidates by top-1 agreement with FP32.

Weight layout follows ONNX: ``[out, in / group, *kernel]`` for convolutions,
``[out, in]`` for fully connected layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# --------------------------------------------------------------------------- cross-layer equalization


def output_channel_ranges(weight: np.ndarray) -> np.ndarray:
    """max |w| per output channel (axis 0)."""
    ranges: np.ndarray = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1)
    return ranges


def input_channel_ranges(weight: np.ndarray, *, depthwise: bool) -> np.ndarray:
    """max |w| per input channel: axis 1 for a dense convolution, axis 0 for a depthwise one (one input per output)."""
    if depthwise:
        return output_channel_ranges(weight)
    ranges: np.ndarray = np.abs(np.moveaxis(weight, 1, 0).reshape(weight.shape[1], -1)).max(axis=1)
    return ranges


def equalization_scales(range_out: np.ndarray, range_in: np.ndarray) -> np.ndarray:
    """Per-channel s with range_out / s == range_in * s == sqrt(range_out * range_in); 1 where a range is zero."""
    out = np.asarray(range_out, dtype=np.float64)
    inp = np.asarray(range_in, dtype=np.float64)
    valid = (out > 0) & (inp > 0)
    scales = np.ones_like(out)
    scales[valid] = np.sqrt(out[valid] / inp[valid])
    return scales


@dataclass
class ConvWeights:
    """One convolution's float parameters, as equalization rescales them."""

    weight: np.ndarray
    bias: np.ndarray | None
    depthwise: bool = False
    """Group count equals channel count: input channel c feeds output channel c only."""


def equalize_pair(first: ConvWeights, second: ConvWeights) -> np.ndarray:
    """Balance ``first``'s output channels against ``second``'s input channels in place; returns the scales used.

    y = second(act(first(x))) is unchanged for act in {identity, ReLU}:
    first's channel c is divided by s_c (weights and bias), second's input
    channel c multiplied by s_c.
    """
    scales = equalization_scales(
        output_channel_ranges(first.weight), input_channel_ranges(second.weight, depthwise=second.depthwise)
    )
    shape_out = (-1,) + (1,) * (first.weight.ndim - 1)
    first.weight = (first.weight / scales.reshape(shape_out)).astype(first.weight.dtype)
    if first.bias is not None:
        first.bias = (first.bias / scales).astype(first.bias.dtype)
    if second.depthwise:
        second.weight = (second.weight * scales.reshape((-1,) + (1,) * (second.weight.ndim - 1))).astype(
            second.weight.dtype
        )
    else:
        second.weight = (second.weight * scales.reshape((1, -1) + (1,) * (second.weight.ndim - 2))).astype(
            second.weight.dtype
        )
    return scales


def equalize_pairs(
    layers: dict[str, ConvWeights], pairs: Sequence[tuple[str, str]], *, iterations: int = 20, tolerance: float = 1e-4
) -> int:
    """Equalize every (first, second) pair, sweeping until no scale moves by more than ``tolerance``; returns the sweeps run.

    A layer may be the second of one pair and the first of the next (the
    depthwise convolution of a separable block): repeated sweeps converge.
    """
    for sweep in range(1, iterations + 1):
        moved = 0.0
        for a, b in pairs:
            scales = equalize_pair(layers[a], layers[b])
            moved = max(moved, float(np.max(np.abs(np.log(scales)))) if scales.size else 0.0)
        if moved < tolerance:
            return sweep
    return iterations


# --------------------------------------------------------------------------- weight quantization and bias correction


def quantize_weights_symmetric(weight: np.ndarray, *, qmax: int, per_channel: bool, axis: int = 0) -> np.ndarray:
    """Weights after symmetric integer quantization to [-qmax, qmax] (zero point 0), dequantized back to float.

    ``qmax`` 127 is int8's symmetric range, 64 the 7-bit reduce_range one;
    per channel along ``axis`` (the output channels).
    """
    w = np.asarray(weight, dtype=np.float32)
    if per_channel:
        moved = np.moveaxis(w, axis, 0)
        absmax = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
        scale = (absmax / qmax).astype(np.float32)
        scale[scale == 0] = 1.0
        shape = (-1,) + (1,) * (moved.ndim - 1)
        q = np.clip(np.round(moved / scale.reshape(shape)), -qmax, qmax) * scale.reshape(shape)
        dequantized: np.ndarray = np.moveaxis(q, 0, axis).astype(np.float32)
        return dequantized
    absmax = float(np.abs(w).max())
    scale = np.float32(absmax / qmax) if absmax > 0 else np.float32(1.0)
    return (np.clip(np.round(w / scale), -qmax, qmax) * scale).astype(np.float32)


def conv_output_shift(weight_error: np.ndarray, input_mean: np.ndarray, *, group: int = 1) -> np.ndarray:
    """E[(W_q - W) x] per output channel of a convolution (spatial means; border padding ignored).

    ``weight_error`` is [out, in / group, *kernel], ``input_mean`` the mean of
    each of the ``in`` input channels.
    """
    out_ch, in_per_group = weight_error.shape[0], weight_error.shape[1]
    per_tap = weight_error.reshape(out_ch, in_per_group, -1).sum(axis=2)  # [out, in/group]
    outs_per_group = out_ch // group
    means = np.asarray(input_mean, dtype=np.float64).reshape(group, in_per_group)
    group_of_output = np.arange(out_ch) // outs_per_group
    shift: np.ndarray = (per_tap * means[group_of_output]).sum(axis=1)
    return shift


def dense_output_shift(weight_error: np.ndarray, input_mean: np.ndarray) -> np.ndarray:
    """E[(W_q - W) x] per output of a fully connected layer; ``weight_error`` is [out, in]."""
    shift: np.ndarray = weight_error.astype(np.float64) @ np.asarray(input_mean, dtype=np.float64)
    return shift


def corrected_bias(bias: np.ndarray | None, shift: np.ndarray) -> np.ndarray:
    """The bias that cancels the expected output shift of quantized weights."""
    base = np.zeros(shift.shape, dtype=np.float64) if bias is None else np.asarray(bias, dtype=np.float64)
    bias_q: np.ndarray = (base - shift).astype(np.float32)
    return bias_q


# --------------------------------------------------------------------------- adaptive weight rounding


#: Calibration samples whose input patches give adaptive rounding's second moments: a moment of taps x taps (or
#: kh*kw*in squared) entries converges long before the pass ends, and patches cost 9-25x an activation's memory and time.
PATCH_MOMENT_SAMPLES = 64


def moment_sample_stride(count: int, *, limit: int = PATCH_MOMENT_SAMPLES) -> int:
    """Take every n-th of ``count`` calibration samples for the patch moments: at most ``limit``, spread over the set."""
    if count <= 0 or limit <= 0:
        raise ValueError(f"count and limit must be positive (got {count}, {limit})")
    return max(1, -(-count // limit))


def moment_samples_picked(start: int, count: int, *, every: int, taken: int, limit: int | None) -> np.ndarray:
    """Which of ``count`` samples, from position ``start`` of the set, a moment pass measures: every ``every``-th,
    until ``limit`` are taken (``taken`` so far; None: no limit). One rule for both backends' statistics passes."""
    picked: np.ndarray = np.arange(start, start + count) % every == 0
    if limit is not None:
        picked &= np.cumsum(picked) + taken <= limit
    return picked


class SecondMoment:
    """sum x x^T over the rows of a layer's inputs, accumulated batch by batch (memory: in x in, never the inputs)."""

    def __init__(self, features: int) -> None:
        self.matrix = np.zeros((features, features), dtype=np.float64)
        self.rows = 0

    def add(self, rows: np.ndarray) -> None:
        """``rows`` is [samples, features]: one row per input vector (a spatial position of a 1x1 convolution)."""
        x = np.asarray(rows, dtype=np.float32).reshape(-1, self.matrix.shape[0])
        self.matrix += (x.T @ x).astype(np.float64)
        self.rows += len(x)


def conv1x1_rows(activation: np.ndarray) -> np.ndarray:
    """A 1x1 convolution's input [N, C, *spatial] as rows [N * spatial, C]: each position is one input vector."""
    a = np.asarray(activation)
    rows: np.ndarray = np.moveaxis(a, 1, -1).reshape(-1, a.shape[1])
    return rows


class ChannelSecondMoments:
    """sum x x^T per channel over a depthwise convolution's input patches (memory: channels x taps x taps)."""

    def __init__(self, channels: int, taps: int) -> None:
        self.matrix = np.zeros((channels, taps, taps), dtype=np.float64)
        self.rows = 0

    def add(self, columns: np.ndarray) -> None:
        """``columns`` is [channels, taps, positions] (``patch_columns``): each position is one input patch."""
        x = np.asarray(columns, dtype=np.float32)
        self.matrix += np.matmul(x, x.transpose(0, 2, 1)).astype(np.float64)
        self.rows += x.shape[2]


def patch_columns(
    activation: np.ndarray,
    *,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
) -> np.ndarray:
    """A 2-D convolution's input [N, C, H, W] as the patches its kernel sees: [C, kh * kw, N * Ho * Wo].

    Taps are in the weight's order (row-major over the kernel), ``pads`` in ONNX order (top, left, bottom,
    right); a convolution's output at one position is the sum over channels of its weight row times that
    position's column. Strided positions only, so a stride-2 layer costs a quarter of a stride-1 one.
    """
    a = np.asarray(activation, dtype=np.float32)
    n, c, h, w = a.shape
    kh, kw = kernel
    padded = np.pad(a, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    out_h = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    out_w = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    taps = np.empty((c, kh * kw, n, out_h, out_w), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            top, left = i * dilations[0], j * dilations[1]
            window = padded[
                :,
                :,
                top : top + strides[0] * (out_h - 1) + 1 : strides[0],
                left : left + strides[1] * (out_w - 1) + 1 : strides[1],
            ]
            taps[:, i * kw + j] = window.transpose(1, 0, 2, 3)
    columns: np.ndarray = taps.reshape(c, kh * kw, n * out_h * out_w)
    return columns


def adaptive_rounding_per_channel(
    weight: np.ndarray, second_moments: np.ndarray, *, qmax: int, dampening: float = 0.01
) -> np.ndarray:
    """``weight`` [channels, taps] of a depthwise convolution, each row rounded as ``adaptive_rounding`` rounds it
    against its own channel's input second moment [channels, taps, taps] on its own per-channel grid (all channels
    at once: a layer has hundreds of rows of 9 or 25 taps).

    A depthwise channel sees a smooth image through few taps, so the error that matters is the one along the
    patch's mean: rounding that keeps each row's error sum near zero costs almost nothing; round-to-nearest does not.
    """
    w_in = np.asarray(weight, dtype=np.float32)
    channels, taps = w_in.shape
    if second_moments.shape != (channels, taps, taps):
        raise ValueError(f"second moments {second_moments.shape} do not match weight {w_in.shape}")
    scales = symmetric_weight_scales(w_in, qmax=qmax, per_channel=True).astype(np.float64)
    rows = np.arange(channels)
    anchor = np.abs(w_in).argmax(axis=1)
    anchored = np.zeros_like(w_in, dtype=bool)
    anchored[rows, anchor] = np.abs(w_in[rows, anchor]) > 0

    h = np.array(second_moments, dtype=np.float64)
    diagonal = np.arange(taps)
    diag = h[:, diagonal, diagonal]
    h[:, diagonal, diagonal] = np.where(diag <= 0, 1.0, diag) + dampening * diag.mean(axis=1, keepdims=True)
    order = np.argsort(-h[:, diagonal, diagonal], axis=1, kind="stable")
    h = h[rows[:, None, None], order[:, :, None], order[:, None, :]]
    w = np.take_along_axis(w_in.astype(np.float64), order, axis=1)
    fixed = np.take_along_axis(anchored, order, axis=1)
    signs = np.sign(np.take_along_axis(w_in, order, axis=1))
    inverse = np.linalg.inv(np.linalg.cholesky(h))  # L^-1 per channel, H = L L^T
    upper = np.linalg.cholesky(inverse.transpose(0, 2, 1) @ inverse).transpose(0, 2, 1)  # H^-1 = U^T U

    codes = np.zeros_like(w)
    for i in range(taps):
        q = np.clip(np.round(w[:, i] / scales), -qmax, qmax)
        q[fixed[:, i]] = signs[fixed[:, i], i] * qmax
        codes[:, i] = q
        err = (w[:, i] - q * scales) / upper[:, i, i]
        w[:, i + 1 :] -= err[:, None] * upper[:, i, i + 1 :]
    restored = np.empty_like(codes)
    np.put_along_axis(restored, order, codes, axis=1)
    rounded: np.ndarray = (restored * scales[:, None]).astype(np.float32)
    rounded[rows, anchor] = w_in[rows, anchor]  # exactly the float absmax: the converter's scale is unchanged
    rounded[np.abs(w_in).max(axis=1) == 0] = 0.0
    return rounded


def output_error_per_channel(weight: np.ndarray, rounded: np.ndarray, second_moments: np.ndarray) -> float:
    """``output_error`` summed over a depthwise convolution's channels, each against its own second moment."""
    e = np.asarray(rounded, dtype=np.float64) - np.asarray(weight, dtype=np.float64)
    return float(np.einsum("ck,ckl,cl->", e, np.asarray(second_moments, dtype=np.float64), e))


def symmetric_weight_scales(weight: np.ndarray, *, qmax: int, per_channel: bool) -> np.ndarray:
    """The scale per row of ``weight`` [out, in] that ONNX Runtime computes: float32(absmax / qmax) (rows of 0: 1.0)."""
    w = np.asarray(weight, dtype=np.float32)
    absmax = np.abs(w).max(axis=1) if per_channel else np.full(w.shape[0], np.abs(w).max(), dtype=np.float32)
    scales: np.ndarray = (absmax.astype(np.float64) / float(qmax)).astype(np.float32)
    scales[absmax == 0] = 1.0
    return scales


def adaptive_rounding(
    weight: np.ndarray,
    second_moment: np.ndarray,
    *,
    qmax: int,
    per_channel: bool,
    dampening: float = 0.01,
    block: int = 128,
) -> np.ndarray:
    """``weight`` [out, in] rounded onto the symmetric grid scale * [-qmax, qmax] minimising ||(W_q - W) X||, not ||W_q - W||.

    ``second_moment`` is H = sum x x^T of the layer's inputs (in x in). Columns are rounded in order of
    decreasing H diagonal (the most used inputs first); each column's rounding error, divided by the diagonal of
    the upper Cholesky factor U of (H + dampening * mean(diag H) I)^-1, is subtracted from the remaining columns
    through U's row (GPTQ's lazy block update). The scale of each row is the converter's (absmax / qmax), and the
    element holding the absmax is kept at its float value, so the converter recomputes the same scale and its own
    round-to-nearest reproduces the returned float32 weights exactly. Rows of zeros stay zero.
    """
    w_in = np.asarray(weight, dtype=np.float32)
    if w_in.ndim != 2:
        raise ValueError(f"weight must be [out, in], got shape {w_in.shape}")
    out_features, in_features = w_in.shape
    h = np.array(second_moment, dtype=np.float64)
    if h.shape != (in_features, in_features):
        raise ValueError(f"second moment {h.shape} does not match weight {w_in.shape}")
    scales = symmetric_weight_scales(w_in, qmax=qmax, per_channel=per_channel)
    scale64 = scales.astype(np.float64)
    # the element that fixes each row's scale: rounded to +-qmax, whatever the error feedback would do
    flat = np.abs(w_in)
    if per_channel:
        anchor_col = flat.argmax(axis=1)
        anchor_rows = np.arange(out_features)
    else:
        r, c = np.unravel_index(int(flat.argmax()), flat.shape)
        anchor_rows, anchor_col = np.array([r]), np.array([c])
    anchored = np.zeros_like(w_in, dtype=bool)
    anchored[anchor_rows, anchor_col] = flat[anchor_rows, anchor_col] > 0

    diag = np.diag(h).copy()
    dead = diag <= 0
    h[dead, dead] = 1.0
    h[np.diag_indices(in_features)] += dampening * float(np.mean(np.diag(h)))
    order = np.argsort(-np.diag(h), kind="stable")
    h = h[np.ix_(order, order)]
    w = w_in.astype(np.float64)[:, order]
    anchored = anchored[:, order]
    inverse = np.linalg.inv(np.linalg.cholesky(h))  # L^-1, with H = L L^T
    upper = np.linalg.cholesky(inverse.T @ inverse).T  # U with H^-1 = U^T U (upper triangular)

    codes = np.zeros_like(w)
    for start in range(0, in_features, block):
        end = min(start + block, in_features)
        errors = np.zeros((out_features, end - start))
        for i in range(start, end):
            column = w[:, i]
            q = np.clip(np.round(column / scale64), -qmax, qmax)
            fixed = anchored[:, i]
            q[fixed] = np.sign(w_in[:, order[i]][fixed]) * qmax
            codes[:, i] = q
            err = (column - q * scale64) / upper[i, i]
            errors[:, i - start] = err
            w[:, i + 1 : end] -= np.outer(err, upper[i, i + 1 : end])
        w[:, end:] -= errors @ upper[start:end, end:]
    restored = np.empty_like(codes)
    restored[:, order] = codes
    rounded: np.ndarray = (restored.astype(np.float32) * scales[:, None]).astype(np.float32)
    keep = np.zeros_like(w_in, dtype=bool)
    keep[anchor_rows, anchor_col] = True
    rounded[keep] = w_in[keep]  # exactly the float absmax: the converter's scale is unchanged
    rounded[np.abs(w_in).max(axis=1) == 0] = 0.0
    return rounded


def output_error(weight: np.ndarray, rounded: np.ndarray, second_moment: np.ndarray) -> float:
    """sum over inputs of ||(rounded - weight) x||^2 = trace(E H E^T): the layer's output error the rounding causes."""
    e = np.asarray(rounded, dtype=np.float64) - np.asarray(weight, dtype=np.float64)
    return float(np.sum((e @ np.asarray(second_moment, dtype=np.float64)) * e))  # a matrix product, not einsum's loop


# --------------------------------------------------------------------------- activation ranges from histograms


@dataclass(frozen=True)
class Histogram:
    """Counts of one tensor's values over increasing bin edges, with the exact extremes seen."""

    counts: np.ndarray
    edges: np.ndarray
    minimum: float
    maximum: float

    @property
    def centers(self) -> np.ndarray:
        centers: np.ndarray = (self.edges[:-1] + self.edges[1:]) / 2.0
        return centers


def minmax_range(hist: Histogram) -> tuple[float, float]:
    return float(hist.minimum), float(hist.maximum)


def percentile_range(hist: Histogram, percentile: float) -> tuple[float, float]:
    """The range keeping ``percentile`` % of the values, (100 - percentile) / 2 % cut from each tail, within the extremes."""
    total = hist.counts.sum()
    if total == 0:
        return minmax_range(hist)
    cdf = np.cumsum(hist.counts) / total
    cut = (100.0 - percentile) / 200.0
    lo = float(hist.edges[min(int(np.searchsorted(cdf, cut)), len(hist.edges) - 1)])
    hi = float(hist.edges[min(int(np.searchsorted(cdf, 1.0 - cut)) + 1, len(hist.edges) - 1)])
    return max(lo, float(hist.minimum)), min(hi, float(hist.maximum))


#: Values binned at once by ``HistogramAccumulator.add`` (fits a core's L2 cache with its two buffers).
HISTOGRAM_PIECE = 1 << 16


def finite_values(values: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """``values`` flattened without inf and NaN, with their minimum and maximum; None when none is finite.

    The common case (all finite) costs one min and one max; only a batch with a non-finite value is filtered.
    """
    v = np.asarray(values).ravel()
    if v.size == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        v = v[np.isfinite(v)]
        if v.size == 0:
            return None
        lo, hi = float(v.min()), float(v.max())
    return v, lo, hi


class Extremes:
    """The smallest and largest finite value seen, batch by batch (a tensor whose range is all that is needed)."""

    def __init__(self) -> None:
        self.minimum = np.inf
        self.maximum = -np.inf

    def add(self, values: np.ndarray) -> None:
        found = finite_values(values)
        if found is not None:
            _, lo, hi = found
            self.minimum, self.maximum = min(self.minimum, lo), max(self.maximum, hi)

    @property
    def has_values(self) -> bool:
        return bool(self.minimum <= self.maximum)

    def bounds(self) -> tuple[float, float]:
        return float(self.minimum), float(self.maximum)


class HistogramAccumulator:
    """A histogram built batch by batch on bins anchored at zero (edges k * width), so 0 is always an edge.

    When the values outgrow ``bins`` bins, the width doubles and pairs of bins
    merge exactly (floor(v / 2w) == floor(floor(v / w) / 2)); a one-sided
    tensor (after ReLU) spends every bin on its own side.
    """

    def __init__(self, bins: int = 4096) -> None:
        self.bins = bins
        self.width = 0.0
        """0 until a non-zero value arrives (zeros seen before are held in ``_zeros``)."""
        self.first = 0
        self.counts = np.zeros(0, dtype=np.int64)
        self.minimum = np.inf
        self.maximum = -np.inf
        self._zeros = 0

    def add(self, values: np.ndarray) -> None:
        """Count ``values`` in their own float precision (float32 activations are not widened: a few passes, no copies)."""
        v = np.asarray(values)
        found = finite_values(v if v.dtype in (np.float32, np.float64) else v.astype(np.float64))
        if found is None:
            return
        v, lo, hi = found
        self.minimum, self.maximum = min(self.minimum, lo), max(self.maximum, hi)
        if self.width == 0.0:
            span = max(self.maximum, 0.0) - min(self.minimum, 0.0)
            if span == 0.0:
                self._zeros += v.size
                return
            self.width = span / (self.bins - 1)
        real = v.dtype.type
        while True:  # the extremes' bins, computed like every value's below (floor is monotonic)
            first = min(self.first, int(np.floor(real(lo) / real(self.width))), 0)  # bin 0 always exists
            last = max(self.first + len(self.counts) - 1, int(np.floor(real(hi) / real(self.width))), 0)
            if last - first + 1 <= self.bins:
                break
            self._double()
        if not len(self.counts) or first < self.first or last >= self.first + len(self.counts):
            grown = np.zeros(last - first + 1, dtype=np.int64)
            if len(self.counts):
                grown[self.first - first : self.first - first + len(self.counts)] = self.counts
            self.counts, self.first = grown, first
        # bin indices in the values' own float type (floor(v / w) is an integer of at most ``bins`` magnitude there, so
        # subtracting ``first`` is exact), a cache-sized piece at a time through two reused buffers: whole-tensor
        # temporaries (a 224x224 network's activations are megabytes) took twice the time, most of it in memory traffic
        step = min(v.size, HISTOGRAM_PIECE)
        bins, indices = np.empty(step, dtype=v.dtype), np.empty(step, dtype=np.intp)
        width, first = real(self.width), real(self.first)
        for start in range(0, v.size, step):
            piece = v[start : start + step]
            k, ks = bins[: piece.size], indices[: piece.size]
            np.divide(piece, width, out=k)
            np.floor(k, out=k)
            k -= first
            ks[...] = k
            self.counts += np.bincount(ks, minlength=len(self.counts))
        if self._zeros:
            self.counts[-self.first] += self._zeros
            self._zeros = 0

    def _double(self) -> None:
        """Twice the width: bin k merges into bin k // 2."""
        self.width *= 2
        if not len(self.counts):
            return
        ks = self.first + np.arange(len(self.counts))
        merged_first = self.first // 2
        merged = np.zeros(ks[-1] // 2 - merged_first + 1, dtype=np.int64)
        np.add.at(merged, ks // 2 - merged_first, self.counts)
        self.counts, self.first = merged, merged_first

    @property
    def has_values(self) -> bool:
        return self.width > 0 or self._zeros > 0

    def histogram(self) -> Histogram:
        if self.width == 0.0:
            if not self._zeros:
                raise ValueError("no values")
            return Histogram(counts=np.array([self._zeros]), edges=np.array([0.0, 1e-12]), minimum=0.0, maximum=0.0)
        edges = (self.first + np.arange(len(self.counts) + 1)) * self.width
        return Histogram(
            counts=self.counts.copy(), edges=edges, minimum=float(self.minimum), maximum=float(self.maximum)
        )


def expected_quantization_mse(
    hist: Histogram, lows: np.ndarray, highs: np.ndarray, *, levels: int, chunk: int = 64
) -> np.ndarray:
    """Mean squared error of quantizing the histogram's values to ``levels`` steps over [low, high], for every pair.

    The grid is ONNX Runtime's: step (high - low) / (levels - 1), zero point
    round(-low / step), so 0 is exact. A bin narrower than the step
    contributes the error of its centre plus its own spread (width^2 / 12),
    a wider one uniform rounding noise (step^2 / 12); clipped bins the
    distance of their centre to the bound. Returns shape (len(lows), len(highs)).
    ``chunk`` pairs at a time, in place (each pair's row is computed alone: any chunk gives the same result).
    """
    c = hist.centers.astype(np.float64)
    n = hist.counts.astype(np.float64)
    width = float(hist.edges[1] - hist.edges[0]) if len(hist.edges) > 1 else 0.0
    total = max(n.sum(), 1.0)
    lo_grid, hi_grid = np.meshgrid(
        np.asarray(lows, dtype=np.float64), np.asarray(highs, dtype=np.float64), indexing="ij"
    )
    pairs_lo, pairs_hi = lo_grid.ravel(), hi_grid.ravel()
    result = np.empty(pairs_lo.size)
    keep = n > 0
    c, n = c[keep], n[keep]
    spread = width * width / 12.0
    for start in range(0, pairs_lo.size, chunk):
        lo = pairs_lo[start : start + chunk, None]
        hi = pairs_hi[start : start + chunk, None]
        step = np.maximum((hi - lo) / (levels - 1), 1e-30)
        zero_point = np.round(-lo / step)
        err = (
            c / step
        )  # then, in place: q = (clip(round(c / step) + zp, 0, levels - 1) - zp) * step; (c - q)^2 + spread
        np.round(err, out=err)
        err += zero_point
        np.clip(err, 0, levels - 1, out=err)
        err -= zero_point
        err *= step
        np.subtract(c, err, out=err)
        np.square(err, out=err)
        err += spread
        uniform = (c >= lo) & (c <= hi) & ~(width < step)
        err = np.where(uniform, step * step / 12.0, err)
        err *= n
        result[start : start + chunk] = err.sum(axis=1) / total
    return result.reshape(lo_grid.shape)


def mse_range(hist: Histogram, *, levels: int = 256, steps: int = 64) -> tuple[float, float]:
    """The [low, high] (containing 0) that minimises ``expected_quantization_mse``; MinMax's own range is a candidate.

    The high end is searched over ``steps`` fractions of the maximum, the low
    end over half as many of the minimum, so a one-sided tensor (after ReLU)
    keeps low = 0. On a tie MinMax's range wins.
    """
    lo0, hi0 = min(float(hist.minimum), 0.0), max(float(hist.maximum), 0.0)
    if hi0 - lo0 <= 0:
        return lo0, hi0
    lows = lo0 * np.linspace(1.0, 1.0 / (steps // 2), steps // 2) if lo0 < 0 else np.array([0.0])
    highs = hi0 * np.linspace(1.0, 1.0 / steps, steps) if hi0 > 0 else np.array([0.0])
    errors = expected_quantization_mse(hist, lows, highs, levels=levels)
    best = np.unravel_index(int(np.argmin(errors)), errors.shape)
    if errors[best] >= errors[0, 0]:  # index (0, 0) is MinMax's range
        return lo0, hi0
    return float(lows[best[0]]), float(highs[best[1]])


def symmetric_histogram(hist: Histogram) -> Histogram:
    """The same counts on edges symmetric about zero (zero bins added on the short side), as ORT's entropy search expects."""
    width = float(hist.edges[1] - hist.edges[0])
    first = int(round(hist.edges[0] / width))
    last = first + len(hist.counts)  # exclusive, in bins
    reach = max(-first, last, 1)
    counts = np.zeros(2 * reach, dtype=hist.counts.dtype)
    counts[first + reach : last + reach] = hist.counts
    return Histogram(
        counts=counts, edges=(np.arange(2 * reach + 1) - reach) * width, minimum=hist.minimum, maximum=hist.maximum
    )


def rebin_symmetric(hist: Histogram, bins: int) -> Histogram:
    """A histogram over symmetric edges [-t, t] merged to ``bins`` bins (zero-padded at both ends to a multiple)."""
    n = len(hist.counts)
    if n <= bins:
        return hist
    group = -(-n // bins)
    pad_total = group * bins - n
    left, right = pad_total // 2, pad_total - pad_total // 2
    width = float(hist.edges[1] - hist.edges[0])
    counts = np.concatenate([np.zeros(left, hist.counts.dtype), hist.counts, np.zeros(right, hist.counts.dtype)])
    start = float(hist.edges[0]) - left * width
    edges = start + width * group * np.arange(bins + 1)
    return Histogram(
        counts=counts.reshape(bins, group).sum(axis=1),
        edges=edges.astype(hist.edges.dtype),
        minimum=hist.minimum,
        maximum=hist.maximum,
    )


# --------------------------------------------------------------------------- fidelity and the held-out choice


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of samples whose top-1 class is the same in both outputs."""
    if len(reference) == 0:
        raise ValueError("no samples to compare")
    return float(np.mean(np.argmax(reference, axis=1) == np.argmax(candidate, axis=1)))


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of the outputs in dB (inf when identical)."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(candidate, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        return float("inf")
    return 10.0 * float(np.log10(max(signal, 1e-30) / noise))


@dataclass(frozen=True)
class Score:
    """A candidate's fidelity on the held-out split."""

    name: str
    agreement: float
    sqnr_db: float
    samples: int = 0
    """Held-out samples the agreement was counted on (0: unknown, so every difference in agreement counts)."""


def agreement_margin(a: Score, b: Score) -> float:
    """Two standard errors of the difference between two agreements counted on ``samples`` inputs each: a smaller
    difference is within what chance alone gives on a held-out split of this size (100 samples at 0.9: 0.085)."""
    n = min(a.samples, b.samples)
    if n <= 0:
        return 0.0
    variance = a.agreement * (1 - a.agreement) + b.agreement * (1 - b.agreement)
    return 2.0 * math.sqrt(variance / n)


#: Output SQNR differences below this are treated as noise when agreement cannot tell two candidates apart.
SQNR_MARGIN_DB = 0.5


def best_candidate(scores: Sequence[Score]) -> Score:
    """Higher agreement when the difference exceeds ``agreement_margin``; within it, higher SQNR when it is higher by
    ``SQNR_MARGIN_DB`` (the output error energy is a far steadier measure than top-1 flips on few samples); when both
    differences are within their noise, the earlier (simpler) candidate stays: a technique is kept for a gain the
    held-out split can tell from chance, not for a few lucky samples (which, for cross-layer equalization, would also
    cost a second statistics pass).

    The first candidate is the framework's own default, so the choice is never worse than it on the held-out split.
    """
    if not scores:
        raise ValueError("no candidates")
    best = scores[0]
    for score in scores[1:]:
        gap = score.agreement - best.agreement
        if abs(gap) <= agreement_margin(best, score):
            better = score.sqnr_db - best.sqnr_db >= SQNR_MARGIN_DB
        else:
            better = gap > 0
        if better:
            best = score
    return best
