"""`edgequant run sweep.yaml`: a QuantizationSweep over the Fashion-MNIST CNN, 2 targets x 3 methods, in this process.

The sweep's Pareto front and recommendations are checked against the cells' own report.json figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

TARGETS = ("rpi-xnnpack", "arm64-cpu")
METHODS = ("tflite-int8", "tflite-float16", "tflite-dynamic-range")


def test_a_local_sweep_recommends_from_its_cells_figures(
    trained_cnn: Path, fmnist_files: dict[str, Path], tmp_path: Path
) -> None:
    sweep = {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationSweep",
        "metadata": {"name": "fm"},
        "spec": {
            "model": {"uri": f"file://{trained_cnn}", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
            "matrix": {"targets": list(TARGETS), "methods": list(METHODS)},
            "calibration": {"dataset": {"uri": f"file://{fmnist_files['calibration']}/"}, "samples": 300},
            "evaluation": {"dataset": {"uri": f"file://{fmnist_files['test.npz']}", "layout": "npz"}, "samples": 500},
            "mixedPrecision": {"sensitivity": "off"},
            "acceptance": {"maxAccuracyDrop": 0.03},
            "output": {"uri": "file://out/"},
        },
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("edgequant")), "run", "--quiet", str(path)],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    out = tmp_path / "out"
    status = json.loads((out / "sweep.json").read_text())["status"]
    names = {f"fm-{t}-{m}" for t in TARGETS for m in METHODS}
    assert {c["name"] for c in status["candidates"]} == names
    assert (status["cells"], status["finished"], status["phase"]) == (6, 6, "Completed")

    # Each cell's figures, read from its own report.
    figures = {}
    for name in names:
        report = json.loads((out / name / "report.json").read_text())
        figures[name] = {
            "target": name.removeprefix("fm-").rsplit("-tflite-", 1)[0],
            "method": report["publishedMethod"] or report["method"],
            "size": report["quantized"]["sizeBytes"],
            "drop": report["comparison"]["accuracyDrop"],
            "latency": report["quantized"]["latencyMsMedian"],
            "passed": report["outcome"]["succeeded"] and not report["outcome"]["degraded"],
        }
    rows = {c["name"]: c for c in status["candidates"]}
    for name, f in figures.items():
        row = rows[name]
        assert (row["target"], row["method"], row["sizeBytes"], row["passedGate"]) == (
            f["target"],
            f["method"],
            f["size"],
            f["passed"],
        )
        assert row["accuracyDrop"] == pytest.approx(f["drop"]) and row["latencyMs"] == pytest.approx(
            f["latency"], rel=1e-3
        )
    assert all(f["passed"] for f in figures.values())  # a trained CNN: every method within three points

    def dominates(a: dict[str, float], b: dict[str, float]) -> bool:
        keys = ("size", "drop", "latency")
        return all(a[k] <= b[k] for k in keys) and any(a[k] < b[k] for k in keys)

    front = {n for n, f in figures.items() if not any(dominates(g, f) for m, g in figures.items() if m != n)}
    assert set(status["paretoFront"]) == front
    # Integer weights shrink the model about 4x, float16 2x: the smallest passing artifact per target is 8-bit.
    recommendations = {r["target"]: r for r in status["recommendations"]}
    assert set(recommendations) == set(TARGETS)
    for target, rec in recommendations.items():
        mine = {n: f for n, f in figures.items() if f["target"] == target}
        smallest = min(f["size"] for f in mine.values())
        best = min(
            (n for n, f in mine.items() if f["size"] == smallest), key=lambda n: (mine[n]["drop"], mine[n]["latency"])
        )
        assert rec["candidate"] == best and rec["method"] in ("tflite-int8", "tflite-dynamic-range")
        assert mine[best]["size"] < 0.6 * mine[f"fm-{target}-tflite-float16"]["size"]

    # The two tflite-int8 cells share model, data and recipe: one calibrates, the other reuses its calibration
    # from the sweep's cache, and both quantize to the same bytes.
    int8 = [json.loads((out / f"fm-{t}-tflite-int8" / "report.json").read_text()) for t in TARGETS]
    texts = [json.dumps(r["notes"]) for r in int8]
    assert sorted("stored for reuse" in t for t in texts) == [False, True] and sorted(
        "reused from" in t for t in texts
    ) == [False, True]
    assert int8[0]["artifact"]["sha256"] == int8[1]["artifact"]["sha256"]
    assert len(list((out / "calibration-cache").glob("tflite-*/key.json"))) == 1

    html = (out / "report.html").read_text()
    assert "<svg" in html and "<circle" in html and all(n in html for n in names)
    assert "sweep fm" in proc.stdout and "recommended for rpi-xnnpack" in proc.stdout
