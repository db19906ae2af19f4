"""Per-layer sensitivity: the exhaustive reference method and the fast one-run ranking. Framework-free.

Exhaustive: for each layer, quantize only that layer, score it, and record the
accuracy it costs against the unquantized reference; sorted, most sensitive
first, flagged above ``mixedPrecision.sensitivityThreshold``.

Fast: one quantized run, probed against the float model on the same inputs.
Each layer is ranked by the noise it adds itself (its ``own`` error), as
noise-to-signal power. Backends measure it in one of two ways:

- local: the layer's quantized output against its float op fed the same
  (quantized-path) input, e.g. TFLite's layer-wise NumericVerify. Exact, and
  blind to what happened upstream.
- increment: from cumulative errors (the float model vs the quantized model at
  every tensor, ORT's ``xmodel_err``), the noise-to-signal out minus the largest
  noise-to-signal in (``attribute_increments``). Reading raw cumulative error
  would blame every layer after the culprit; ORT's per-tensor ``qdq_err`` misses
  clipping folded into ranges (docs/analysis.md). Increments
  fade once upstream noise swamps the signal, so local is used where a backend
  can measure it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from edgequant.analysis.tensor_error import TensorError, sqnr_from_noise_to_signal
from edgequant.api.v1alpha1 import SensitivityMode
from edgequant.report.schema import LayerSensitivity, RankingAgreement, SensitivityReport

#: Fast mode flags a layer whose own noise is louder than this (dB): int8 layers usually add 30-45 dB.
FAST_FLAG_SQNR_DB = 20.0


def exhaustive_sensitivity(
    *,
    layers: Sequence[str],
    reference_accuracy: float,
    accuracy_with_only: Callable[[str], float],
    threshold: float,
    log: Callable[[str], None] = lambda _msg: None,
) -> SensitivityReport:
    """Quantize and score each layer alone; one run per layer."""
    if not layers:
        raise ValueError("no quantizable layers to analyse")
    start = time.perf_counter()
    measured: list[tuple[str, float]] = []
    for i, layer in enumerate(layers, 1):
        acc = accuracy_with_only(layer)
        log(f"sensitivity {i}/{len(layers)}: only {layer} quantized -> accuracy {acc:.4f}")
        measured.append((layer, acc))
    # Most sensitive first; ties keep the model's layer order.
    order = sorted(range(len(measured)), key=lambda i: (-(reference_accuracy - measured[i][1]), i))
    entries = []
    for rank, i in enumerate(order, 1):
        layer, acc = measured[i]
        delta = reference_accuracy - acc
        entries.append(
            LayerSensitivity(
                layer=layer, rank=rank, accuracy=acc, accuracy_delta=delta, flagged=delta > threshold + 1e-12
            )
        )
    return SensitivityReport(
        mode=SensitivityMode.EXHAUSTIVE,
        threshold=threshold,
        reference_accuracy=reference_accuracy,
        layers=entries,
        seconds=time.perf_counter() - start,
        quantize_runs=len(layers),
    )


@dataclass(frozen=True)
class LayerProbe:
    """What one probe run measured for one layer."""

    layer: str
    own_noise: float
    """Noise-to-signal power the layer adds itself (linear; 0 = none)."""
    output: TensorError | None = None
    """Cumulative error of the layer output: float model vs quantized model."""


@dataclass(frozen=True)
class ProbedOp:
    """One op of a probed graph: which source layer owns it, what it reads, what it writes.

    ``layer`` is None for ops that belong to no quantizable layer (shape
    arithmetic, the input quantize); they still carry noise forward.
    """

    layer: str | None
    inputs: tuple[str, ...]
    output: str


def attribute_increments(*, ops: Sequence[ProbedOp], errors: Mapping[str, TensorError]) -> list[LayerProbe]:
    """Per-layer own noise from cumulative per-tensor errors (see the module docstring), in graph order."""
    producer = {op.output: op for op in ops}
    memo: dict[str, float] = {}

    def nsr_reaching(tensor: str, depth: int = 0) -> float:
        """Noise-to-signal of a tensor: measured if probed, else the worst of what its producer reads."""
        if tensor in memo:
            return memo[tensor]
        if tensor in errors:
            value = errors[tensor].noise_to_signal
        elif tensor in producer and depth < 10_000:
            value = max((nsr_reaching(t, depth + 1) for t in producer[tensor].inputs), default=0.0)
        else:
            value = 0.0  # a model input or a constant: nothing quantized upstream
        memo[tensor] = value
        return value

    own: dict[str, float] = {}
    last_output: dict[str, TensorError] = {}
    for op in ops:
        if op.layer is None or op.output not in errors:
            continue
        out = errors[op.output].noise_to_signal
        into = max((nsr_reaching(t) for t in op.inputs), default=0.0)
        own[op.layer] = own.get(op.layer, 0.0) + max(0.0, out - into)
        last_output[op.layer] = errors[op.output]
    return [LayerProbe(layer=layer, own_noise=noise, output=last_output[layer]) for layer, noise in own.items()]


def rank_probes(probes: Sequence[LayerProbe], *, flag_sqnr_db: float = FAST_FLAG_SQNR_DB) -> list[LayerSensitivity]:
    """Most own noise first; ties keep graph order."""
    order = sorted(range(len(probes)), key=lambda i: (-probes[i].own_noise, i))
    entries = []
    for rank, i in enumerate(order, 1):
        probe = probes[i]
        own = sqnr_from_noise_to_signal(probe.own_noise)
        out = probe.output
        entries.append(
            LayerSensitivity(
                layer=probe.layer,
                rank=rank,
                injected_sqnr_db=own,
                sqnr_db=out.sqnr_db if out else None,
                mse=out.mse if out else None,
                cosine=out.cosine if out else None,
                flagged=own < flag_sqnr_db,
            )
        )
    return entries


def fast_sensitivity(*, probes: Sequence[LayerProbe], threshold: float, seconds: float) -> SensitivityReport:
    if not probes:
        raise ValueError("the probe compared no quantized layer outputs; nothing to rank")
    return SensitivityReport(
        mode=SensitivityMode.FAST,
        threshold=threshold,
        fast_flag_sqnr_db=FAST_FLAG_SQNR_DB,
        layers=rank_probes(probes),
        seconds=seconds,
        quantize_runs=0,
    )


def agreement(*, fast: Sequence[str], exhaustive: Sequence[str], k: int = 5) -> RankingAgreement:
    """Top-k overlap and Spearman correlation of two rankings (most sensitive first) over their common layers."""
    common = [layer for layer in exhaustive if layer in set(fast)]
    fast_common = [layer for layer in fast if layer in set(common)]
    k = min(k, len(common))
    fast_top, exhaustive_top = fast_common[:k], common[:k]
    overlap = len(set(fast_top) & set(exhaustive_top))
    return RankingAgreement(
        k=k,
        top_k_overlap=overlap,
        spearman=spearman(fast_common, common),
        fast_top=fast_top,
        exhaustive_top=exhaustive_top,
    )


def spearman(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Spearman's rho of two orderings of the same items (no ties)."""
    n = len(a)
    if n < 2 or set(a) != set(b):
        return None
    pos = {item: i for i, item in enumerate(b)}
    d2 = sum((i - pos[item]) ** 2 for i, item in enumerate(a))
    rho = 1.0 - 6.0 * d2 / (n * (n * n - 1))
    return 0.0 if math.isnan(rho) else rho


def combine(*, exhaustive: SensitivityReport, fast: SensitivityReport | None, k: int = 5) -> SensitivityReport:
    """The exhaustive report with the fast ranking and their agreement attached."""
    if fast is None:
        return exhaustive
    return exhaustive.model_copy(
        update={
            "fast": fast.layers,
            "fast_flag_sqnr_db": fast.fast_flag_sqnr_db,
            "agreement": agreement(
                fast=[e.layer for e in fast.layers], exhaustive=[e.layer for e in exhaustive.layers], k=k
            ),
            "seconds": exhaustive.seconds + fast.seconds,
        }
    )
