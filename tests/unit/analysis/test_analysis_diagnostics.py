"""Each diagnostic on raw outputs: fires on its fault, stays quiet on a healthy pair, fixes in the reference order."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgequant.analysis import diagnostics as dg
from edgequant.api import v1alpha1 as api


def _spec(**overrides: Any) -> api.QuantizationJobSpec:
    doc: dict[str, Any] = {
        "model": {"uri": "file:///m.onnx", "input": {"shape": [4, 4, 1], "colorOrder": "GRAY"}},
        "method": "onnx-static",
        "calibration": {"dataset": {"uri": "file:///cal/"}, "algorithm": "entropy"},
        "output": {"uri": "file:///out/"},
    }
    doc.update(overrides)
    return api.QuantizationJobSpec.model_validate(doc)


@pytest.fixture(scope="module")
def logits() -> np.ndarray:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 2000)
    out = rng.normal(0, 2.0, (2000, 10))
    out[np.arange(2000), labels] += 6.0
    return out.astype(np.float32)


def _fired(findings: list) -> set[str]:
    return {f.check for f in findings if f.fired}


def test_healthy_quantization_is_quiet(logits: np.ndarray) -> None:
    q = np.round(logits / 0.08) * 0.08  # 8-bit-like rounding of the outputs
    fixes = dg.reference_fixes(_spec())
    cmp = dg.compare_outputs(logits, q)
    findings = [dg.check_mismatch(cmp, fixes=fixes), dg.check_collapsed(logits, q, fixes=fixes), dg.check_clipped(logits, q, fixes=fixes)]
    assert _fired(findings) == set()
    assert cmp.cosine > 0.99 and cmp.top1_agreement > 0.97 and all(f.fixes == [] for f in findings)


def test_mismatch_fires_on_diverging_outputs(logits: np.ndarray) -> None:
    q = logits + np.random.default_rng(1).normal(0, 6.0, logits.shape)
    finding = dg.check_mismatch(dg.compare_outputs(logits, q), fixes=["x"])
    assert finding.fired and finding.evidence["top1Agreement"] < dg.MISMATCH_TOP1_AGREEMENT and finding.fixes == ["x"]


def test_collapse_fires_on_outputs_squashed_to_zero_and_on_one_class(logits: np.ndarray) -> None:
    squashed = dg.check_collapsed(logits, logits * 0.05, fixes=[])
    assert squashed.fired and squashed.evidence["spreadRatio"] < dg.COLLAPSE_SPREAD_RATIO
    one_class = logits.copy()
    one_class[:, 3] += 100.0
    finding = dg.check_collapsed(logits, one_class, fixes=[])
    assert finding.fired and "one class" in finding.message


def test_clipping_fires_on_a_narrow_saturated_range(logits: np.ndarray) -> None:
    clipped = np.clip(logits, -1.5, 1.5)
    finding = dg.check_clipped(logits, clipped, fixes=[])
    assert finding.fired and finding.evidence["rangeCovered"] < dg.CLIP_RANGE_RATIO
    assert finding.evidence["saturatedShare"] >= dg.CLIP_SATURATED_SHARE
    # scaled-down outputs are narrow but not saturated: a collapse, not clipping
    assert not dg.check_clipped(logits, logits * 0.3, fixes=[]).fired


def test_reference_fix_order_follows_the_spec() -> None:
    fixes = dg.reference_fixes(_spec())
    assert len(fixes) == 4
    assert fixes[0].startswith("use more and more diverse calibration data")
    assert "minmax instead of entropy" in fixes[1]
    assert "mixedPrecision.mode auto" in fixes[2]
    assert fixes[3].startswith("quantization-aware training")
    minmax = dg.reference_fixes(
        _spec(calibration={"dataset": {"uri": "file:///c/"}}, mixedPrecision={"mode": "auto"}, evaluation={"dataset": {"uri": "file:///e/"}})
    )
    assert not any("minmax instead" in f for f in minmax) and "maxPinnedLayers" in minmax[1]


def test_alternative_input_scale() -> None:
    assert dg.alternative_input_scale(api.Scaling())[0] == 255.0
    assert dg.alternative_input_scale(api.Scaling(scale=1 / 127.5, offset=-1))[0] == 255.0
    assert dg.alternative_input_scale(api.Scaling(scale=1.0))[0] == pytest.approx(1 / 255)


class Centroids:
    """A nearest-centroid classifier trained on inputs in [0, 1]: a stand-in model with a definite input scale."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.c = np.stack([x[y == k].mean(axis=0) for k in range(int(y.max()) + 1)])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return -((x[:, None, :] - self.c[None]) ** 2).sum(axis=2)


