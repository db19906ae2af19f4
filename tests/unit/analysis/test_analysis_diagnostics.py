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
    findings = [
        dg.check_mismatch(cmp, fixes=fixes),
        dg.check_collapsed(logits, q, fixes=fixes),
        dg.check_clipped(logits, q, fixes=fixes),
    ]
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


def test_one_class_collapse_on_a_many_class_model_needs_only_a_majority() -> None:
    """1000 classes, one wins 67% of the quantized predictions (FP32's most frequent: ~1%): a collapse."""
    rng = np.random.default_rng(4)
    n, classes = 600, 1000
    fp32 = rng.normal(0, 1.0, (n, classes)).astype(np.float32)
    fp32[np.arange(n), rng.integers(0, classes, n)] += 8.0
    quant = fp32.copy()
    collapsed = rng.random(n) < 0.67
    quant[collapsed, 7] += 50.0
    finding = dg.check_collapsed(fp32, quant, fixes=["x"])
    assert finding.fired and "one class" in finding.message and finding.fixes == ["x"]
    assert finding.evidence["topClassThreshold"] == dg.COLLAPSE_MAJORITY
    assert 0.6 < finding.evidence["quantizedTopClassShare"] < 0.75 and finding.evidence["fp32TopClassShare"] < 0.05
    # the same share on a 4-class model is not enough (a dominant class there can be real)
    few = dg.check_collapsed(
        fp32[:, :4], quant[:, :4] + np.where(np.arange(4) == 1, collapsed[:, None] * 50.0, 0.0), fixes=[]
    )
    assert few.evidence["topClassThreshold"] == dg.COLLAPSE_SINGLE_CLASS and not few.fired
    # nor when FP32 itself puts most inputs in that class (an evaluation set of mostly one class)
    skewed = fp32.copy()
    skewed[collapsed, 7] += 50.0
    assert not dg.check_collapsed(skewed, quant, fixes=[]).fired
    # predictions over the whole evaluation set decide the shares when given
    assert not dg.check_collapsed(
        fp32, quant, fixes=[], fp32_predictions=fp32.argmax(1), quantized_predictions=fp32.argmax(1)
    ).fired


def test_class_probabilities_keep_distributions_and_softmax_logits() -> None:
    distributions = np.array([[0.7, 0.2, 0.1], [0.0, 0.0, 1.0]])
    assert np.array_equal(dg.class_probabilities(distributions), distributions)
    logits = np.array([[2.0, 1.0, 0.0], [-1.0, 3.0, -5.0]])
    p = dg.class_probabilities(logits)
    assert np.allclose(p.sum(axis=1), 1.0) and np.array_equal(p.argmax(axis=1), logits.argmax(axis=1))
    assert p[0, 0] / p[0, 1] == pytest.approx(np.e)


def _hesitant(rows: int, ties: int, classes: int = 1000) -> np.ndarray:
    """Logits where FP32 is sure on ``rows - ties`` rows and splits the first ``ties`` rows between two classes."""
    rng = np.random.default_rng(3)
    out = rng.normal(0.0, 0.5, (rows, classes))
    out[np.arange(rows), np.arange(rows) % classes] += 12.0  # a clear winner
    tied = np.arange(ties)
    out[tied, (tied + 1) % classes] = out[tied, tied % classes] - 0.01  # a runner-up 0.01 logit behind
    return out


def test_undecided_fires_when_fp32_hesitates_on_much_of_the_data_and_splits_agreement() -> None:
    fp32 = _hesitant(200, ties=120)
    assert dg.decided(fp32).sum() == 80
    quantized = fp32.copy()
    flipped = np.arange(0, 120, 2)  # half of the near-ties flip to the runner-up; no decided input does
    quantized[flipped, (flipped + 1) % 1000] += 0.1
    finding = dg.check_undecided(fp32, quantized)
    assert finding.fired and finding.fixes
    assert finding.evidence["undecidedShare"] == pytest.approx(0.6)
    assert finding.evidence["decidedAgreement"] == 1.0 and finding.evidence["undecidedAgreement"] == 0.5
    assert "60% of 200 inputs" in finding.message and "100.0% of the 80 inputs FP32 decides" in finding.message


