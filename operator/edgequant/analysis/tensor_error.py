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
    return float(10.0 ** (-sqnr_db / 10.0))


def sqnr_from_noise_to_signal(ratio: float) -> float:
    if ratio <= 0:
        return SQNR_CEILING_DB
    return min(SQNR_CEILING_DB, -10.0 * math.log10(ratio))


def tensor_error(reference: np.ndarray, test: np.ndarray) -> TensorError:
    """Compare ``test`` with ``reference`` (same number of elements; shapes are flattened)."""
    acc = ErrorAccumulator()
    acc.add(reference, test)
    return acc.result()


#: Elements per float32 dot product: short enough that float32 sums stay exact to ~1e-6 relative.
CHUNK = 1 << 16


class ErrorAccumulator:
    """``tensor_error`` over many batches without keeping them: running sums of the same quantities."""

    def __init__(self) -> None:
        self.signal = self.noise = self.dot = self.test_power = self.max_abs = 0.0
        self.count = 0

    def add(self, reference: np.ndarray, test: np.ndarray) -> None:
        ref = np.asarray(reference, dtype=np.float32).ravel()
        tst = np.asarray(test, dtype=np.float32).ravel()
        if ref.size != tst.size:
            raise ValueError(f"cannot compare tensors of {ref.size} and {tst.size} elements")
        # float32 dot products over short chunks, summed in float64: a layer's activations for a batch of 224x224
        # images are tens of millions of values, and float64 copies of them cost more than running the model.
        for start in range(0, ref.size, CHUNK):
            r, t = ref[start : start + CHUNK], tst[start : start + CHUNK]
            diff = r - t
            self.signal += float(np.dot(r, r))
            self.noise += float(np.dot(diff, diff))
            self.dot += float(np.dot(r, t))
            self.test_power += float(np.dot(t, t))
            self.max_abs = max(self.max_abs, float(np.max(np.abs(diff))))
        self.count += ref.size

    def result(self) -> TensorError:
        if self.count == 0:
            raise ValueError("cannot compare empty tensors")
        if self.noise == 0.0:
            sqnr = SQNR_CEILING_DB
        elif self.signal == 0.0:
            sqnr = -SQNR_CEILING_DB
        else:
            sqnr = max(-SQNR_CEILING_DB, min(SQNR_CEILING_DB, 10.0 * math.log10(self.signal / self.noise)))
        norms = math.sqrt(self.signal) * math.sqrt(self.test_power)
        cosine = (1.0 if self.noise == 0.0 else 0.0) if norms == 0.0 else self.dot / norms
        return TensorError(sqnr_db=sqnr, mse=self.noise / self.count, cosine=cosine, max_abs=self.max_abs)