def test_diagnose_finds_float_over_255_fed_to_a_uint8_model_and_is_quiet_otherwise() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 800)
    x = (rng.uniform(0, 0.3, (800, 16)) + (y[:, None] == np.arange(16) // 4) * 0.6).astype(np.float32)
    model = Centroids(x, y)

    def uint8_model_fed_right(v: np.ndarray) -> np.ndarray:
        return model(np.clip(np.round(v * 255), 0, 255) / 255)

    def uint8_model_fed_float(v: np.ndarray) -> np.ndarray:
        return model(np.clip(v.astype(np.uint8), 0, 255) / 255)  # the classic bug: 0-1 floats cast to uint8

    spec = _spec()
    healthy = dg.diagnose(spec=spec, inputs=x, labels=y, predict_fp32=model, predict_quantized=uint8_model_fed_right)
    assert [f.check for f in healthy.findings] == [
        "output-mismatch", "output-collapsed", "output-clipped", "preprocessing-mismatch", "preprocessing-mismatch"
    ]
    assert _fired(healthy.findings) == set()
    broken = dg.diagnose(spec=spec, inputs=x, labels=y, predict_fp32=model, predict_quantized=uint8_model_fed_float, contract="uint8 0-255")
    pre = [f for f in broken.findings if f.check == "preprocessing-mismatch"]
    assert not pre[0].fired and pre[1].fired
    assert "uint8 0-255" in pre[1].fixes[0]
    assert broken.distribution is not None and len(broken.distribution.edges) == dg.HISTOGRAM_BINS + 1
    assert sum(broken.distribution.fp32) == x.shape[0] * 4


def test_no_labels_skips_the_preprocessing_check(logits: np.ndarray) -> None:
    report = dg.diagnose(spec=_spec(), inputs=np.zeros((len(logits), 1), np.float32), labels=None,
                         predict_fp32=lambda _x: logits, predict_quantized=lambda _x: logits)
    assert [f.check for f in report.findings] == ["output-mismatch", "output-collapsed", "output-clipped"]


def test_shape_mismatch_is_an_error(logits: np.ndarray) -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        dg.compare_outputs(logits, logits[:, :5])


def test_qat_divergence_from_the_original_fp32_counts_only_when_accuracy_fell() -> None:
    """QAT fine-tunes the weights, so its outputs stray from the original model's by design."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, 1000)
    fp32 = rng.normal(0, 2.0, (1000, 10))
    fp32[np.arange(1000), labels] += 3.0  # right on most inputs
    retrained = rng.normal(0, 2.0, (1000, 10))
    retrained[np.arange(1000), labels] += 3.5  # different logits, at least as accurate
    worse = rng.normal(0, 2.0, (1000, 10))  # different logits, accuracy gone
    qat = _spec(
        method="tflite-qat",
        model={"uri": "file:///m.keras", "input": {"shape": [4, 4, 1], "colorOrder": "GRAY"}},
        training={"dataset": {"uri": "file:///train/"}},
        acceptance={"maxAccuracyDrop": 0.01},
    )
    inputs = np.arange(1000, dtype=np.float32)[:, None]

    def diagnosed(spec: api.QuantizationJobSpec, quantized: np.ndarray) -> Any:
        report = dg.diagnose(spec=spec, inputs=inputs, labels=labels, predict_fp32=lambda x: fp32[x[:, 0].astype(int) % 1000],
                             predict_quantized=lambda x: quantized[x[:, 0].astype(int) % 1000])
        return next(f for f in report.findings if f.check == "output-mismatch")

    fine = diagnosed(qat, retrained)
    assert fine.evidence["top1Agreement"] < dg.MISMATCH_TOP1_AGREEMENT  # it does diverge ...
    assert not fine.fired and "fine-tuning" in fine.message and fine.fixes == []  # ... as QAT intends
    assert fine.evidence["quantizedAccuracy"] >= fine.evidence["fp32Accuracy"] - 0.01
    assert diagnosed(qat, worse).fired
    assert diagnosed(_spec(), retrained).fired  # post-training quantization has no such excuse
