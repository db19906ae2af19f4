"""The one evaluator every backend's models go through: accuracy, latency and raw outputs.

It takes a ``Predictor`` (FP32 or quantized, any framework) and preprocessed
float batches from ``edgequant.data``, converts each batch to the dtype and
range the model expects (uint8 0-255 for full-INT8 TFLite), and scores it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgequant.api import v1alpha1 as api
from edgequant.backends.base import Batches, InputContractError, Predictor, TensorContract, describe_contract, to_input_contract

#: Raw outputs kept per model for FP32-vs-quantized comparisons (diagnostics).
KEPT_OUTPUTS = 256


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
) -> EvaluationResult:
    """Score ``predictor`` on ``data`` (labels may be absent: then only latency) and time single images.

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
        has_top5 = True
        for batch, labels in data:
            fed = to_input_contract(batch, contract)
            if first is None:
                first = fed[:1]
            low, high = min(low, float(fed.min())), max(high, float(fed.max()))
            outputs = np.asarray(predictor.predict(fed), dtype=np.float32).reshape(len(fed), -1)
            predictions.append(outputs.argmax(axis=1))
            correct1 += int((predictions[-1] == labels).sum())
            if outputs.shape[1] >= 5:
                top5 = np.argpartition(-outputs, 4, axis=1)[:, :5]
                correct5 += int((top5 == labels[:, None]).any(axis=1).sum())
            else:
                has_top5 = False
            if sum(len(k) for k in kept) < KEPT_OUTPUTS:
                kept.append(outputs[: KEPT_OUTPUTS - sum(len(k) for k in kept)])
            seen += len(fed)
            if progress is not None:
                progress(seen, data.count)
        check_fed_range(low, high, contract)
        result.samples = seen
        result.top1 = correct1 / seen
        result.top5 = correct5 / seen if has_top5 else None
        result.predictions = np.concatenate(predictions)
        result.outputs = np.concatenate(kept)
        result.fed_range = (low, high)
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