def test_undecided_stays_quiet_when_fp32_decides_most_inputs(logits: np.ndarray) -> None:
    few_ties = dg.check_undecided(_hesitant(200, ties=40), _hesitant(200, ties=40))
    assert not few_ties.fired and few_ties.fixes == [] and few_ties.evidence["undecidedShare"] == pytest.approx(0.2)
    healthy = dg.check_undecided(logits, logits)
    assert not healthy.fired and healthy.evidence["decidedAgreement"] == 1.0


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
    assert fixes[0].startswith("use more diverse calibration data")  # 500 samples: already in the recommended range
    assert "minmax instead of entropy" in fixes[1]
    assert "mixedPrecision.mode auto" in fixes[2]
    assert fixes[3].startswith("quantization-aware training")
    minmax = dg.reference_fixes(
        _spec(
            calibration={"dataset": {"uri": "file:///c/"}},
            mixedPrecision={"mode": "auto"},
            evaluation={"dataset": {"uri": "file:///e/"}},
        )
    )
    assert not any("minmax instead" in f for f in minmax) and "maxPinnedLayers" in minmax[1]


@pytest.mark.parametrize(
    ("samples", "used", "starts", "words"),
    [
        (100, None, "use more calibration data", "raise calibration.samples from 100 to 500-1000"),
        (500, None, "use more diverse calibration data", "already within the recommended 500-1000"),
        (1000, None, "use more diverse calibration data", "already within"),
        (5000, None, "use more diverse calibration data", "already above"),
        (
            800,
            120,
            "use more calibration data",
            "only 120 usable images reached calibration (calibration.samples asks for 800",
        ),
        (800, 600, "use more diverse calibration data", "600 samples is already within"),
    ],
)
def test_calibration_advice_accounts_for_what_is_set(samples: int, used: int | None, starts: str, words: str) -> None:
    spec = _spec(calibration={"dataset": {"uri": "file:///c/"}, "samples": samples, "minSamples": 1})
    first = dg.reference_fixes(spec, calibration_used=used)[0]
    assert first.startswith(starts) and words in first, first


def test_algorithm_advice_names_only_a_change() -> None:
    def algorithm_fixes(method: str, model: str, algorithm: str) -> list[str]:
        spec = _spec(
            method=method,
            model={"uri": f"file:///m.{model}", "input": {"shape": [4, 4, 1], "colorOrder": "GRAY"}},
            calibration={"dataset": {"uri": "file:///c/"}, "algorithm": algorithm},
        )
        return [f for f in dg.reference_fixes(spec) if "calibration.algorithm" in f]

    assert algorithm_fixes("onnx-static", "onnx", "minmax") == []
    assert "minmax instead of entropy" in algorithm_fixes("onnx-static", "onnx", "entropy")[0]
    assert "minmax instead of percentile" in algorithm_fixes("onnx-static", "onnx", "percentile")[0]
    assert algorithm_fixes("tflite-int8", "keras", "entropy") == []  # TFLite calibrates with min/max whatever is set


def test_methods_without_calibration_or_pinning_get_fitting_advice() -> None:
    dynamic = dg.reference_fixes(_spec(method="onnx-dynamic", calibration=None))
    assert dynamic[0].startswith("use a method calibrated on representative data instead of onnx-dynamic")
    assert not any("mixedPrecision" in f for f in dynamic)  # onnx-dynamic cannot keep layers in float
    trt = dg.reference_fixes(_spec(method="tensorrt-int8"))
    assert any(f.startswith("keep the sensitive layers in float: method tensorrt-mixed") for f in trt)


