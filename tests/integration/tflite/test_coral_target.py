"""spec.target coral-edgetpu through the real worker: the target chooses tflite-int8, and the published full-integer
model's ops are checked against the Edge TPU's supported operations (a model with a GELU, which it does not run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _model(path: Path, activation: str) -> Path:
    """conv -> ``activation`` -> conv -> pool -> dense, untrained: the check reads ops (no evaluation set, no accuracy)."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(8, 3, name="conv1"),
            L.Activation(activation, name="act"),
            L.Conv2D(8, 3, activation="relu", name="conv2"),
            L.GlobalAveragePooling2D(name="pool"),
            L.Dense(10, name="logits"),
        ]
    )
    model.save(path)
    return path


def _run(root: Path, model: Path, out: str) -> tuple[Any, dict[str, Any], Path]:
    from edgequant.worker.progress import SilentProgress
    from edgequant.worker.runner import run_job, spec_from_document

    doc = {
        "target": "coral-edgetpu",
        "model": {"uri": f"file://{model}", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
        "calibration": {
            "dataset": {"uri": f"file://{root}/cal.npz", "layout": "npz"},
            "samples": 100,
            "minSamples": 50,
        },
        "output": {"uri": f"file://{root}/{out}/"},
    }
    spec, _name, _ns = spec_from_document(doc)
    result, _ctx = run_job(spec, workdir=root / f"work-{out}", progress=SilentProgress())
    return result, json.loads((root / out / "report.json").read_text()), root / out


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, fashion_mnist: Any) -> Path:
    from edgequant.data.export import write_npz

    root = tmp_path_factory.mktemp("coral")
    write_npz(root / "cal.npz", fashion_mnist.train_x[:100], fashion_mnist.train_y[:100], classes=fashion_mnist.classes)
    return root


def test_an_op_the_edge_tpu_lacks_is_a_finding_with_the_ops_that_fall_back_and_the_fix(root: Path) -> None:
    result, report, out = _run(root, _model(root / "gelu.keras", "gelu"), "gelu")
    assert result.exit_code == 0, result.message
    target = report["target"]
    assert report["method"] == "tflite-int8" and report["publishedMethod"] == "tflite-int8"
    assert [(c["field"], c["value"]) for c in target["choices"]] == [
        ("spec.method", "tflite-int8"),
        ("artifact input/output", "uint8"),
    ]
    assert all("coral.ai/docs/edgetpu" in c["reason"] for c in target["choices"])
    assert report["inputContract"]["dtype"] == "uint8"
    fired = {f["check"]: f for f in target["findings"] if f["fired"]}
    unsupported = fired["edgetpu-unsupported-op"]
    assert "GELU" in unsupported["message"] and unsupported["fixes"]
    # the ops from the GELU on run on the CPU: GELU, conv2, the pooling mean, the dense layer, the output quantize
    assert unsupported["evidence"]["unsupported"] == 1 and unsupported["evidence"]["cpu_ops"] == 5
    # Keras exports a dynamic batch: the Edge TPU needs static sizes
    assert "edgetpu-dynamic-shape" in fired
    notes = " ".join(target["notes"])
    assert "measured on the worker's CPU, not on the target" in notes and "worker CPU" in notes
    assert "edgetpu_compiler) is not run" in notes
    assert any(w.startswith("edgetpu-unsupported-op") for w in report["warnings"])
    html = (out / "report.html").read_text()
    assert "Target <code>coral-edgetpu</code>" in html and "GELU" in html and "not on the target" in html


def test_a_model_of_supported_ops_maps_whole(root: Path) -> None:
    result, report, _out = _run(root, _model(root / "relu.keras", "relu"), "relu")
    assert result.exit_code == 0, result.message
    findings = {f["check"]: f for f in report["target"]["findings"]}
    assert not findings["edgetpu-unsupported-op"]["fired"] and not findings["edgetpu-float-tensor"]["fired"]
    assert findings["edgetpu-unsupported-op"]["evidence"]["ops"] >= 5
