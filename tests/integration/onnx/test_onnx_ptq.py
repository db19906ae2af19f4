"""spec.ptq on a real depthwise-separable network (separable.py, trained on Fashion-MNIST): equalization keeps the
float function, and edgequant's default post-training choices are no worse than ONNX Runtime's bare quantize_static."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.onnx import models, separable
from tests.integration.onnx.conftest import MODEL_CACHE

#: Largest agreement loss (on the 1000 test images) a held-out choice may show against the candidate it beat on the
#: held-out split: the two splits disagree by sampling alone. Measured on this net, 4 calibration seeds x both
#: reduce-range settings (docs/onnx.md): default - bare in [+0.000, +0.010], equalization on - off in [-0.002, +0.009],
#: standard deviation of the differences 0.004; the bound is the worst seen minus 2 standard deviations.
SPLIT_NOISE = 0.01


def separable_model_path(images: np.ndarray, labels: np.ndarray) -> Path:
    """separable.train_separable_cnn's .onnx, trained once per version of separable.py and models.py (its fit)."""
    key = hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in (separable, models))).hexdigest()[:16]
    folder = MODEL_CACHE / f"onnx-fmnist-separable-{key}"
    path = folder / "fmnist-separable.onnx"
    if not path.is_file():
        staging = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        separable.train_separable_cnn(images, labels, staging)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return path


@pytest.fixture(scope="module")
def separable_onnx(fashion_mnist: Any) -> Path:
    return separable_model_path(fashion_mnist.train_x, fashion_mnist.train_y)


@pytest.fixture(scope="module")
def test_inputs(prepared: Callable[[str, int], Any]) -> np.ndarray:
    return np.concatenate([x for x, _ in prepared("evaluation", 1000).batches()])


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    from edgequant.backends.onnxruntime.predictor import OrtPredictor

    predictor = OrtPredictor(path)
    return np.concatenate([predictor.predict(x[i : i + 100]) for i in range(0, len(x), 100)])


def _agreement(reference: np.ndarray, path: Path, x: np.ndarray) -> float:
    from edgequant.analysis.post_training import top1_agreement

    return top1_agreement(reference, _logits(path, x))


def test_equalization_keeps_the_float_function_of_the_separable_net(
    separable_onnx: Path, tmp_path: Path, test_inputs: np.ndarray
) -> None:
    from edgequant.backends.onnxruntime.ptq import equalize_model
    from edgequant.backends.onnxruntime.quantize import prepare_float_model
    from tests.integration.onnx.conftest import initializers

    fm = prepare_float_model(separable_onnx, workdir=tmp_path, preprocess=True, per_channel=True)
    path, search = equalize_model(fm.path, tmp_path / "equalized.onnx")
    assert len(search.pairs) == 8  # nine convolutions in a chain: stem -> dw1 -> pw1 -> ... -> pw4
    before, after = _logits(fm.path, test_inputs[:200]), _logits(path, test_inputs[:200])
    np.testing.assert_allclose(after, before, rtol=1e-3, atol=1e-3 * float(np.abs(before).max()))
    changed = [k for k, v in initializers(path).items() if not np.allclose(v, initializers(fm.path)[k])]
    assert len(changed) >= 10  # weights and biases of both layers of every pair were rescaled


