"""Benchmark: fast sensitivity vs one quantize+evaluate, and how well it agrees with the exhaustive ranking.

Run: ``make bench-sensitivity`` (or ``.venv/bin/python bench/sensitivity.py``). Not part of CI's pass/fail.

For each model, in the same process and on the same data:

- ``one run``: what a plain tflite-int8 job does once: TFLiteConverter full-INT8
  conversion (uint8 I/O, 500 representative images) + scoring the artifact on
  the evaluation set with the worker's evaluator;
- ``fast``: edgequant's fast mode: one calibration + the whole-model-verify probe
  on 256 images + the ranking (what the worker's sensitivity stage runs);
- ``exhaustive``: the same calibration + one re-quantization and one scoring per layer.

It prints the cost ratios (targets: fast <= 3x one run; exhaustive ~ L x) and
the top-5 overlap of the two rankings (target >= 4 of 5), with Spearman's rho.

Models (trained briefly on Fashion-MNIST, cached under .cache/bench-sensitivity/):
``natural`` as trained, and ``graded``: the same function with four layers made
sensitive to different degrees (each reads one extra, always-zero channel
through weights 110x-400x its largest weight, which wrecks its
per-channel INT8 scales), so the exhaustive ranking has a real order.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from edgequant.analysis.sensitivity import agreement, exhaustive_sensitivity, fast_sensitivity  # noqa: E402
from edgequant.analysis.tflite_sensitivity import TFLiteLayerAnalysis  # noqa: E402
from edgequant.api import v1alpha1 as api  # noqa: E402
from edgequant.backends.base import Batches  # noqa: E402
from edgequant.data.idx import load_fashion_mnist  # noqa: E402

CACHE = ROOT / ".cache" / "bench-sensitivity"
#: Layer given one extra, always-zero output channel -> the next layer, whose weights reading it are set to
#: this factor x its largest weight. The float function is unchanged (the channel is dead), but the victim's
#: per-channel 8-bit weight scales are blown up by the factor: graded, isolated weight sensitivity.
GRADED = (("c1", "c2", 400.0), ("pw1", "c3", 150.0), ("c3", "fc1", 110.0), ("fc1", "logits", 120.0))
WIDTHS = {"c1": 16, "c2": 16, "pw1": 32, "c3": 32, "fc1": 64}


def build(widths: dict[str, int]) -> Any:
    import keras

    L = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(widths["c1"], 3, padding="same", activation="relu", name="c1"),
        L.Conv2D(widths["c2"], 3, padding="same", activation="relu", name="c2"),
        L.MaxPooling2D(name="p1"),
        L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw1"),
        L.Conv2D(widths["pw1"], 1, activation="relu", name="pw1"),
        L.MaxPooling2D(name="p2"),
        L.Conv2D(widths["c3"], 3, padding="same", activation="relu", name="c3"),
        L.Flatten(name="flat"),
        L.Dense(widths["fc1"], activation="relu", name="fc1"),
        L.Dense(10, name="logits"),
    ])


def build_and_train(x: np.ndarray, y: np.ndarray, path: Path) -> None:
    import keras

    keras.utils.set_random_seed(1)
    model = build(WIDTHS)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    model.save(path)


def make_graded(source: Path, path: Path) -> None:
    """Copy the trained weights into a model with one extra dead channel per feeder and blown-up victim weights."""
    import keras

    trained = keras.models.load_model(source)
    wider = dict(WIDTHS)
    for feeder, _victim, _factor in GRADED:
        wider[feeder] += 1
    model = build(wider)
    for layer in model.layers:
        old = trained.get_layer(layer.name).get_weights()
        new = [np.zeros_like(w) for w in layer.get_weights()]
        if not old:
            continue
        kernel, bias = old
        if layer.name == "fc1":  # inputs are the flattened 7x7xC map: spread the old rows over the wider channel axis
            c_old, c_new = WIDTHS["c3"], wider["c3"]
            rows = np.arange(7 * 7 * c_new).reshape(7, 7, c_new)[:, :, :c_old].ravel()
            new[0][rows, : kernel.shape[1]] = kernel
        else:
            new[0][tuple(slice(0, n) for n in kernel.shape)] = kernel
        new[1][: bias.shape[0]] = bias
        for feeder, victim, factor in GRADED:
            if layer.name == feeder:  # the extra output channel: zero weights, negative bias -> 0 after ReLU
                new[1][-1] = -1.0
            if layer.name == victim:
                big = factor * np.abs(kernel).max()
                if victim == "fc1":
                    new[0][np.arange(7 * 7 * wider["c3"]).reshape(7, 7, -1)[:, :, -1].ravel(), :] = big
                elif new[0].ndim == 4:
                    new[0][:, :, -1, :] = big
                else:
                    new[0][-1, :] = big
        layer.set_weights(new)
    model.save(path)


def cached(name: str, make: Callable[[Path], None], *keys: object) -> Path:
    digest = hashlib.sha256("|".join([inspect.getsource(build), inspect.getsource(build_and_train), inspect.getsource(make_graded), *map(str, keys)]).encode()).hexdigest()[:16]
    path = CACHE / f"{name}-{digest}.keras"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")
        make(tmp)
        tmp.replace(path)
    return path


def batches(x: np.ndarray, y: np.ndarray, size: int = 100) -> Batches:
    return Batches(make_iter=lambda: ((x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)), count=len(x), batch_size=size)


def bench_model(name: str, model_path: Path, *, cal: np.ndarray, ex: np.ndarray, ey: np.ndarray, repeats: int, work: Path) -> dict[str, Any]:
    from edgequant.backends.tflite import convert as conv
    from edgequant.backends.tflite.predictor import TFLitePredictor
    from edgequant.backends.tflite.source import load_source
    from edgequant.backends.tflite.tf import import_tf
    from edgequant.worker.evaluate import evaluate

    tf = import_tf()
    source = load_source(model_path, fmt=api.ModelFormat.KERAS, workdir=work / name)
    cal_batches = batches(cal, np.zeros(len(cal), dtype=np.int64))

    def accuracy(path: Path) -> float:
        top1 = evaluate(predictor=TFLitePredictor(path), data=batches(ex, ey), latency_runs=0).top1
        assert top1 is not None
        return top1

    def one_run() -> float:
        data = conv.convert_saved_model(source.saved_model_dir, method=api.Method.TFLITE_INT8, representative=conv.representative_from(cal_batches))
        path = work / name / "plain.tflite"
        path.write_bytes(data)
        return accuracy(path)

    def calibrated() -> TFLiteLayerAnalysis:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(source.saved_model_dir))
        conv.configure(converter, method=api.Method.TFLITE_INT8, representative=conv.representative_from(cal_batches))
        return TFLiteLayerAnalysis.prepare(converter=converter, keras_model=source.keras_model, workdir=work / name / "layers", stem=name)

    def fast() -> list[str]:
        tool = calibrated()
        return [e.layer for e in fast_sensitivity(probes=tool.probe([cal], max_samples=256), threshold=0.005, seconds=0.0).layers]

    fp32_path = work / name / "fp32.tflite"
    fp32_path.write_bytes(conv.convert_saved_model(source.saved_model_dir, method=None))
    reference = accuracy(fp32_path)

    def exhaustive() -> list[str]:
        tool = calibrated()
        report = exhaustive_sensitivity(
            layers=tool.layers, reference_accuracy=reference, threshold=0.005,
            accuracy_with_only=lambda layer: accuracy(tool.model_with_only(layer)),
        )
        exhaustive.report = report  # type: ignore[attr-defined]
        return [e.layer for e in report.layers]

    one_run(), fast()  # warm-up: imports, graph tracing, XNNPACK init
    t_one, t_fast, t_ex = [], [], []
    fast_order: list[str] = []
    ex_order: list[str] = []
    int8_acc = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        int8_acc = one_run()
        t_one.append(time.perf_counter() - start)
        start = time.perf_counter()
        fast_order = fast()
        t_fast.append(time.perf_counter() - start)
    for _ in range(max(1, repeats // 2)):
        start = time.perf_counter()
        ex_order = exhaustive()
        t_ex.append(time.perf_counter() - start)
    agree = agreement(fast=fast_order, exhaustive=ex_order, k=5)
    report = exhaustive.report  # type: ignore[attr-defined]
    one, f, e = statistics.median(t_one), statistics.median(t_fast), statistics.median(t_ex)
    return {
        "model": name, "layers": len(ex_order), "fp32": reference, "int8": int8_acc,
        "one_run_s": one, "fast_s": f, "exhaustive_s": e, "fast_ratio": f / one, "exhaustive_ratio": e / one,
        "overlap": agree.top_k_overlap, "k": agree.k, "spearman": agree.spearman,
        "fast_top": agree.fast_top, "exhaustive_top": agree.exhaustive_top,
        "deltas": {x.layer: x.accuracy_delta for x in report.layers[:5]},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    parser.add_argument("--eval-samples", type=int, default=2000)
    args = parser.parse_args()

    x, y = load_fashion_mnist("train")
    tx, ty = load_fashion_mnist("test")
    prep = lambda a: (a[..., None] / np.float32(255.0)).astype(np.float32)  # noqa: E731
    train_x, train_y = prep(x[:30_000]), y[:30_000]
    cal = prep(x[30_000:30_500])
    ex, ey = prep(tx[: args.eval_samples]), ty[: args.eval_samples]

    natural = cached("natural", lambda p: build_and_train(train_x, train_y, p), 30_000)
    # the graded model must compute what the natural one does
    import keras
    check = ex[:200]
    assert np.allclose(keras.models.load_model(natural).predict(check, verbose=0), keras.models.load_model(
        cached("graded", lambda p: make_graded(natural, p), natural.name, GRADED)).predict(check, verbose=0), atol=1e-3)
    graded = cached("graded", lambda p: make_graded(natural, p), natural.name, GRADED)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sensitivity-") as tmp:
        for name, path in (("natural", natural), ("graded", graded)):
            rows.append(bench_model(name, path, cal=cal, ex=ex, ey=ey, repeats=args.repeats, work=Path(tmp)))

    print(f"\nFashion-MNIST CNN, {args.eval_samples} evaluation images, 500 calibration images, median of {args.repeats} runs, {os.cpu_count()} CPUs\n")
    print(f"{'model':8} {'L':>2} {'fp32':>6} {'int8':>6} {'one run':>8} {'fast':>7} {'exhaust.':>8} {'fast/one':>8} {'exh./one':>8} {'top-5':>6} {'rho':>5}")
    for r in rows:
        rho = "n/a" if r["spearman"] is None else f"{r['spearman']:.2f}"
        print(
            f"{r['model']:8} {r['layers']:>2} {r['fp32']:6.4f} {r['int8']:6.4f} {r['one_run_s']:7.2f}s {r['fast_s']:6.2f}s {r['exhaustive_s']:7.2f}s "
            f"{r['fast_ratio']:7.2f}x {r['exhaustive_ratio']:7.2f}x {r['overlap']:>3}/{r['k']} {rho:>5}"
        )
    for r in rows:
        print(f"\n{r['model']}: exhaustive top-5 {r['exhaustive_top']} (accuracy deltas {', '.join(f'{k} {v:+.4f}' for k, v in r['deltas'].items())})")
        print(f"{' ' * len(r['model'])}  fast top-5       {r['fast_top']}")
    print("\ntargets: fast/one <= 3x, top-5 overlap >= 4 of 5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
