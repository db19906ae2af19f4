"""SQNR, MSE, cosine and max abs of a quantized tensor against its float reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgequant.analysis.tensor_error import (
    SQNR_CEILING_DB,
    ErrorAccumulator,
    noise_to_signal,
    sqnr_from_noise_to_signal,
    tensor_error,
)


def test_identical_tensors_hit_the_ceiling() -> None:
    x = np.linspace(-1, 1, 50, dtype=np.float32)
    err = tensor_error(x, x.copy())
    assert err.sqnr_db == SQNR_CEILING_DB and err.mse == 0.0 and err.max_abs == 0.0
    assert err.cosine == pytest.approx(1.0)


def test_known_noise_level_gives_its_sqnr() -> None:
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(100_000)
    noise = rng.standard_normal(100_000) * 0.1  # 20 dB below the signal
    err = tensor_error(signal, signal + noise)
    assert err.sqnr_db == pytest.approx(20.0, abs=0.2)
    assert err.mse == pytest.approx(0.01, rel=0.05)
    assert err.noise_to_signal == pytest.approx(0.01, rel=0.05)
    assert 0.99 < err.cosine < 1.0


def test_uniform_8bit_rounding_is_near_the_textbook_sqnr() -> None:
    # Rounding a full-scale uniform signal to 256 levels: 6.02 * 8 dB + small terms.
    x = np.random.default_rng(1).uniform(-1, 1, 200_000)
    scale = 2 / 255
    q = np.round(x / scale) * scale
    assert tensor_error(x, q).sqnr_db == pytest.approx(6.02 * 8, abs=1.5)


def test_sign_flip_is_cosine_minus_one_and_shapes_flatten() -> None:
    x = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    err = tensor_error(x, -x.reshape(6))
    assert err.cosine == pytest.approx(-1.0)
    assert err.max_abs == pytest.approx(12.0)


def test_zero_reference_and_mismatched_sizes() -> None:
    assert tensor_error(np.zeros(4), np.ones(4)).sqnr_db == -SQNR_CEILING_DB
    with pytest.raises(ValueError, match="3 and 4 elements"):
        tensor_error(np.zeros(3), np.zeros(4))


def test_noise_ratio_round_trip() -> None:
    for db in (3.0, 20.0, 47.5):
        assert sqnr_from_noise_to_signal(noise_to_signal(db)) == pytest.approx(db)
    assert sqnr_from_noise_to_signal(0.0) == SQNR_CEILING_DB
    assert math.isclose(noise_to_signal(10.0), 0.1)


@pytest.mark.parametrize("batch", [1, 7, 64, 300])
def test_accumulating_batches_equals_comparing_everything_at_once(batch: int) -> None:
    # The streamed layer analysis folds each batch into running sums and drops it: the result must not depend
    # on how the samples were cut into batches.
    rng = np.random.default_rng(2)
    reference = rng.standard_normal((300, 5, 4)).astype(np.float32)
    test = reference + rng.standard_normal(reference.shape).astype(np.float32) * 0.03
    whole = tensor_error(reference, test)
    acc = ErrorAccumulator()
    for i in range(0, len(reference), batch):
        acc.add(reference[i : i + batch], test[i : i + batch])
    streamed = acc.result()
    assert streamed.sqnr_db == pytest.approx(whole.sqnr_db, rel=1e-6)
    assert streamed.mse == pytest.approx(whole.mse, rel=1e-6)
    assert streamed.cosine == pytest.approx(whole.cosine, rel=1e-6)
    assert streamed.max_abs == whole.max_abs


def test_empty_accumulator_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        ErrorAccumulator().result()
