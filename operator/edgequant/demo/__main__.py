"""python -m edgequant.demo: the README's main demo (what `make demo` runs).

1. Real labelled data: Fashion-MNIST from Debian's dataset-fashion-mnist, written
   once as an imagefolder calibration set, an imagefolder test set and a
   training .npz (for QAT) under the cache folder.
2. A small Keras CNN trained briefly, cached by a hash of its code and settings.
3. Four QuantizationJobs (one per TFLite method) run through `edgequant run`,
   which prints one table: method, size, ratio, accuracy, drop, latency.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from edgequant.storage.uri import file_uri

METHODS = ("tflite-dynamic-range", "tflite-float16", "tflite-int8", "tflite-qat")
CALIBRATION_IMAGES = 1000
TEST_IMAGES = 2000


def prepare_data(data_dir: Path) -> dict[str, Path]:
    """Write the three datasets once (a marker file says they are complete)."""
    from edgequant.data.export import write_imagefolder, write_npz
    from edgequant.data.idx import FASHION_MNIST_CLASSES, load_fashion_mnist

    paths = {
        "calibration": data_dir / "calibration",
        "evaluation": data_dir / "test",
        "training": data_dir / "train.npz",
    }
    marker = data_dir / ".complete"
    if marker.is_file():
        return paths
    x, y = load_fashion_mnist("train")
    tx, ty = load_fashion_mnist("test")
    # Calibration images come from the end of the training split, unaugmented, every class present.
    write_imagefolder(
        paths["calibration"], x[-CALIBRATION_IMAGES:], y[-CALIBRATION_IMAGES:], classes=FASHION_MNIST_CLASSES
    )
    write_imagefolder(paths["evaluation"], tx[:TEST_IMAGES], ty[:TEST_IMAGES], classes=FASHION_MNIST_CLASSES)
    write_npz(paths["training"], x, y, classes=FASHION_MNIST_CLASSES)
    marker.write_text("ok\n")
    return paths


def job_manifest(method: str, *, model: Path, data: dict[str, Path], out_dir: Path) -> dict:
    spec: dict = {
        "method": method,
        "model": {
            "uri": file_uri(model),
            "input": {"shape": [28, 28, 1], "colorOrder": "GRAY", "scaling": {"scale": 1 / 255}},
        },
        "evaluation": {
            "dataset": {"uri": file_uri(data["evaluation"], folder=True), "layout": "imagefolder"},
            "samples": TEST_IMAGES,
        },
        "acceptance": {"maxAccuracyDrop": 0.02},
        "output": {"uri": file_uri(out_dir / method, folder=True)},
    }
    if method in ("tflite-int8", "tflite-qat"):
        spec["calibration"] = {
            "dataset": {"uri": file_uri(data["calibration"], folder=True), "layout": "imagefolder"},
            "samples": 500,
        }
    if method == "tflite-qat":
        spec["training"] = {
            "dataset": {"uri": file_uri(data["training"]), "layout": "npz"},
            "epochs": 1,
            "learningRate": 1e-4,
            "batchSize": 64,
            "maxSamples": 10000,
        }
    return {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationJob",
        "metadata": {"name": f"demo-{method.removeprefix('tflite-')}"},
        "spec": spec,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgequant.demo", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(".cache/demo"),
        help="data, the trained model, jobs and outputs (default .cache/demo)",
    )
    parser.add_argument("--epochs", type=int, default=2, help="training epochs of the FP32 CNN (cached per value)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args(argv)
    cache = args.cache_dir.resolve()

    start = time.monotonic()
    print(f"demo: data under {cache / 'data'}", file=sys.stderr)
    data = prepare_data(cache / "data")
    print(f"demo: Keras CNN ({args.epochs} epochs on 60000 images, cached under {cache / 'models'})", file=sys.stderr)
    from edgequant.demo.model import cached_cnn

    model = cached_cnn(cache / "models", samples=60000, epochs=args.epochs)
    print(f"demo: model ready after {time.monotonic() - start:.0f}s: {model.name}", file=sys.stderr)

    jobs_dir = cache / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for n, method in enumerate(args.methods, start=1):
        path = jobs_dir / f"{n:02d}-{method}.yaml"
        path.write_text(
            yaml.safe_dump(job_manifest(method, model=model, data=data, out_dir=cache / "out"), sort_keys=False)
        )
        files.append(str(path))
    print(f"demo: edgequant run {' '.join(Path(f).name for f in files)}", file=sys.stderr)
    from edgequant.cli.main import main as cli_main

    code = cli_main(["run", *files])
    print(
        f"demo: {time.monotonic() - start:.0f}s in all; artifacts and report.json files under {cache / 'out'}",
        file=sys.stderr,
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
