"""A local QuantizationSweep of N cells against the same N cells run as separate jobs, in the same process run.

    .venv/bin/python bench/sweep_cache.py [--targets x86-avx2,x86-vnni,generic] [--algorithms minmax,entropy] [--samples 500]

The sweep is the one ``edgequant run sweep.yaml`` runs: its matrix (targets x onnx-static x calibration
algorithms; 3 x 2 = 6 cells by default) expanded by ``edgequant.sweep``, every cell through the worker
pipeline, all cells pointing at one calibration cache under the sweep's output. The separate runs are the
same cell specs as N independent jobs, each with its own output and so its own cache: every one calibrates.
Cells that share the model, the data and the calibration recipe (here: the same algorithm for another target)
calibrate once in the sweep. The model is the random-weight CNN of bench/onnx_static.py (timing only), the
data 500 Fashion-MNIST training images for calibration and 1000 test images for evaluation; spec.ptq is left
at its defaults (auto techniques, scored on a held-out split: the expensive part the cache saves).

An untimed warm-up job runs first (imports); then separate, sweep, separate, sweep... (--rounds). Measures:
this process's CPU time (median; hardly moved by other processes on a shared machine) and wall time (best).
Goal: sweep / separate <= 0.6 for 6 cells. Not part of CI: it prints and never fails.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "bench"))

from onnx_static import CONTRACT, build_cnn  # noqa: E402

from edgequant.data.idx import load_fashion_mnist  # noqa: E402
from edgequant.sweep import local, plan  # noqa: E402
from edgequant.worker.progress import SilentProgress  # noqa: E402
from edgequant.worker.runner import run_job, spec_from_document  # noqa: E402


def sweep_document(root: Path, out: str, targets: list[str], algorithms: list[str], samples: int) -> dict[str, Any]:
    return {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationSweep",
        "metadata": {"name": "bench"},
        "spec": {
            "model": {"uri": f"file://{root}/cnn.onnx", "input": CONTRACT.to_wire()},
            "matrix": {"targets": targets, "methods": ["onnx-static"], "calibrationAlgorithms": algorithms},
            "calibration": {"dataset": {"uri": f"file://{root}/train.npz", "layout": "npz"}, "samples": samples},
            "evaluation": {"dataset": {"uri": f"file://{root}/test.npz", "layout": "npz"}, "samples": 1000},
            "mixedPrecision": {"sensitivity": "off"},
            "acceptance": {"maxAccuracyDrop": 1.0},
            "output": {"uri": f"file://{root}/{out}/"},
        },
    }


def run_cells(documents: list[dict[str, Any]], workdir: Path) -> list[Any]:
    results = []
    with contextlib.redirect_stdout(sys.stderr):
        for n, document in enumerate(documents):
            spec, _, _ = spec_from_document(document)
            result, _ctx = run_job(spec, workdir=workdir / f"{n:02d}", progress=SilentProgress())
            assert result.exit_code == 0, result.message
            results.append(result)
    return results


def separate(root: Path, tag: str, targets: list[str], algorithms: list[str], samples: int, workdir: Path) -> list[Any]:
    """The sweep's cells as independent jobs: each its own output, so its own calibration cache (the default)."""
    cells = local.load(sweep_document(root, f"{tag}-sweep-shape", targets, algorithms, samples)).documents()
    for n, cell in enumerate(cells):
        cell["spec"]["calibration"].pop("cacheUri")
        cell["spec"]["output"]["uri"] = f"file://{root}/{tag}-job-{n}/"
    return run_cells(cells, workdir)


def sweep(root: Path, tag: str, targets: list[str], algorithms: list[str], samples: int, workdir: Path) -> list[Any]:
    cells = local.load(sweep_document(root, f"{tag}-sweep", targets, algorithms, samples)).documents()
    assert all(c["spec"]["calibration"]["cacheUri"] == f"file://{root}/{tag}-sweep/{plan.CACHE_FOLDER}" for c in cells)
    return run_cells(cells, workdir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="x86-avx2,x86-vnni,generic")
    parser.add_argument("--algorithms", default="minmax,entropy")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    targets, algorithms = args.targets.split(","), args.algorithms.split(",")
    logging.getLogger().setLevel(logging.ERROR)
    from edgequant.data.export import write_npz

    train_x, train_y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    cpu: dict[str, list[float]] = {"separate": [], "sweep": []}
    wall: dict[str, list[float]] = {"separate": [], "sweep": []}
    sizes: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="edgequant-bench-sweep-") as tmp:
        root = Path(tmp)
        build_cnn(root / "cnn.onnx")
        classes = [str(c) for c in range(10)]
        write_npz(root / "train.npz", train_x[-3000:, :, :, None], train_y[-3000:], classes=classes)
        write_npz(root / "test.npz", test_x[:1000, :, :, None], test_y[:1000], classes=classes)
        run_cells(
            local.load(sweep_document(root, "warm", targets[:1], algorithms[:1], args.samples)).documents(),
            root / "work-warm",
        )
        runners = {"separate": separate, "sweep": sweep}
        for i in range(args.rounds):
            for name, runner in runners.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                results = runner(root, f"r{i}", targets, algorithms, args.samples, root / f"work-{name}-{i}")
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
                sizes.setdefault(name, [r.results.artifact.size_bytes for r in results])
        cells = len(sizes["sweep"])
    assert sizes["sweep"] == sizes["separate"], "the sweep's artifacts must be the separate runs' artifacts"
    med = {k: statistics.median(v) for k, v in cpu.items()}
    best = {k: min(v) for k, v in wall.items()}
    print(
        f"{cells} onnx-static cells ({len(targets)} targets x {len(algorithms)} calibration algorithms), {args.samples} calibration samples, "
        f"1000 evaluation samples, {args.rounds} rounds, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for name in ("separate", "sweep"):
        print(
            f"  {name:9s} CPU median {med[name]:7.2f} s | wall best {best[name]:7.2f} s | CPU runs {', '.join(f'{t:.1f}' for t in cpu[name])}"
        )
    for label, table in (("CPU time (median)", med), ("wall time (best)", best)):
        ratio = table["sweep"] / table["separate"]
        print(f"ratio sweep / separate, {label}: {ratio:.3f} (goal <= 0.6: {'met' if ratio <= 0.6 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
