"""The shared evaluator on a small NumPy classifier: accuracy, top-5, dtype conversion, float/255 detection, latency."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from edgequant.api import v1alpha1 as api
from edgequant.backends.base import Batches, InputContractError, TensorContract, check_batch_matches, to_input_contract
from edgequant.worker.evaluate import agreement, evaluate


class LinearClassifier:
    """A real (tiny) model: logits = x . W, taking float32 or uint8 input like a TFLite interpreter would."""

    def __init__(self, weights: np.ndarray, contract: TensorContract) -> None:
        self.weights = weights
        self.input = contract

    def predict(self, batch: np.ndarray) -> np.ndarray:
        check_batch_matches(batch, self.input)
        x = batch.astype(np.float32)
        if self.input.scale is not None:
            x = (x - self.input.zero_point) * self.input.scale
        return x.reshape(len(x), -1) @ self.weights


def _data(x: np.ndarray, y: np.ndarray, batch_size: int = 4) -> Batches:
    def make() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(0, len(y), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]

    return Batches(make_iter=make, count=len(y), batch_size=batch_size)


# Six 1x1x6 "images": one bright pixel per class on a 0.2 background; class = the brightest pixel.
X = (np.eye(6, dtype=np.float32) * 0.8 + 0.2).reshape(6, 1, 6, 1)
# Identity plus a bias towards low class ids, so runner-up classes are ordered 0 > 1 > ... > 5.
W = np.eye(6, dtype=np.float32) + 0.01 * np.arange(6, 0, -1, dtype=np.float32)
FLOAT = TensorContract(dtype="float32", shape=(1, 1, 6, 1))
UINT8 = TensorContract(dtype="uint8", shape=(1, 1, 6, 1), scale=1 / 255, zero_point=0)


def test_top1_top5_and_predictions() -> None:
    # Two wrong labels: sample 4 labelled 0 (its runner-up: inside the top 5), sample 5 labelled 4 (its last class).
    y = np.array([0, 1, 2, 3, 0, 4])
    result = evaluate(predictor=LinearClassifier(W, FLOAT), data=_data(X, y), latency_runs=5, warmup=1)
    assert result.samples == 6
    assert result.top1 == pytest.approx(4 / 6)
    assert result.top5 == pytest.approx(5 / 6)
    assert result.predictions.tolist() == [0, 1, 2, 3, 4, 5]
    assert result.accuracy(api.Metric.TOP1) == result.top1
    assert result.outputs is not None and result.outputs.shape == (6, 6)
    assert result.latency_runs == 5 and result.latency_ms is not None and result.latency_ms > 0


def test_uint8_model_is_fed_pixels_0_255() -> None:
    result = evaluate(predictor=LinearClassifier(W, UINT8), data=_data(X, np.arange(6)), latency_runs=1, warmup=0)
    assert result.top1 == 1.0
    assert result.fed_range == (51.0, 255.0)  # 0.2 * 255, 1.0 * 255
    np.testing.assert_array_equal(
        to_input_contract(np.array([0.0, 0.4, 1.0, 1.2], np.float32), UINT8), [0, 102, 255, 255]
    )


def test_float_over_255_into_a_uint8_model_is_refused() -> None:
    with pytest.raises(InputContractError, match=r"float/255 fed to a full-INT8 model") as err:
        LinearClassifier(W, UINT8).predict(X)
    assert "uint8" in str(err.value) and "scale 0.00392157" in str(err.value)


def test_data_on_the_wrong_scale_is_detected_not_scored() -> None:
    """Pixels divided by 255 twice reach a uint8 model as 0s and 1s: the evaluator stops instead of scoring."""
    with pytest.raises(InputContractError, match=r"every value it received lies in \[0, 1\]"):
        evaluate(predictor=LinearClassifier(W, UINT8), data=_data(X / 255.0, np.arange(6)), latency_runs=0)


def test_unpreprocessed_integers_are_refused() -> None:
    with pytest.raises(InputContractError, match="expected preprocessed float32 inputs, got uint8"):
        to_input_contract((X * 255).astype(np.uint8), UINT8)


def test_latency_without_data_and_agreement() -> None:
    only_latency = evaluate(predictor=LinearClassifier(W, UINT8), data=None, latency_runs=3, warmup=0)
    assert only_latency.top1 is None and only_latency.latency_runs == 3
    a = evaluate(predictor=LinearClassifier(W, FLOAT), data=_data(X, np.arange(6)), latency_runs=0)
    flipped = W.copy()
    flipped[:, [0, 1]] = flipped[:, [1, 0]]
    b = evaluate(predictor=LinearClassifier(flipped, FLOAT), data=_data(X, np.arange(6)), latency_runs=0)
    assert agreement(a, b) == pytest.approx(4 / 6)  # classes 0 and 1 swapped
    assert agreement(a, only_latency) is None


def test_unlabeled_data_keeps_predictions_but_reports_no_accuracy() -> None:
    result = evaluate(
        predictor=LinearClassifier(W, FLOAT), data=_data(X, np.full(6, -1)), latency_runs=0, labeled=False
    )
    assert result.samples == 6 and result.top1 is None and result.top5 is None
    assert result.accuracy(api.Metric.TOP1) is None and result.predictions.tolist() == [0, 1, 2, 3, 4, 5]


def test_sqnr_against_kept_fp32_outputs_accumulates_over_batches(tmp_path) -> None:
    """SQNR = 10 log10(sum ref^2 / sum (out - ref)^2) over all samples, from the reference kept on disk."""
    y = np.arange(6)
    fp32 = evaluate(
        predictor=LinearClassifier(W, FLOAT), data=_data(X, y), latency_runs=0, keep_outputs=tmp_path / "ref.npy"
    )
    assert fp32.all_outputs is not None and fp32.all_outputs.shape == (6, 6)
    np.testing.assert_allclose(np.load(tmp_path / "ref.npy"), X.reshape(6, 6) @ W, rtol=1e-6)
    noisy_w = W + np.float32(0.05) * np.sign(np.sin(np.arange(36, dtype=np.float32))).reshape(6, 6)
    quant = evaluate(
        predictor=LinearClassifier(noisy_w, FLOAT),
        data=_data(X, y, batch_size=4),
        latency_runs=0,
        reference=fp32.all_outputs,
    )
    ref, out = X.reshape(6, 6).astype(np.float64) @ W, X.reshape(6, 6).astype(np.float64) @ noisy_w
    expected = 10 * np.log10(np.square(ref).sum() / np.square(out - ref).sum())
    assert quant.sqnr_db == pytest.approx(expected, abs=1e-3)
    same = evaluate(predictor=LinearClassifier(W, FLOAT), data=_data(X, y), latency_runs=0, reference=fp32.all_outputs)
    assert same.sqnr_db == 200.0  # identical outputs: the documented cap, finite for JSON
    assert agreement(fp32, same) == 1.0


def test_the_evaluation_keeps_what_diagnostics_read() -> None:
    """Labels, the fed floats' per-channel range, and the first samples scored again with another scaling."""
    y = np.arange(6)
    calls: list[int] = []

    def doubled(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return batch * 2.0

    result = evaluate(
        predictor=LinearClassifier(W, FLOAT), data=_data(X, y), latency_runs=0, alternative=doubled, channel_axis=-1
    )
    assert result.labels.tolist() == y.tolist()
    stats = result.input_stats
    assert stats is not None and (stats.low, stats.high, stats.span) == pytest.approx((0.2, 1.0, 0.8))
    assert stats.mean == pytest.approx(float(X.mean())) and stats.std == pytest.approx(float(X.std()), rel=1e-5)
    assert sum(calls) == 6 and result.alternative_predictions is not None
    assert result.alternative_predictions.tolist() == result.predictions.tolist()  # x2 keeps the brightest pixel
    kept = result.kept()
    assert kept is not None and kept.outputs.shape == (6, 6) and kept.alternative_predictions is not None
