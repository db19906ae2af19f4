"""Static Q/DQ quantization through edgequant vs a bare ONNX Runtime call, same model, same data, same run.

    .venv/bin/python bench/onnx_static.py [--repeats 6] [--samples 500] [--algorithm minmax|entropy|percentile]

Both sides start from the same float .onnx file and the same calibration images, and end with the Q/DQ
.onnx file, with the same settings (QDQ, uint8 activations, int8 per-channel weights, no reduce range):

- bare: ONNX Runtime's recommended recipe, ``quant_pre_process`` then ``quantize_static`` with a
  ``CalibrationDataReader`` over the preprocessed floats, computed once beforehand;
- edgequant: ``OnnxRuntimeBackend().quantize(QuantizeRequest(method=onnx-static, calibration=Batches))``,
  a fresh backend each run (no cached pre-processing or ranges), normalising the uint8 pixels on the fly as
  the worker does. It also checks the model (onnx.checker, opset, input contract) and collects ranges one
  batch per call.

Batches hold 50 images so that ORT's own histogram calibrators can take the bare call's batches (they crash
on a shorter last batch). The model is a random-weight CNN built with onnx.helper (timing only; accuracy
is measured by tests/integration/onnx). Each variant is warmed up once and the order rotates every round.
Two measures: wall time (best run: other work on a shared machine only ever adds time) and this process's
CPU time (median; hardly moved by other processes). Target: edgequant / bare <= 1.05.
Not part of CI: it prints and never fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from edgequant.api import v1alpha1 as api  # noqa: E402
from edgequant.api.backend_options import backend_options  # noqa: E402
from edgequant.backends.base import QuantizeRequest  # noqa: E402
from edgequant.backends.onnxruntime.backend import OnnxRuntimeBackend  # noqa: E402
from edgequant.data.idx import load_fashion_mnist  # noqa: E402
from edgequant.data.loader import PreparedSet  # noqa: E402
from edgequant.util.cpu import detect  # noqa: E402

CONTRACT = api.InputContract(shape=[1, 28, 28], layout=api.Layout.NCHW, color_order=api.ColorOrder.GRAY)
BATCH = 50


def build_cnn(path: Path, seed: int = 0) -> Path:
    """Conv-BN-ReLU x3 (32, 64, 64 channels, two max-pools) -> Gemm 3136x128 -> ReLU -> Gemm 128x10, opset 17."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    x, channels = "input", 1
    for i, (out, pool) in enumerate(((32, False), (64, True), (64, True))):
        w = const(f"conv{i}.w", rng.standard_normal((out, channels, 3, 3)) * np.sqrt(2 / (9 * channels)))
        nodes.append(
            helper.make_node(
                "Conv", [x, w, const(f"conv{i}.b", np.zeros(out))], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]
            )
        )
        bn = [
            const(f"bn{i}.{k}", v)
            for k, v in (
                ("s", rng.uniform(0.5, 1.5, out)),
                ("b", rng.normal(0, 0.1, out)),
                ("m", rng.normal(0, 0.1, out)),
                ("v", rng.uniform(0.5, 1.5, out)),
            )
        ]
        nodes.append(helper.make_node("BatchNormalization", [f"c{i}", *bn], [f"n{i}"], name=f"bn{i}"))
        nodes.append(helper.make_node("Relu", [f"n{i}"], [f"r{i}"], name=f"relu{i}"))
        x = f"r{i}"
        if pool:
            nodes.append(
                helper.make_node("MaxPool", [x], [f"p{i}"], name=f"pool{i}", kernel_shape=[2, 2], strides=[2, 2])
            )
            x = f"p{i}"
        channels = out
    nodes.append(helper.make_node("Flatten", [x], ["flat"], name="flatten"))
    nodes.append(
        helper.make_node(
            "Gemm",
            [
                "flat",
                const("fc0.w", rng.standard_normal((64 * 7 * 7, 128)) * np.sqrt(2 / 3136)),
                const("fc0.b", np.zeros(128)),
            ],
            ["f0"],
            name="fc0",
        )
    )
    nodes.append(helper.make_node("Relu", ["f0"], ["f0r"], name="relu_fc"))
    nodes.append(
        helper.make_node(
            "Gemm",
            ["f0r", const("fc1.w", rng.standard_normal((128, 10)) * np.sqrt(2 / 128)), const("fc1.b", np.zeros(10))],
            ["logits"],
            name="fc1",
        )
    )
    graph = helper.make_graph(
        nodes,
        "bench_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def bare_quantize(
    model_path: Path, batches: list[np.ndarray], workdir: Path, algorithm: api.CalibrationAlgorithm, percentile: float
) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._feeds = iter([{"input": b} for b in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    pre = workdir / "pre.onnx"
    out = workdir / "bare.qdq.onnx"
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[algorithm.value]
    with contextlib.redirect_stdout(sys.stderr):
        quant_pre_process(str(model_path), str(pre))
        quantize_static(
            str(pre),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "CalibPercentile": percentile},
        )
    return out


def edgequant_quantize(
    model_path: Path, prepared: PreparedSet, workdir: Path, algorithm: api.CalibrationAlgorithm, percentile: float
) -> Path:
    spec = api.QuantizationJobSpec.model_validate(
        {
            "method": "onnx-static",
            "model": {"uri": f"file://{model_path}", "input": CONTRACT.to_wire()},
            "calibration": {
                "dataset": {"uri": "file:///unused/"},
                "samples": len(prepared),
                "algorithm": algorithm.value,
                "percentile": percentile,
            },
            "onnx": {"reduceRange": "never"},
            "output": {"uri": "file:///unused/"},
        }
    )
    request = QuantizeRequest(
        options=backend_options(spec),
        model_path=model_path,
        workdir=workdir,
        calibration=prepared.batches(batch_size=BATCH),
        log=lambda _m: None,
    )
    with contextlib.redirect_stdout(sys.stderr):
        return OnnxRuntimeBackend(cpu=detect()).quantize(request).path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--algorithm", choices=[a.value for a in api.CalibrationAlgorithm], default="minmax")
    parser.add_argument("--percentile", type=float, default=99.999)
    args = parser.parse_args()
    algorithm = api.CalibrationAlgorithm(args.algorithm)

    import logging

    logging.getLogger().setLevel(logging.ERROR)  # ORT's pre-processing advice, once per bare call
    x, y = load_fashion_mnist("train")
    prepared = PreparedSet(
        name="calibration",
        uri="bench",
        contract=CONTRACT,
        pixels=x[-args.samples :, :, :, None],
        labels=y[-args.samples :],
        sources=[],
        classes={},
    )
    floats = [b for b, _ in prepared.batches(batch_size=BATCH)]  # the bare side gets the same floats, precomputed
    variants = {
        "bare quant_pre_process + quantize_static": lambda m, d: bare_quantize(
            m, floats, d, algorithm, args.percentile
        ),
        "edgequant": lambda m, d: edgequant_quantize(m, prepared, d, algorithm, args.percentile),
    }
    names = list(variants)
    timings: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = build_cnn(Path(tmp) / "bench-cnn.onnx")
        for name in names:  # untimed warm-up (imports, sympy for symbolic shape inference)
            workdir = Path(tmp) / f"warm-{names.index(name)}"
            workdir.mkdir()
            sizes[name] = variants[name](model, workdir).stat().st_size
        for i in range(args.repeats):
            for name in names[i % 2 :] + names[: i % 2]:
                workdir = Path(tmp) / f"run-{i}-{names.index(name)}"
                workdir.mkdir()
                start, start_cpu = time.perf_counter(), time.process_time()
                out = variants[name](model, workdir)
                timings[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
                assert out.stat().st_size == sizes[name]
        source_size = model.stat().st_size
    best = {k: min(v) for k, v in timings.items()}
    cpu_median = {k: statistics.median(v) for k, v in cpu.items()}
    print(
        f"static Q/DQ ({algorithm.value}), random-weight CNN {source_size:,} bytes, {args.samples} calibration samples in batches of {BATCH}, "
        f"{args.repeats} runs each, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, {detect().describe()}"
    )
    for name in names:
        runs = ", ".join(f"{t:.2f}" for t in timings[name])
        print(
            f"  {name:42s} wall best {best[name]:6.3f} s, median {statistics.median(timings[name]):6.3f} s | CPU median {cpu_median[name]:6.3f} s | {sizes[name]:,} bytes | wall runs {runs}"
        )
    bare, ours = names
    for label, table in (("CPU time (median)", cpu_median), ("wall time (best)", best)):
        ratio = table[ours] / table[bare]
        print(f"ratio edgequant / bare, {label}: {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