def _bare_quantize_static(model: Path, calibration: Any, out: Path, *, reduce_range: bool) -> Path:
    """ONNX Runtime's own recipe with the backend's settings: quant_pre_process, then quantize_static with MinMax."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    from edgequant.backends.onnxruntime.calibration import BatchesReader, model_batches

    pre = out.with_suffix(".pre.onnx")
    with contextlib.redirect_stdout(sys.stderr):
        quant_pre_process(str(model), str(pre))
    reader = BatchesReader(model_batches(calibration, fixed_batch=None), input_name="input")
    quantize_static(
        str(pre),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    return out


@pytest.mark.parametrize("reduce_range", ["always", "never"])
def test_default_post_training_choices_are_no_worse_than_bare_quantize_static(
    reduce_range: str,
    separable_onnx: Path,
    quantize_request: Callable[..., Any],
    test_inputs: np.ndarray,
    tmp_path: Path,
) -> None:
    from edgequant.backends.onnxruntime.backend import OnnxRuntimeBackend

    reference = _logits(separable_onnx, test_inputs)
    request = quantize_request("onnx-static", model=separable_onnx, onnx={"reduceRange": reduce_range})
    artifact = OnnxRuntimeBackend().quantize(request)
    bare = _bare_quantize_static(
        separable_onnx, request.calibration, tmp_path / "bare.onnx", reduce_range=reduce_range == "always"
    )
    ours, theirs = _agreement(reference, artifact.path, test_inputs), _agreement(reference, bare, test_inputs)
    assert ours >= theirs - SPLIT_NOISE, (ours, theirs, artifact.notes)
    held_out = next(n for n in artifact.notes if n.startswith("ptq: held-out top-1 agreement"))
    assert "on 100 calibration samples" in held_out and "(ranges from the other 400)" in held_out
    assert all(rule in held_out for rule in ("minmax", "entropy", "percentile", "mse"))


def test_equalization_on_is_no_worse_than_off(
    separable_onnx: Path, quantize_request: Callable[..., Any], test_inputs: np.ndarray, tmp_path: Path
) -> None:
    from edgequant.backends.onnxruntime.backend import OnnxRuntimeBackend

    reference = _logits(separable_onnx, test_inputs)
    off = {
        "crossLayerEqualization": "off",
        "biasCorrection": "off",
        "rangeSearch": "off",
        "sixteenBitWeights": "off",
        "adaptiveRounding": "off",
        "selectAlgorithm": False,
    }
    plain = OnnxRuntimeBackend().quantize(
        quantize_request("onnx-static", model=separable_onnx, ptq=off, workdir=tmp_path / "off")
    )
    equalized = OnnxRuntimeBackend().quantize(
        quantize_request(
            "onnx-static", model=separable_onnx, ptq={**off, "crossLayerEqualization": "on"}, workdir=tmp_path / "on"
        )
    )
    assert any(n.startswith("ptq: cross-layer equalization applied to 8 Conv pairs") for n in equalized.notes)
    assert (
        _agreement(reference, equalized.path, test_inputs)
        >= _agreement(reference, plain.path, test_inputs) - SPLIT_NOISE
    )


def _same_model(a: Any, b: Any) -> bool:
    from edgequant.backends.onnxruntime.quantize import _same_initializers

    return _same_initializers(a, b) and list(a.graph.node) == list(b.graph.node)


@pytest.mark.parametrize("reduce_range", [True, False])
def test_qdq_template_makes_what_quantize_static_makes_for_other_ranges(
    reduce_range: bool, separable_onnx: Path, prepared: Callable[[str, int], Any], tmp_path: Path
) -> None:
    """The post-training search scores every range rule on one float model through a template of its first Q/DQ
    model; each must be exactly the model quantize_static makes with those ranges, including the weight scales it
    widens where a tiny input range would overflow an int32 bias."""
    import onnx
    from onnxruntime.quantization import TensorsData
    from onnxruntime.quantization.calibrate import TensorData

    from edgequant.api import v1alpha1 as api
    from edgequant.backends.onnxruntime import ptq
    from edgequant.backends.onnxruntime.options import StaticSettings
    from edgequant.backends.onnxruntime.quantize import (
        QdqTemplate,
        prepare_float_model,
        quantize_qdq,
        save_ranges,
    )

    fm = prepare_float_model(separable_onnx, workdir=tmp_path, preprocess=True, per_channel=True)
    calibration = np.concatenate([x for x, _ in prepared("calibration", 64).batches()])
    stats = ptq.collect_statistics(
        fm.path, [calibration[i : i + 16] for i in range(0, 64, 16)], input_name="input", workdir=tmp_path / "s"
    )
    settings = StaticSettings(reduce_range=reduce_range)
    algorithm = api.CalibrationAlgorithm.MINMAX

    def full(ranges: TensorsData, name: str, settings: StaticSettings = settings) -> onnx.ModelProto:
        path = save_ranges(ranges, tmp_path / f"{name}.json")
        quantize_qdq(float_model=fm, output_path=tmp_path / f"{name}.onnx", ranges_path=path, settings=settings)
        return onnx.load(str(tmp_path / f"{name}.onnx"))

    first = ptq.ranges_by("minmax", stats, percentile=99.999, algorithm=algorithm)
    full(first, "first")
    template = QdqTemplate.build(
        float_path=fm.path, qdq_path=tmp_path / "first.onnx", ranges_path=tmp_path / "first.json", settings=settings
    )
    assert template is not None
    # the first pointwise convolution's input squeezed to a millionth of its range: its bias scale would overflow
    squeezed = ptq.ranges_by("mse", stats, percentile=99.999, algorithm=algorithm)
    conv = next(b for b in template.biases if b.axis is not None and b.input_scale != "input_scale")
    tensor = template.activations[conv.input_scale]
    low, high = squeezed.data[tensor].range_value
    data = dict(squeezed.data)
    data[tensor] = TensorData(lowest=np.float32(low * 1e-6), highest=np.float32(high * 1e-6))
    squeezed = TensorsData(squeezed.calibration_method, data)
    widened = 0
    for rule, ranges in [
        *(
            (r, ptq.ranges_by(r, stats, percentile=99.999, algorithm=algorithm))
            for r in ("entropy", "percentile", "mse")
        ),
        ("squeezed", squeezed),
    ]:
        reference = full(ranges, rule)
        patched = template.for_ranges(ranges)
        assert patched is not None and _same_model(patched, reference), rule
        scales = {t.name: onnx.numpy_helper.to_array(t) for t in reference.graph.initializer}
        widened += int(np.sum(scales[conv.weight_scale] != template.weight_scales[conv.weight_scale]))
    assert widened > 0  # the squeezed input made quantize_static widen weight scales, and the template followed
    # the same graph with other weights and biases (equalized; adaptively rounded and bias-corrected alike)
    equalized, _search = ptq.equalize_model(fm.path, tmp_path / "equalized.onnx")
    rounded = ptq.round_weights_adaptively(
        fm.path, tmp_path / "rounded.onnx", moments={}, weight_qmax=64 if reduce_range else 127, per_channel=True
    ).path
    changed = onnx.load(str(rounded))
    rng = np.random.default_rng(1)
    for init in changed.graph.initializer:  # every weight and bias moved a little, one output channel zeroed
        value = onnx.numpy_helper.to_array(init)
        if value.ndim >= 1 and value.dtype == np.float32 and value.size > 1:
            value = (value * rng.uniform(0.5, 1.5, size=value.shape)).astype(np.float32)
            if value.ndim == 4:
                value[0] = 0.0
            init.CopyFrom(onnx.numpy_helper.from_array(value, init.name))
    onnx.save(changed, str(tmp_path / "changed.onnx"))
    for other in (equalized, tmp_path / "changed.onnx"):
        derived = template.with_weights(onnx.load(str(other)))
        assert derived is not None
        other_model = fm.__class__(path=other, model=fm.model, preprocessed=True)
        for rule in ("minmax", "mse"):
            ranges = ptq.ranges_by(rule, stats, percentile=99.999, algorithm=algorithm)
            path = save_ranges(ranges, tmp_path / f"{other.stem}-{rule}.json")
            quantize_qdq(float_model=other_model, output_path=tmp_path / "o.onnx", ranges_path=path, settings=settings)
            patched = derived.for_ranges(ranges)
            assert patched is not None and _same_model(patched, onnx.load(str(tmp_path / "o.onnx"))), (other, rule)
    wide = settings.model_copy(update={"sixteen_bit_activations": (tensor,)})
    full(first, "wide", wide)
    assert (
        QdqTemplate.build(
            float_path=fm.path, qdq_path=tmp_path / "wide.onnx", ranges_path=tmp_path / "first.json", settings=wide
        )
        is None
    )  # 16-bit tensors: quantize_static each time


def test_quantize_static_ignores_the_ranges_the_statistics_pass_keeps_no_histogram_for(
    separable_onnx: Path, prepared: Callable[[str, int], Any], tmp_path: Path
) -> None:
    """A convolution's output read only by its ReLU takes the ReLU's range in quantize_static, so the statistics
    pass keeps just its extremes: whatever range it carries, the Q/DQ model is the same."""
    import onnx
    from onnxruntime.quantization import TensorsData
    from onnxruntime.quantization.calibrate import TensorData

    from edgequant.api import v1alpha1 as api
    from edgequant.backends.onnxruntime import ptq
    from edgequant.backends.onnxruntime.options import StaticSettings
    from edgequant.backends.onnxruntime.quantize import prepare_float_model, quantize_qdq, save_ranges

    fm = prepare_float_model(separable_onnx, workdir=tmp_path, preprocess=True, per_channel=True)
    replaced = ptq.ranges_replaced(onnx.load(str(fm.path)))
    assert len(replaced) >= 8  # stem, then every depthwise and pointwise convolution of the four blocks
    calibration = np.concatenate([x for x, _ in prepared("calibration", 64).batches()])
    stats = ptq.collect_statistics(
        fm.path, [calibration[i : i + 16] for i in range(0, 64, 16)], input_name="input", workdir=tmp_path / "s"
    )
    assert set(stats.extremes) == replaced and not replaced & set(stats.histograms)
    ranges = ptq.ranges_by("mse", stats, percentile=99.999, algorithm=api.CalibrationAlgorithm.MINMAX)
    other = dict(ranges.data)
    for name in replaced:
        low, high = other[name].range_value
        other[name] = TensorData(lowest=np.float32(3 * low - 1), highest=np.float32(0.5 * high))
    models = []
    for tag, data in (("own", ranges), ("other", TensorsData(ranges.calibration_method, other))):
        path = save_ranges(data, tmp_path / f"{tag}.json")
        quantize_qdq(float_model=fm, output_path=tmp_path / f"{tag}.onnx", ranges_path=path, settings=StaticSettings())
        models.append(onnx.load(str(tmp_path / f"{tag}.onnx")))
    assert _same_model(*models)
