"""Error between a float tensor and its quantized counterpart: SQNR, MSE, cosine, max abs. Pure numpy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: SQNR reported for a bit-exact match (no noise at all): finite so JSON and sorting stay simple.
SQNR_CEILING_DB = 200.0


@dataclass(frozen=True)
class TensorError:
    """How far a quantized tensor is from the float reference, over every element compared."""

    sqnr_db: float
    """Signal-to-quantization-noise ratio, 10*log10(sum(ref^2) / sum((ref - test)^2)); higher is better."""
    mse: float
    cosine: float
    """Cosine similarity of the flattened tensors; 1.0 is identical direction."""
    max_abs: float

    @property
    def noise_to_signal(self) -> float:
        """Noise power over signal power (the inverse of SQNR on a linear scale)."""
        return noise_to_signal(self.sqnr_db)


def noise_to_signal(sqnr_db: float) -> float:
    return 10.0 ** (-sqnr_db / 10.0)


def sqnr_from_noise_to_signal(ratio: float) -> float:
    if ratio <= 0:
        return SQNR_CEILING_DB
    return min(SQNR_CEILING_DB, -10.0 * math.log10(ratio))


def tensor_error(reference: np.ndarray, test: np.ndarray) -> TensorError:
    """Compare ``test`` with ``reference`` (same number of elements; shapes are flattened)."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    tst = np.asarray(test, dtype=np.float64).ravel()
    if ref.size != tst.size:
        raise ValueError(f"cannot compare tensors of {ref.size} and {tst.size} elements")
    if ref.size == 0:
        raise ValueError("cannot compare empty tensors")
    diff = ref - tst
    signal = float(np.dot(ref, ref))
    noise = float(np.dot(diff, diff))
    if noise == 0.0:
        sqnr = SQNR_CEILING_DB
    elif signal == 0.0:
        sqnr = -SQNR_CEILING_DB
    else:
        sqnr = max(-SQNR_CEILING_DB, min(SQNR_CEILING_DB, 10.0 * math.log10(signal / noise)))
    norms = math.sqrt(signal) * math.sqrt(float(np.dot(tst, tst)))
    if norms == 0.0:
        cosine = 1.0 if noise == 0.0 else 0.0
    else:
        cosine = float(np.dot(ref, tst)) / norms
    return TensorError(sqnr_db=sqnr, mse=noise / ref.size, cosine=cosine, max_abs=float(np.max(np.abs(diff))))
