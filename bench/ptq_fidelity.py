"""INT8 fidelity of onnx-static: the bare ONNX Runtime call vs edgequant's post-training techniques, same model and data.

    .venv/bin/python bench/ptq_fidelity.py --model m.onnx --calibration cal.npy --evaluation ev.npy [--reduce-range 0 1]
    .venv/bin/python bench/ptq_fidelity.py --separable        # the test suite's MobileNet-style Fashion-MNIST net

``cal.npy`` / ``ev.npy``: float32 inputs already preprocessed in the model's layout (N first). Per reduce_range
setting it prints the top-1 agreement with FP32 on the evaluation inputs (and output SQNR) of:

- bare: ``quant_pre_process`` + ``quantize_static`` (MinMax, QDQ, uint8 activations, int8 per-channel symmetric
  weights), a ``CalibrationDataReader`` over all calibration inputs;
- each technique alone (spec.ptq with only that one on, no held-out choice): range search, cross-layer
  equalization, bias correction, 16-bit weights, adaptive rounding; and the algorithm choice alone;
- edgequant's default spec.ptq (everything auto, chosen on a held-out split of the calibration inputs);

and the seconds each took (the quantize step only: pre-processing, calibration, search, Q/DQ insertion).
Not part of CI: it prints and never fails.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from edgequant.analysis import post_training as pt  # noqa: E402
from edgequant.api import v1alpha1 as api  # noqa: E402
from edgequant.backends.base import Batches  # noqa: E402
from edgequant.backends.onnxruntime.options import StaticSettings  # noqa: E402
from edgequant.backends.onnxruntime.ptq import tune  # noqa: E402
from edgequant.backends.onnxruntime.quantize import prepare_float_model, quantize_qdq  # noqa: E402

BATCH = 25
OFF = {
    "crossLayerEqualization": "off",
    "biasCorrection": "off",
    "rangeSearch": "off",
    "sixteenBitWeights": "off",
    "adaptiveRounding": "off",
    "selectAlgorithm": False,
}
VARIANTS: dict[str, dict[str, object]] = {
    "range search alone": {**OFF, "rangeSearch": "on"},
    "equalization alone": {**OFF, "crossLayerEqualization": "on"},
    "bias correction alone": {**OFF, "biasCorrection": "on"},
    "16-bit weights alone": {**OFF, "sixteenBitWeights": "on"},
    "adaptive rounding alone": {**OFF, "adaptiveRounding": "on"},
    "16-bit weights + adaptive rounding + bias correction": {
        **OFF,
        "sixteenBitWeights": "on",
        "adaptiveRounding": "on",
        "biasCorrection": "on",
    },
    "algorithm choice alone": {**OFF, "selectAlgorithm": True},
    "edgequant default": {},
}


def batches(x: np.ndarray) -> Batches:
    def make() -> object:
        for i in range(0, len(x), BATCH):
            yield np.ascontiguousarray(x[i : i + BATCH]), np.zeros(len(x[i : i + BATCH]), dtype=np.int64)

    return Batches(make_iter=make, count=len(x), batch_size=BATCH)  # type: ignore[arg-type]


def predict(path: Path, x: np.ndarray) -> np.ndarray:
    from edgequant.backends.onnxruntime.predictor import OrtPredictor

    p = OrtPredictor(path)
    return np.concatenate([p.predict(np.ascontiguousarray(x[i : i + 50])) for i in range(0, len(x), 50)])


def bare(model: Path, cal: np.ndarray, out: Path, *, reduce_range: bool) -> Path:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    name = next(i.name for i in onnx.load(str(model), load_external_data=False).graph.input)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.i >= len(cal):
                return None
            feed = {name: np.ascontiguousarray(cal[self.i : self.i + BATCH])}
            self.i += BATCH
            return feed

    pre = out.with_suffix(".pre.onnx")
    with contextlib.redirect_stdout(sys.stderr):
        quant_pre_process(str(model), str(pre))
        quantize_static(
            str(pre),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    return out


def edgequant(
    model: Path, cal: np.ndarray, out: Path, *, reduce_range: bool, ptq: dict[str, object], log: bool
) -> tuple[Path, list[str]]:
    work = out.parent / (out.stem + ".work")
    fm = prepare_float_model(model, workdir=work, preprocess=True, per_channel=True)
    settings = StaticSettings(reduce_range=reduce_range)
    tuned = tune(
        float_model=fm,
        calibration=batches(cal),
        settings=settings,
        options=api.PostTraining.model_validate(ptq),
        workdir=work / "ptq",
        log=print if log else (lambda _m: None),
    )
    quantize_qdq(
        float_model=tuned.float_model,
        output_path=out,
        ranges_path=tuned.ranges_path,
        settings=tuned.settings_for(settings),
    )
    return out, tuned.notes


def run(
    model: Path,
    cal: np.ndarray,
    ev: np.ndarray,
    reduce_ranges: list[int],
    only: list[str] | None,
    log: bool,
    with_bare: bool = True,
) -> None:
    reference = predict(model, ev)
    print(
        f"model {model.name}: {len(cal)} calibration, {len(ev)} evaluation inputs; FP32 classes seen {len(set(reference.argmax(1)))}"
    )
    with tempfile.TemporaryDirectory(prefix="ptq-bench-") as tmp:
        for rr in reduce_ranges:
            base_s = float("nan")
            if with_bare:
                t = time.perf_counter()
                path = bare(model, cal, Path(tmp) / f"bare-{rr}.onnx", reduce_range=bool(rr))
                base_s = time.perf_counter() - t
                q = predict(path, ev)
                print(
                    f"reduce_range {bool(rr)}: bare quantize_static minmax  agreement {pt.top1_agreement(reference, q):.3f}  "
                    f"SQNR {pt.sqnr_db(reference, q):5.1f} dB  {base_s:6.1f} s",
                    flush=True,
                )
            for name, options in VARIANTS.items():
                if only and name not in only:
                    continue
                t = time.perf_counter()
                path, notes = edgequant(
                    model,
                    cal,
                    Path(tmp) / f"{name.replace(' ', '-')}-{rr}.onnx",
                    reduce_range=bool(rr),
                    ptq=options,
                    log=log,
                )
                took = time.perf_counter() - t
                q = predict(path, ev)
                print(
                    f"reduce_range {bool(rr)}: {name:30s} agreement {pt.top1_agreement(reference, q):.3f}  "
                    f"SQNR {pt.sqnr_db(reference, q):5.1f} dB  {took:6.1f} s ({took / base_s:.2f}x bare)",
                    flush=True,
                )
                for note in notes:
                    print("    " + note)


def separable_inputs() -> tuple[Path, np.ndarray, np.ndarray]:
    """The test suite's separable CNN (trained and cached like the tests do), 500 calibration and 1000 test images."""
    sys.path.insert(0, str(ROOT))
    from edgequant.data.idx import load_fashion_mnist
    from tests.integration.onnx.test_onnx_ptq import separable_model_path

    train_x, _ = load_fashion_mnist("train")
    test_x, _ = load_fashion_mnist("test")
    model = separable_model_path(train_x, load_fashion_mnist("train")[1])
    scale = lambda a: (a.astype(np.float32) / 255.0)[:, None]  # noqa: E731
    return model, scale(train_x[20000:20500]), scale(test_x[:1000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--calibration", type=Path)
    parser.add_argument("--evaluation", type=Path)
    parser.add_argument("--separable", action="store_true", help="the test suite's MobileNet-style Fashion-MNIST net")
    parser.add_argument("--reduce-range", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    parser.add_argument("--log", action="store_true", help="print the held-out scores of every candidate")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare call (when its figures are known)")
    args = parser.parse_args()
    if args.separable:
        model, cal, ev = separable_inputs()
    else:
        model, cal, ev = args.model, np.load(args.calibration, mmap_mode="r"), np.load(args.evaluation, mmap_mode="r")
    run(
        model,
        np.asarray(cal, dtype=np.float32),
        np.asarray(ev, dtype=np.float32),
        args.reduce_range,
        args.only,
        args.log,
        with_bare=not args.no_bare,
    )


if __name__ == "__main__":
    main()
