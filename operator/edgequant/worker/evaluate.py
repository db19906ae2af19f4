"""The one evaluator every backend's models go through: accuracy, latency and raw outputs.

It takes a ``Predictor`` (FP32 or quantized, any framework) and preprocessed
float batches from ``edgequant.data``, converts each batch to the dtype and
range the model expects (uint8 0-255 for full-INT8 TFLite), and scores it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgequant.analysis.diagnostics import PREPROCESSING_SAMPLES, InputStats, ModelOutputs, channel_ranges
from edgequant.api import v1alpha1 as api
from edgequant.backends.base import (
    Batches,
    InputContractError,
    Predictor,
    TensorContract,
    describe_contract,
    to_input_contract,
)

#: Raw outputs kept per model for FP32-vs-quantized comparisons (diagnostics read them instead of re-running models).
KEPT_OUTPUTS = 512
#: SQNR reported when the outputs are bit-identical (float32 resolves ~140 dB; keeps report.json finite).
MAX_SQNR_DB = 200.0


def sqnr_db(signal_power: float, noise_power: float) -> float | None:
    """10*log10(sum signal^2 / sum noise^2), capped at ``MAX_SQNR_DB``; None without signal."""
    if signal_power <= 0:
        return None
    if noise_power <= 0:
        return MAX_SQNR_DB
    return min(MAX_SQNR_DB, 10.0 * math.log10(signal_power / noise_power))


@dataclass
class EvaluationResult:
    samples: int = 0
    top1: float | None = None
    top5: float | None = None
    latency_ms: float | None = None
    """Median single-image latency."""
    latency_p90_ms: float | None = None
    latency_runs: int = 0
    predictions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """argmax of every scored sample, in data order."""
    outputs: np.ndarray | None = None
    """Raw float32 outputs of the first ``KEPT_OUTPUTS`` samples."""
    fed_range: tuple[float, float] | None = None
    """[min, max] of the values actually fed to the model (after dtype conversion)."""
    all_outputs: np.ndarray | None = None
    """Every sample's raw outputs when asked (``keep_outputs``: the FP32 baseline), an .npy memmap on disk."""
    sqnr_db: float | None = None
    """SQNR of these outputs against ``reference``'s over every sample, when a reference was given."""
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Label of every scored sample, in data order."""
    input_stats: InputStats | None = None
    """The preprocessed float values (before dtype conversion) over every scored batch."""
    alternative_predictions: np.ndarray | None = None
    """argmax of the first ``PREPROCESSING_SAMPLES`` samples fed through ``alternative`` (the other input scaling)."""

    def kept(self) -> ModelOutputs | None:
        """What diagnostics read, or None when nothing was scored."""
        if self.outputs is None:
            return None
        return ModelOutputs(
            outputs=self.outputs, predictions=self.predictions, alternative_predictions=self.alternative_predictions
        )

    def accuracy(self, metric: api.Metric) -> float | None:
        return self.top1 if metric is api.Metric.TOP1 else self.top5


def check_fed_range(low: float, high: float, contract: TensorContract) -> None:
    """An integer input that receives only one or two levels was fed data on the wrong scale.

    The classic case: images divided by 255 twice (or float/255 where the model
    was calibrated on 0-255), which quantizes every pixel to 0 or 1.
    """
    dtype = np.dtype(contract.dtype)
    if np.issubdtype(dtype, np.integer) and high - low <= 1:
        raise InputContractError(
            f"the model takes {describe_contract(contract)} and every value it received lies in [{low:g}, {high:g}]: "
            "the data reaching it is on the wrong scale (typically float/255 where 0-255 was expected); "
            "check model.input.scaling against how the model was trained"
        )


def _latency(predictor: Predictor, sample: np.ndarray, *, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        predictor.predict(sample)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        predictor.predict(sample)
        timings.append((time.perf_counter() - start) * 1000.0)
    return timings


def evaluate(
    *,
    predictor: Predictor,
    data: Batches | None,
    latency_runs: int = 50,
    warmup: int = 5,
    progress: Callable[[int, int], None] | None = None,
    labeled: bool = True,
    reference: np.ndarray | None = None,
    keep_outputs: Path | None = None,
    alternative: Callable[[np.ndarray], np.ndarray] | None = None,
    channel_axis: int | None = None,
) -> EvaluationResult:
    """Score ``predictor`` on ``data`` (labels may be absent: then only latency) and time single images.

    ``labeled`` False: the data's labels are placeholders, so top-1/top-5 stay
    None (predictions are still kept, for agreement with FP32). ``reference``:
    FP32's outputs for the same samples (``all_outputs`` of its evaluation); the
    SQNR against it accumulates batch by batch, no extra inference.
    ``keep_outputs``: write every output to this .npy file (memory-mapped, so a
    large evaluation set never sits in memory) and return it as ``all_outputs``.

    ``alternative`` maps a preprocessed batch to the other input scaling; the first ``PREPROCESSING_SAMPLES``
    samples are scored through it too, for the preprocessing-mismatch diagnostic. ``channel_axis``: where the
    channels are in a batch, for the per-channel span of ``input_stats``.

    Raises ``InputContractError`` when the converted data cannot be what the
    model expects (float into uint8, or one or two integer levels only).
    """
    contract = predictor.input
    result = EvaluationResult()
    first: np.ndarray | None = None
    if data is not None and data.count > 0:
        correct1 = correct5 = seen = 0
        low, high = np.inf, -np.inf
        kept: list[np.ndarray] = []
        predictions: list[np.ndarray] = []
        alternatives: list[np.ndarray] = []
        seen_labels: list[np.ndarray] = []
        total = total_sq = 0.0
        values_seen = 0
        channel_lows: np.ndarray | None = None
        channel_highs: np.ndarray | None = None
        has_top5 = True
        signal = noise = 0.0
        compare = reference is not None
        kept_all: np.memmap | None = None
        for batch, labels in data:
            values = np.asarray(batch, dtype=np.float64).ravel()
            total, total_sq, values_seen = (
                total + float(values.sum()),
                total_sq + float(values @ values),
                values_seen + values.size,
            )
            lows, highs = channel_ranges(batch, channel_axis)
            channel_lows = lows if channel_lows is None else np.minimum(channel_lows, lows)
            channel_highs = highs if channel_highs is None else np.maximum(channel_highs, highs)
            fed = to_input_contract(batch, contract)
            if first is None:
                first = fed[:1]
            low, high = min(low, float(fed.min())), max(high, float(fed.max()))
            outputs = np.asarray(predictor.predict(fed), dtype=np.float32).reshape(len(fed), -1)
            if keep_outputs is not None:
                if kept_all is None:
                    keep_outputs.parent.mkdir(parents=True, exist_ok=True)
                    kept_all = np.lib.format.open_memmap(
                        keep_outputs, mode="w+", dtype=np.float32, shape=(data.count, outputs.shape[1])
                    )
                kept_all[seen : seen + len(fed)] = outputs
            if compare:
                assert reference is not None
                ref = reference[seen : seen + len(fed)]
                if ref.shape != outputs.shape:
                    compare = False
                else:
                    ref64 = ref.astype(np.float64)
                    signal += float(np.square(ref64).sum())
                    noise += float(np.square(outputs.astype(np.float64) - ref64).sum())
            predictions.append(outputs.argmax(axis=1))
            correct1 += int((predictions[-1] == labels).sum())
            if outputs.shape[1] >= 5:
                top5 = np.argpartition(-outputs, 4, axis=1)[:, :5]
                correct5 += int((top5 == labels[:, None]).any(axis=1).sum())
            else:
                has_top5 = False
            if sum(len(k) for k in kept) < KEPT_OUTPUTS:
                kept.append(outputs[: KEPT_OUTPUTS - sum(len(k) for k in kept)])
            done = sum(len(a) for a in alternatives)
            if alternative is not None and done < PREPROCESSING_SAMPLES:
                other = to_input_contract(alternative(batch[: PREPROCESSING_SAMPLES - done]), contract)
                alternatives.append(
                    np.asarray(predictor.predict(other), dtype=np.float32).reshape(len(other), -1).argmax(axis=1)
                )
            seen_labels.append(np.asarray(labels).ravel())
            seen += len(fed)
            if progress is not None:
                progress(seen, data.count)
        check_fed_range(low, high, contract)
        result.samples = seen
        if labeled:
            result.top1 = correct1 / seen
            result.top5 = correct5 / seen if has_top5 else None
        if kept_all is not None:
            kept_all.flush()
            result.all_outputs = kept_all[:seen]
        if compare and reference is not None and len(reference) == seen:
            result.sqnr_db = sqnr_db(signal, noise)
        result.predictions = np.concatenate(predictions)
        result.outputs = np.concatenate(kept)
        result.fed_range = (low, high)
        result.labels = np.concatenate(seen_labels)
        mean = total / values_seen
        assert channel_lows is not None and channel_highs is not None
        result.input_stats = InputStats(
            low=float(channel_lows.min()),
            high=float(channel_highs.max()),
            mean=mean,
            std=float(np.sqrt(max(0.0, total_sq / values_seen - mean**2))),
            span=float((channel_highs - channel_lows).min()),
        )
        if alternatives:
            result.alternative_predictions = np.concatenate(alternatives)
    if latency_runs > 0:
        if first is None:
            shape = (1, *contract.shape[1:])
            first = np.zeros(shape, dtype=np.dtype(contract.dtype))
        timings = _latency(predictor, first, runs=latency_runs, warmup=warmup)
        result.latency_ms = statistics.median(timings)
        result.latency_p90_ms = float(np.percentile(timings, 90))
        result.latency_runs = len(timings)
    return result


def agreement(a: EvaluationResult, b: EvaluationResult) -> float | None:
    """Share of samples where two models predict the same class (FP32 vs quantized)."""
    if a.predictions.size == 0 or a.predictions.shape != b.predictions.shape:
        return None
    return float((a.predictions == b.predictions).mean())
