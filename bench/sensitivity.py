"""Benchmark: fast sensitivity vs one quantize+evaluate, and how well it agrees with the exhaustive ranking.

Run: ``make bench-sensitivity`` (or ``.venv/bin/python bench/sensitivity.py``). Not part of CI's pass/fail.

For each model, in the same process and on the same data:

- ``one run``: what a plain job does once: TFLite: TFLiteConverter full-INT8
  conversion (uint8 I/O, 500 representative images); ONNX Runtime: a fresh
  onnx-static quantization by the onnxruntime backend (pre-processing, MinMax on
  500 images, Q/DQ); then scoring the artifact on
  the evaluation set with the worker's evaluator;
- ``fast``: edgequant's fast mode: one calibration + the probe on 256 images + the
  ranking (what the worker's sensitivity stage runs): TFLite's layer-wise and
  whole-model debug models; ORT's qdq_loss_debug on the float and QDQ models;
- ``exhaustive``: the same calibration + one re-quantization and one scoring per layer.

The ONNX rows run the same trained weights exported to an NCHW ONNX graph.

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
from edgequant.api import v1alpha1 as api  # noqa: E402
from edgequant.backends.base import Batches  # noqa: E402
from edgequant.backends.tflite.sensitivity import TFLiteLayerAnalysis  # noqa: E402
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
    return keras.Sequential(
        [
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
        ]
    )


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
    digest = hashlib.sha256(
        "|".join(
            [
                inspect.getsource(build),
                inspect.getsource(build_and_train),
                inspect.getsource(make_graded),
                *map(str, keys),
            ]
        ).encode()
    ).hexdigest()[:16]
    path = CACHE / f"{name}-{digest}.keras"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")
        make(tmp)
        tmp.replace(path)
    return path


def to_onnx(keras_path: Path, onnx_path: Path) -> Path:
    """The bench CNN's Keras weights as an NCHW ONNX graph: one node per layer op, named like the Keras layers."""
    import keras
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = keras.models.load_model(keras_path)
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    x, hw = "input", 28
    for layer in model.layers:
        kind, name = type(layer).__name__, layer.name
        if kind in ("Conv2D", "DepthwiseConv2D"):
            kernel, bias = layer.get_weights()
            k = kernel.shape[0]
            if kind == "DepthwiseConv2D":  # (kh, kw, C, 1) -> (C, 1, kh, kw), one group per channel
                w, group = kernel.transpose(2, 3, 0, 1), kernel.shape[2]
            else:  # HWIO -> OIHW
                w, group = kernel.transpose(3, 2, 0, 1), 1
            pads = [k // 2] * 4 if layer.padding == "same" else [0] * 4
            nodes.append(
                helper.make_node(
                    "Conv",
                    [x, const(f"{name}.weight", w), const(f"{name}.bias", bias)],
                    [f"{name}_out"],
                    name=name,
                    kernel_shape=[k, k],
                    pads=pads,
                    group=group,
                )
            )
            nodes.append(helper.make_node("Relu", [f"{name}_out"], [f"{name}_relu"], name=f"{name}_relu"))
            x = f"{name}_relu"
        elif kind == "MaxPooling2D":
            nodes.append(
                helper.make_node("MaxPool", [x], [f"{name}_out"], name=name, kernel_shape=[2, 2], strides=[2, 2])
            )
            x, hw = f"{name}_out", hw // 2
        elif kind == "Flatten":  # Keras flattens HWC: transpose first so the Dense rows line up
            nodes.append(helper.make_node("Transpose", [x], [f"{name}_nhwc"], name=f"{name}_nhwc", perm=[0, 2, 3, 1]))
            nodes.append(helper.make_node("Flatten", [f"{name}_nhwc"], [f"{name}_out"], name=name, axis=1))
            x = f"{name}_out"
        elif kind == "Dense":
            kernel, bias = layer.get_weights()
            out = "logits" if layer is model.layers[-1] else f"{name}_out"
            nodes.append(
                helper.make_node(
                    "Gemm", [x, const(f"{name}.weight", kernel), const(f"{name}.bias", bias)], [out], name=name
                )
            )
            x = out
            if layer.get_config().get("activation") == "relu":
                nodes.append(helper.make_node("Relu", [out], [f"{name}_relu"], name=f"{name}_relu"))
                x = f"{name}_relu"
    graph = helper.make_graph(
        nodes,
        "bench_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    onnx.save(proto, onnx_path)
    return onnx_path


def bench_ort(
    name: str, keras_path: Path, *, cal: np.ndarray, ex: np.ndarray, ey: np.ndarray, repeats: int, work: Path
) -> dict[str, Any]:
    """The same measurements for onnx-static, through the onnxruntime backend (a fresh one per run: no cached ranges)."""
    from edgequant.analysis.layer_tools import layer_tool_for
    from edgequant.api.backend_options import backend_options
    from edgequant.backends.base import QuantizeRequest
    from edgequant.backends.onnxruntime.backend import OnnxRuntimeBackend
    from edgequant.backends.onnxruntime.predictor import OrtPredictor
    from edgequant.worker.evaluate import evaluate

    folder = work / f"ort-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    model = to_onnx(keras_path, folder / f"{name}.onnx")
    cal_nchw, ex_nchw = cal.transpose(0, 3, 1, 2).copy(), ex.transpose(0, 3, 1, 2).copy()
    spec = api.QuantizationJobSpec.model_validate(
        {
            "model": {"uri": "file:///m.onnx", "input": {"shape": [1, 28, 28], "layout": "NCHW", "colorOrder": "GRAY"}},
            "method": "onnx-static",
            "calibration": {"dataset": {"uri": "file:///cal/"}},
            "output": {"uri": "file:///out/"},
        }
    )
    counter = iter(range(10_000))

    def request() -> QuantizeRequest:
        return QuantizeRequest(
            options=backend_options(spec),
            model_path=model,
            workdir=folder / f"run{next(counter)}",
            calibration=batches(cal_nchw, np.zeros(len(cal), dtype=np.int64)),
            log=lambda _m: None,
        )

    def accuracy(path: Path) -> float:
        top1 = evaluate(predictor=OrtPredictor(path), data=batches(ex_nchw, ey), latency_runs=0).top1
        assert top1 is not None
        return top1

    def one_run() -> float:  # what one onnx-static job does: pre-process, calibrate, Q/DQ, then score
        return accuracy(OnnxRuntimeBackend().quantize(request()).path)

    def fast() -> list[str]:
        tool = layer_tool_for(request(), OnnxRuntimeBackend())
        return [
            e.layer
            for e in fast_sensitivity(
                probes=tool.probe([cal_nchw], max_samples=256), threshold=0.005, seconds=0.0
            ).layers
        ]

    reference = accuracy(model)
    holder: dict[str, Any] = {}

    def exhaustive() -> list[str]:
        tool = layer_tool_for(request(), OnnxRuntimeBackend())
        holder["report"] = exhaustive_sensitivity(
            layers=tool.layers,
            reference_accuracy=reference,
            threshold=0.005,
            accuracy_with_only=lambda layer: accuracy(tool.model_with_only(layer)),
        )
        return [e.layer for e in holder["report"].layers]

    return _measure(f"ort/{name}", reference, one_run, fast, exhaustive, holder, repeats)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, CPU seconds of this process, wall seconds): CPU time holds still when other jobs share the machine."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def _measure(
    label: str,
    reference: float,
    one_run: Callable[[], float],
    fast: Callable[[], list[str]],
    exhaustive: Callable[[], list[str]],
    holder: dict[str, Any],
    repeats: int,
) -> dict[str, Any]:
    """Warm up, then time one run and fast alternately, exhaustive once per two repeats: median CPU time, best wall time."""
    one_run(), fast()
    one: list[tuple[float, float]] = []
    quick: list[tuple[float, float]] = []
    full: list[tuple[float, float]] = []
    fast_order: list[str] = []
    ex_order: list[str] = []
    int8_acc = 0.0
    for _ in range(repeats):
        int8_acc, cpu, wall = _timed(one_run)
        one.append((cpu, wall))
        fast_order, cpu, wall = _timed(fast)
        quick.append((cpu, wall))
    for _ in range(max(1, repeats // 2)):
        ex_order, cpu, wall = _timed(exhaustive)
        full.append((cpu, wall))
    agree = agreement(fast=fast_order, exhaustive=ex_order, k=5)

    def cpu_of(runs: list[tuple[float, float]]) -> float:
        return statistics.median(c for c, _w in runs)

    def wall_of(runs: list[tuple[float, float]]) -> float:
        return min(w for _c, w in runs)

    return {
        "model": label,
        "layers": len(ex_order),
        "fp32": reference,
        "int8": int8_acc,
        "one_cpu": cpu_of(one),
        "fast_cpu": cpu_of(quick),
        "ex_cpu": cpu_of(full),
        "one_wall": wall_of(one),
        "fast_wall": wall_of(quick),
        "ex_wall": wall_of(full),
        "overlap": agree.top_k_overlap,
        "k": agree.k,
        "spearman": agree.spearman,
        "fast_top": agree.fast_top,
        "exhaustive_top": agree.exhaustive_top,
        "deltas": {x.layer: x.accuracy_delta for x in holder["report"].layers[:5]},
    }


def batches(x: np.ndarray, y: np.ndarray, size: int = 100) -> Batches:
    return Batches(
        make_iter=lambda: ((x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)),
        count=len(x),
        batch_size=size,
    )


def bench_model(
    name: str, model_path: Path, *, cal: np.ndarray, ex: np.ndarray, ey: np.ndarray, repeats: int, work: Path
) -> dict[str, Any]:
    from edgequant.backends.tflite import convert as conv
    from edgequant.backends.tflite.predictor import TFLitePredictor
    from edgequant.backends.tflite.source import load_source
    from edgequant.worker.evaluate import evaluate

    (work / name).mkdir(parents=True, exist_ok=True)
    source = load_source(model_path, fmt=api.ModelFormat.KERAS, workdir=work / name)
    cal_batches = batches(cal, np.zeros(len(cal), dtype=np.int64))

    def accuracy(path: Path) -> float:
        top1 = evaluate(predictor=TFLitePredictor(path), data=batches(ex, ey), latency_runs=0).top1
        assert top1 is not None
        return top1

    def one_run() -> float:
        data = conv.convert_source(
            source, method=api.Method.TFLITE_INT8, representative=conv.representative_from(cal_batches)
        )
        path = work / name / "plain.tflite"
        path.write_bytes(data)
        return accuracy(path)

    def calibrated() -> TFLiteLayerAnalysis:
        converter = source.converter()
        conv.configure(converter, method=api.Method.TFLITE_INT8, representative=conv.representative_from(cal_batches))
        return TFLiteLayerAnalysis.prepare(
            converter=converter, keras_model=source.keras_model, workdir=work / name / "layers", stem=name
        )

    def fast() -> list[str]:
        tool = calibrated()
        return [
            e.layer
            for e in fast_sensitivity(probes=tool.probe([cal], max_samples=256), threshold=0.005, seconds=0.0).layers
        ]

    fp32_path = work / name / "fp32.tflite"
    fp32_path.write_bytes(conv.convert_source(source, method=None))
    reference = accuracy(fp32_path)

    holder: dict[str, Any] = {}

    def exhaustive() -> list[str]:
        tool = calibrated()
        holder["report"] = exhaustive_sensitivity(
            layers=tool.layers,
            reference_accuracy=reference,
            threshold=0.005,
            accuracy_with_only=lambda layer: accuracy(tool.model_with_only(layer)),
        )
        return [e.layer for e in holder["report"].layers]

    return _measure(f"tflite/{name}", reference, one_run, fast, exhaustive, holder, repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    parser.add_argument("--eval-samples", type=int, default=2000)
    parser.add_argument("--tflite-only", action="store_true", help="skip the ONNX Runtime rows")
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
    assert np.allclose(
        keras.models.load_model(natural).predict(check, verbose=0),
        keras.models.load_model(cached("graded", lambda p: make_graded(natural, p), natural.name, GRADED)).predict(
            check, verbose=0
        ),
        atol=1e-3,
    )
    graded = cached("graded", lambda p: make_graded(natural, p), natural.name, GRADED)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sensitivity-") as tmp:
        for name, path in (("natural", natural), ("graded", graded)):
            rows.append(bench_model(name, path, cal=cal, ex=ex, ey=ey, repeats=args.repeats, work=Path(tmp)))
        if not args.tflite_only:
            for name, path in (("natural", natural), ("graded", graded)):
                rows.append(bench_ort(name, path, cal=cal, ex=ex, ey=ey, repeats=args.repeats, work=Path(tmp)))

    print(
        f"\nFashion-MNIST CNN, {args.eval_samples} evaluation images, 500 calibration images, {args.repeats} runs, {os.cpu_count()} CPUs"
    )
    print("CPU seconds of this process (median) and best wall seconds; ratios against one plain quantize+evaluate\n")
    print(
        f"{'model':14} {'L':>2} {'fp32':>6} {'int8':>6} {'one run':>13} {'fast':>13} {'exhaustive':>13} {'fast/one':>13} {'exh./one':>13} {'top-5':>6} {'rho':>5}"
    )
    print(f"{'':32}{'cpu / wall':>14}{'cpu / wall':>14}{'cpu / wall':>14}{'cpu / wall':>14}{'cpu / wall':>14}")
    for r in rows:
        rho = "n/a" if r["spearman"] is None else f"{r['spearman']:.2f}"
        print(
            f"{r['model']:14} {r['layers']:>2} {r['fp32']:6.4f} {r['int8']:6.4f} "
            f"{r['one_cpu']:5.2f}s/{r['one_wall']:5.2f}s {r['fast_cpu']:5.2f}s/{r['fast_wall']:5.2f}s {r['ex_cpu']:5.2f}s/{r['ex_wall']:5.2f}s "
            f"{r['fast_cpu'] / r['one_cpu']:5.2f}x/{r['fast_wall'] / r['one_wall']:5.2f}x {r['ex_cpu'] / r['one_cpu']:5.2f}x/{r['ex_wall'] / r['one_wall']:5.2f}x "
            f"{r['overlap']:>3}/{r['k']} {rho:>5}"
        )
    for r in rows:
        print(
            f"\n{r['model']}: exhaustive top-5 {r['exhaustive_top']} (accuracy deltas {', '.join(f'{k} {v:+.4f}' for k, v in r['deltas'].items())})"
        )
        print(f"{' ' * len(r['model'])}  fast top-5       {r['fast_top']}")
    print("\ntargets: fast/one <= 3x, top-5 overlap >= 4 of 5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