def test_alternative_input_scale() -> None:
    assert dg.alternative_input_scale(api.Scaling())[0] == 255.0
    assert dg.alternative_input_scale(api.Scaling(scale=1 / 127.5, offset=-1))[0] == 255.0
    assert dg.alternative_input_scale(api.Scaling(scale=1.0))[0] == pytest.approx(1 / 255)
    assert dg.alternative_input_scale(api.Scaling())[1] == "scale 1 (0-255 pixel values)"


def test_rescaled_inputs_equal_preprocessing_with_the_other_scaling() -> None:
    """The alternative is computed from preprocessed inputs, mean/std included, without the raw pixels."""
    from edgequant.data.preprocess import normalize

    pixels = np.random.default_rng(5).integers(0, 256, (2, 3, 3, 3), dtype=np.uint8)
    for scaling in (
        {"scale": 1.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},  # mean/std in 0-1 units, scale 1.0
        {"scale": 1 / 255},
        {"scale": 1 / 127.5, "offset": -1.0},
    ):
        for layout, shape in (("NHWC", [3, 3, 3]), ("NCHW", [3, 3, 3])):
            contract = api.InputContract(shape=shape, layout=layout, scaling=scaling)
            factor, other = dg.alternative_scaling(contract.scaling)
            expected = normalize(pixels, contract.model_copy(update={"scaling": other}))
            got = dg.rescale_inputs(normalize(pixels, contract), contract, factor)
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


def test_preprocessing_check_needs_a_significant_gain() -> None:
    rng = np.random.default_rng(6)
    right = rng.random(256) < 0.6
    # 20 inputs only the other scaling gets right, none the other way round: 7.8 points, z = 4.5
    better = right.copy()
    better[np.flatnonzero(~right)[:20]] = True
    fired = dg.check_preprocessing(
        model="fp32", correct=right, alternative_correct=better, alternative="scale 1", configured="scale 0.00392157"
    )
    assert fired.fired and fired.evidence["z"] >= dg.PREPROCESSING_Z
    assert "spec.model.input.scaling scale 1" in fired.message and "scale 1" in fired.fixes[0]
    # 60 against 40: the same size of gain, but within what chance gives on 100 disagreements (z = 2)
    noisy = right.copy()
    noisy[np.flatnonzero(~right)[:60]] = True
    noisy[np.flatnonzero(right)[:40]] = False
    quiet = dg.check_preprocessing(model="fp32", correct=right, alternative_correct=noisy, alternative="scale 1")
    assert quiet.evidence["alternativeAccuracy"] - quiet.evidence["accuracy"] >= dg.PREPROCESSING_GAIN
    assert not quiet.fired and quiet.evidence["z"] < dg.PREPROCESSING_Z


