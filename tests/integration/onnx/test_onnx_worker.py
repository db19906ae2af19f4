"""onnx-static, torch-qat and onnx-dynamic through the worker pipeline on file:// data: one evaluator, report, exit codes.

The onnx-static and torch-qat jobs use the same model weights (.onnx and .pt2 of one CNN), the same
training images (calibration draws 500 of the 3000 QAT fine-tunes on) and the same 1000 test images,
so QAT is compared with static PTQ on the same data.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgequant.api.exitcodes import ExitCode
from tests.integration.onnx.conftest import CONTRACT, CnnFiles

pytestmark = pytest.mark.integration

#: QAT must match or beat static PTQ: at most half a point (5 of 1000 test images) below it.
QAT_TOLERANCE = 0.005


@pytest.fixture(scope="module")
def job_root(tmp_path_factory: pytest.TempPathFactory, fmnist_cnn: CnnFiles, fmnist_npz: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("onnx-jobs")
    shutil.copy(fmnist_cnn.onnx, root / "cnn.onnx")
    shutil.copy(fmnist_cnn.pt2, root / "cnn.pt2")
    shutil.copy(fmnist_npz["train"], root / "train.npz")
    shutil.copy(fmnist_npz["test"], root / "test.npz")
    (root / "broken.onnx").write_bytes(b"\x00\x01 not a protobuf model \xff" * 8)
    return root


def _spec(root: Path, method: str, model: str, out: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "method": method,
        "model": {"uri": f"file://{root}/{model}", "input": CONTRACT},
        "evaluation": {"dataset": {"uri": f"file://{root}/test.npz", "layout": "npz"}, "samples": 1000},
        "acceptance": {"maxAccuracyDrop": 0.01},
        "output": {"uri": f"file://{root}/{out}/"},
    }
    if method == "onnx-static":
        spec["calibration"] = {
            "dataset": {"uri": f"file://{root}/train.npz", "layout": "npz"},
            "samples": 500,
            "algorithm": "minmax",
        }
    if method == "torch-qat":
        spec["training"] = {
            "dataset": {"uri": f"file://{root}/train.npz", "layout": "npz"},
            "epochs": 1,
            "learningRate": 1e-4,
            "batchSize": 64,
            "maxSamples": 3000,
        }
    spec.update(extra)
    return spec


def _run(root: Path, spec: dict[str, Any], name: str) -> tuple[Any, dict[str, Any]]:
    from edgequant.worker.progress import SilentProgress
    from edgequant.worker.runner import run_job, spec_from_document

    parsed, _name, _ns = spec_from_document(spec)
    result, _ctx = run_job(parsed, workdir=root / f"work-{name}", progress=SilentProgress())
    report = json.loads(Path(spec["output"]["uri"].removeprefix("file://"), "report.json").read_text())
    return result, report


@pytest.fixture(scope="module")
def static_run(job_root: Path) -> tuple[Any, dict[str, Any]]:
    return _run(job_root, _spec(job_root, "onnx-static", "cnn.onnx", "static"), "static")


@pytest.fixture(scope="module")
def qat_run(job_root: Path) -> tuple[Any, dict[str, Any]]:
    return _run(job_root, _spec(job_root, "torch-qat", "cnn.pt2", "qat"), "qat")


def test_onnx_static_through_the_worker(static_run: tuple[Any, dict[str, Any]], job_root: Path) -> None:
    result, report = static_run
    assert result.exit_code == ExitCode.SUCCESS, result.message
    res = result.results
    assert res.method.value == "onnx-static" and res.artifact.uri == f"file://{job_root}/static/cnn.qdq-int8.onnx"
    assert (job_root / "static" / "cnn.qdq-int8.onnx").stat().st_size == res.artifact.size_bytes
    assert res.accuracy_drop <= 0.01 and res.compression_ratio > 2
    assert (
        res.input_contract.dtype == "float32"
        and res.input_contract.shape == [-1, 1, 28, 28]
        and res.input_contract.layout.value == "NCHW"
    )
    assert report["backend"] == "onnxruntime" and report["baseline"]["format"] == "onnx"
    assert report["quantized"]["evaluatedSamples"] == report["baseline"]["evaluatedSamples"] == 1000
    assert any(n.startswith("reduce_range ") and "CPU x86_64" in n for n in report["notes"])
    assert any("minmax calibration on 500 samples" in n for n in report["notes"])
    assert [s["name"] for s in report["stages"] if s["ok"]][-1] == "upload"
    # The default fast sensitivity ran on the node names of the model the backend quantized.
    import onnx

    convs = {
        n.name for n in onnx.load(str(job_root / "static" / "cnn.qdq-int8.onnx")).graph.node if n.op_type == "Conv"
    }
    ranked = {entry["layer"] for entry in report["analysis"]["sensitivity"]["layers"]}
    assert len(convs) == 2 and convs <= ranked


def test_torch_qat_through_the_worker_matches_or_beats_static_ptq(
    qat_run: tuple[Any, dict[str, Any]],
    static_run: tuple[Any, dict[str, Any]],
    job_root: Path,
) -> None:
    result, report = qat_run
    assert result.exit_code == ExitCode.SUCCESS, result.message
    res = result.results
    assert res.method.value == "torch-qat" and res.artifact.uri.endswith("/qat/cnn.qat-int8.onnx")
    assert report["baseline"]["format"] == "onnx-fp32" and report["backend"] == "pytorch"
    static_report = static_run[1]
    # Same weights exported two ways: the FP32 baselines score the same.
    assert abs(report["baseline"]["top1"] - static_report["baseline"]["top1"]) <= 0.001
    qat, ptq = report["quantized"]["top1"], static_report["quantized"]["top1"]
    assert qat >= ptq - QAT_TOLERANCE, (qat, ptq)
    assert res.compression_ratio > 1.5
    import onnx

    ops = {n.op_type for n in onnx.load(str(job_root / "qat" / "cnn.qat-int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and "BatchNormalization" not in ops
    assert any(
        n.startswith("PT2E quantization-aware training") and "3000 training samples" in n for n in report["notes"]
    )
    assert any(n.startswith("reduce_range ") for n in report["notes"])


def test_a_broken_model_exits_invalid_input_with_a_report(job_root: Path) -> None:
    result, report = _run(job_root, _spec(job_root, "onnx-static", "broken.onnx", "broken"), "broken")
    assert result.exit_code == ExitCode.INVALID_INPUT and result.reason == "InvalidInput"
    assert result.message.startswith("broken.onnx is not an ONNX model")
    assert report["outcome"]["exitCode"] == 10 and report["stages"][-1] == {
        "name": "baseline",
        "seconds": report["stages"][-1]["seconds"],
        "ok": False,
    }
    assert not list((job_root / "broken").glob("*.onnx"))


def test_edgequant_run_onnx_dynamic_prints_its_table(job_root: Path, dense_onnx: tuple[Path, int]) -> None:
    shutil.copy(dense_onnx[0], job_root / "dense.onnx")
    job = {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationJob",
        "metadata": {"name": "dense-dynamic"},
        "spec": _spec(
            job_root,
            "onnx-dynamic",
            "dense.onnx",
            "dynamic",
            acceptance={"minCompressionRatio": 3, "maxAccuracyDrop": 0.05},
        ),
    }
    job_file = job_root / "dynamic.yaml"
    job_file.write_text(yaml.safe_dump(job))
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("edgequant")), "run", "--quiet", str(job_file)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:-1]]
        for line in proc.stdout.splitlines()
        if line.startswith("│")
    }
    assert rows["dense-dynamic"][1] == "onnx-dynamic" and rows["dense-dynamic"][-1] == "ok"
    assert float(rows["dense-dynamic"][3].rstrip("x")) >= 3
    assert "Collecting" not in proc.stdout and "[torch.onnx]" not in proc.stdout
