"""Full-INT8 TFLite quantization through edgequant vs a bare TFLiteConverter call, same model, same data, same run.

    .venv/bin/python bench/tflite_int8.py [--repeats 5] [--samples 500]

Both sides start from the .keras file on disk and the same preprocessed
calibration floats, and end with the .tflite bytes:

- bare: keras load_model -> TFLiteConverter.from_keras_model, and load_model -> model.export ->
  from_saved_model (what edgequant does; TF's from_keras_model exports a SavedModel internally too),
  each with DEFAULT optimizations, the representative dataset, TFLITE_BUILTINS_INT8 and uint8 I/O;
- edgequant: TFLiteBackend().quantize(QuantizeRequest(method=tflite-int8, calibration=Batches)).

Every variant is warmed up once and the order rotates every round. Two measures: wall time (best run: on a
shared machine other work only ever adds time) and this process's CPU time (all threads; barely moved by
other processes, so it is the figure to trust when the machine is busy). Ratios use the faster bare call as
reference. Target: edgequant / bare <= 1.05.
Not part of CI: wall time on a shared machine is noisy, so this prints and never fails.
"""

from __future__ import annotations

import argparse
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
from edgequant.backends.tflite.backend import TFLiteBackend  # noqa: E402
from edgequant.backends.tflite.tf import import_keras, import_tf  # noqa: E402
from edgequant.data.idx import load_fashion_mnist  # noqa: E402
from edgequant.data.loader import PreparedSet  # noqa: E402
from edgequant.demo.model import cached_cnn  # noqa: E402

CONTRACT = api.InputContract(shape=[28, 28, 1], color_order=api.ColorOrder.GRAY)


def bare_convert(model_path: Path, calibration: np.ndarray, workdir: Path, *, from_keras: bool = False) -> bytes:
    tf, keras = import_tf(), import_keras()
    model = keras.models.load_model(model_path, compile=False)
    if from_keras:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    else:
        model.export(str(workdir / "sm"), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(workdir / "sm"))

    def representative():  # type: ignore[no-untyped-def]
        for sample in calibration:
            yield [sample[None]]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return bytes(converter.convert())


def edgequant_convert(model_path: Path, prepared: PreparedSet, workdir: Path) -> bytes:
    spec = api.QuantizationJobSpec.model_validate(
        {
            "method": "tflite-int8",
            "model": {"uri": f"file://{model_path}", "input": CONTRACT.to_wire()},
            "calibration": {"dataset": {"uri": "file:///unused/"}, "samples": len(prepared)},
            "output": {"uri": "file:///unused/"},
        }
    )
    request = QuantizeRequest(
        options=backend_options(spec),
        model_path=model_path,
        workdir=workdir,
        calibration=prepared.batches(),
        log=lambda _m: None,
    )
    return TFLiteBackend().quantize(request).path.read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()

    model_path = cached_cnn(ROOT / ".cache" / "demo" / "models", samples=60000, epochs=2)
    x, y = load_fashion_mnist("train")
    pixels = x[-args.samples :, :, :, None]
    prepared = PreparedSet(
        name="calibration",
        uri="bench",
        contract=CONTRACT,
        pixels=pixels,
        labels=y[-args.samples :],
        sources=[],
        classes={},
    )
    floats = np.concatenate([b for b, _ in prepared.batches()])  # the bare side gets the same floats, precomputed

    import_tf()
    variants = {
        "bare from_keras_model": lambda d: bare_convert(model_path, floats, d, from_keras=True),
        "bare from_saved_model": lambda d: bare_convert(model_path, floats, d),
        "edgequant": lambda d: edgequant_convert(model_path, prepared, d),
    }
    names = list(variants)
    timings: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:  # untimed warm-up: TF's tracing caches would otherwise favour whoever runs later
            (Path(tmp) / f"warm-{len(sizes)}-{name[:4]}").mkdir()
            sizes[name] = len(variants[name](Path(tmp) / f"warm-{len(sizes)}-{name[:4]}"))
        for i in range(args.repeats):
            for name in names[i % 3 :] + names[: i % 3]:  # rotate who goes first
                workdir = Path(tmp) / f"{name.replace(' ', '-')}-{i}"
                workdir.mkdir()
                start, start_cpu = time.perf_counter(), time.process_time()
                data = variants[name](workdir)
                timings[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
                assert len(data) == sizes[name]
    best = {k: min(v) for k, v in timings.items()}
    cpu_median = {k: statistics.median(v) for k, v in cpu.items()}
    load = os.getloadavg()[0]
    print(
        f"full-INT8 TFLite, {model_path.name}, {args.samples} calibration samples, {args.repeats} runs each, load average {load:.1f} on {os.cpu_count()} CPUs"
    )
    for name in names:
        runs = ", ".join(f"{t:.2f}" for t in timings[name])
        print(
            f"  {name:22s} wall best {best[name]:6.3f} s, median {statistics.median(timings[name]):6.3f} s | CPU median {cpu_median[name]:6.3f} s | {sizes[name]:,} bytes | wall runs {runs}"
        )
    for label, table in (("CPU time (median)", cpu_median), ("wall time (best)", best)):
        ratio = table["edgequant"] / min(table["bare from_keras_model"], table["bare from_saved_model"])
        print(
            f"ratio edgequant / fastest bare call, {label}: {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