def test_input_range_flags_near_constant_and_far_out_inputs() -> None:
    scaling = api.Scaling(scale=1.0, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    # ImageNet mean/std in 0-255 units with scale 1/255 (the spec rejects it; a run can still get such inputs)
    # (each channel spans 1/57: the whole tensor [-2.12, -1.79] only because the channel means differ)
    contract = api.InputContract(shape=[3, 4, 4], layout="NCHW")
    fed = np.random.default_rng(7).random((8, 3, 4, 4)).astype(np.float32)  # [0, 1] as scale 1/255 makes it
    fed = (fed - np.array([123.675, 116.28, 103.53], np.float32)[:, None, None]) / np.array(
        [58.395, 57.12, 57.375], np.float32
    )[:, None, None]
    stats = dg.InputStats.of(fed, channel_axis=dg.channel_axis(contract))
    assert stats.high - stats.low > 0.3 and stats.span is not None and stats.span < 0.02
    narrow = dg.check_input_range(stats, api.Scaling())
    assert narrow.fired and "almost constant" in narrow.message and "scale 1.0" in narrow.fixes[0]
    wide = dg.check_input_range(dg.InputStats(low=-2.1, high=1131.0, mean=500.0, std=280.0), scaling)
    assert wide.fired and "scale 1/255" in wide.fixes[0]
    for low, high in ((0.0, 1.0), (-1.0, 1.0), (-2.1, 2.6), (0.0, 255.0), (-123.7, 151.1)):  # the common conventions
        assert not dg.check_input_range(dg.InputStats(low=low, high=high, mean=0.0, std=1.0), api.Scaling()).fired


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
        "output-mismatch",
        "output-collapsed",
        "output-clipped",
        "fp32-undecided",
        "input-range",
        "preprocessing-mismatch",
        "preprocessing-mismatch",
    ]
    assert _fired(healthy.findings) == set()
    broken = dg.diagnose(
        spec=spec,
        inputs=x,
        labels=y,
        predict_fp32=model,
        predict_quantized=uint8_model_fed_float,
        contract="uint8 0-255",
    )
    pre = [f for f in broken.findings if f.check == "preprocessing-mismatch"]
    assert not pre[0].fired and pre[1].fired
    assert "uint8 0-255" in pre[1].fixes[0]
    assert broken.distribution is not None and len(broken.distribution.edges) == dg.HISTOGRAM_BINS + 1
    assert sum(broken.distribution.fp32) == x.shape[0] * 4


def test_no_labels_skips_the_preprocessing_check(logits: np.ndarray) -> None:
    report = dg.diagnose(
        spec=_spec(),
        inputs=np.zeros((len(logits), 1), np.float32),
        labels=None,
        predict_fp32=lambda _x: logits,
        predict_quantized=lambda _x: logits,
    )
    assert [f.check for f in report.findings] == [
        "output-mismatch",
        "output-collapsed",
        "output-clipped",
        "fp32-undecided",
        "input-range",
    ]


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
        report = dg.diagnose(
            spec=spec,
            inputs=inputs,
            labels=labels,
            predict_fp32=lambda x: fp32[x[:, 0].astype(int) % 1000],
            predict_quantized=lambda x: quantized[x[:, 0].astype(int) % 1000],
        )
        return next(f for f in report.findings if f.check == "output-mismatch")

    fine = diagnosed(qat, retrained)
    assert fine.evidence["top1Agreement"] < dg.MISMATCH_TOP1_AGREEMENT  # it does diverge ...
    assert not fine.fired and "fine-tuning" in fine.message and fine.fixes == []  # ... as QAT intends
    assert fine.evidence["quantizedAccuracy"] >= fine.evidence["fp32Accuracy"] - 0.01
    assert diagnosed(qat, worse).fired
    assert diagnosed(_spec(), retrained).fired  # post-training quantization has no such excuse


def test_a_quantized_model_slower_than_float_is_a_finding_that_names_what_was_kept_at_16_bit() -> None:
    widened = ["16-bit activations for every activation (95 tensors)"]
    slow = dg.check_slower_than_float(fp32_ms=7.0, quantized_ms=30.0, widened=widened)
    assert slow.fired and slow.evidence["speedup"] == pytest.approx(7.0 / 30.0)
    assert "95 tensors" in slow.message and "sixteenBitActivations off" in slow.fixes[0]
    plain = dg.check_slower_than_float(fp32_ms=7.0, quantized_ms=9.0, widened=[])
    assert plain.fired and plain.fixes[0].startswith("latency is measured on the worker's CPU")
    fast = dg.check_slower_than_float(fp32_ms=7.0, quantized_ms=4.9, widened=widened)
    assert not fast.fired and fast.fixes == []
    within_noise = dg.check_slower_than_float(fp32_ms=7.0, quantized_ms=7.5, widened=[])
    toy = dg.check_slower_than_float(fp32_ms=0.05, quantized_ms=0.2, widened=[])  # call overhead, not the model
    assert not within_noise.fired and not toy.fired
