"""The worker with tensorrt-* jobs: the no-GPU exit code as the pod sees it, and whole runs on the stand-ins."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.api import v1alpha1 as api
from edgequant.api.exitcodes import ExitCode
from edgequant.api.result import WorkerResult
from edgequant.storage import file_uri
from tests.integration.tensorrt.standin import install

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def job_files(tmp_path: Path, fashion_mnist: Any, fashion_cnn_onnx: Path) -> dict[str, Path]:
    """The ONNX model, a balanced 200-image calibration npz and a 300-image evaluation npz."""
    from edgequant.data.export import write_npz

    fm = fashion_mnist
    cal = np.concatenate([np.flatnonzero(fm.train_y[-5000:] == c)[:20] for c in range(10)]) + (len(fm.train_y) - 5000)
    model = tmp_path / "inputs" / "fashion.onnx"
    model.parent.mkdir(parents=True)
    shutil.copyfile(fashion_cnn_onnx, model)
    return {
        "model": model,
        "calibration": write_npz(tmp_path / "inputs" / "cal.npz", fm.train_x[cal], fm.train_y[cal], classes=fm.classes),
        "evaluation": write_npz(tmp_path / "inputs" / "eval.npz", fm.test_x[:300], fm.test_y[:300], classes=fm.classes),
    }


def _spec(files: dict[str, Path], out: Path, method: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": {
            "uri": file_uri(files["model"]),
            "input": {"shape": [1, 28, 28], "layout": "NCHW", "colorOrder": "GRAY"},
        },
        "method": method,
        "calibration": {
            "dataset": {"uri": file_uri(files["calibration"]), "layout": "npz"},
            "samples": 200,
            "algorithm": "entropy",
        },
        "evaluation": {"dataset": {"uri": file_uri(files["evaluation"]), "layout": "npz"}, "samples": 300},
        "acceptance": {"maxAccuracyDrop": 0.03},
        "output": {"uri": file_uri(out, folder=True)},
        **extra,
    }


def test_worker_exits_accelerator_unavailable_with_the_fix_exactly_when_there_is_no_gpu(
    job_files: dict[str, Path], tmp_path: Path
) -> None:
    """The real worker process on this machine: without a GPU (its driver says) exit 14 with the fix; with one, the
    GPU check passes and whatever ends the run, it is not the accelerator."""
    from edgequant.backends.tensorrt.gpu import probe_cuda

    log = tmp_path / "termination-log"
    spec = _spec(job_files, tmp_path / "out", "tensorrt-int8")
    env = {
        **os.environ,
        "EDGEQUANT_SPEC": json.dumps(spec),
        "EDGEQUANT_TERMINATION_LOG": str(log),
        "EDGEQUANT_WORKDIR": str(tmp_path / "work"),
    }
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("edgequant-worker"))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    result = WorkerResult.from_termination_message(log.read_text())
    assert "Traceback" not in proc.stderr
    if probe_cuda().devices > 0:  # a GPU machine: the GPU path
        assert proc.returncode == result.exit_code != ExitCode.ACCELERATOR_UNAVAILABLE, proc.stderr[-2000:]
        assert result.reason != "AcceleratorUnavailable" and "needs an NVIDIA GPU" not in result.message
        return
    assert proc.returncode == ExitCode.ACCELERATOR_UNAVAILABLE == result.exit_code == 14, proc.stderr[-2000:]
    assert result.reason == "AcceleratorUnavailable"
    assert "needs an NVIDIA GPU" in result.message and "resources.accelerator" in result.message
    assert not list((tmp_path / "out").glob("*.engine"))


def _run(spec: dict[str, Any], workdir: Path) -> tuple[Any, Any]:
    from edgequant.worker.progress import LogProgress
    from edgequant.worker.runner import run_job

    return run_job(api.QuantizationJobSpec.model_validate(spec), workdir=workdir, progress=LogProgress())


@pytest.fixture
def gpu_standins(monkeypatch: pytest.MonkeyPatch) -> Any:
    """tensorrt 8.6.1 and pycuda stand-ins, and a CUDA driver that reports one device (none exists here)."""
    from edgequant.backends.tensorrt import gpu

    monkeypatch.setattr(gpu, "probe_cuda", lambda: gpu.GpuProbe(1))
    trt, _memory = install(monkeypatch, version="8.6.1")
    return trt


def test_int8_job_publishes_engine_and_cache_and_a_rerun_skips_calibration(
    gpu_standins: Any, job_files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    # A stand-in engine is a small JSON plan, so its size says nothing: no compression floor here.
    spec = _spec(job_files, out, "tensorrt-int8", acceptance={"maxAccuracyDrop": 0.03, "minCompressionRatio": 0})
    result, ctx = _run(spec, tmp_path / "work1")
    assert result.exit_code == 0, result.message
    published = sorted(p.name for p in out.iterdir())
    assert (
        "fashion.int8.engine" in published
        and "fashion.int8.calibration.cache" in published
        and "report.json" in published
    )
    caches = sorted((out / "calibration-cache").glob("*.cache"))
    assert len(caches) == 1 and caches[0].read_bytes() == (out / "fashion.int8.calibration.cache").read_bytes()
    assert ctx.baseline.format == "tensorrt-fp32" and ctx.baseline.evaluation.latency_ms is not None
    assert ctx.quantized.evaluation.latency_ms is not None and ctx.quantized.evaluation.top1 > 0.7
    builds = [b for b in gpu_standins.builds if b.get("calibration")]
    assert [(b["calibration"], b["batches"]) for b in builds] == [("batches", 7)]  # 200 samples in batches of 32

    again, ctx2 = _run(spec, tmp_path / "work2")
    assert again.exit_code == 0, again.message
    assert gpu_standins.builds[-1]["calibration"] == "cache"
    assert any(n.startswith("calibration skipped: identical cache found at") for n in ctx2.notes)


def test_relative_calibration_cache_resolves_against_the_job_file_not_the_working_directory(
    gpu_standins: Any, job_files: dict[str, Path], tmp_path: Path
) -> None:
    """`edgequant run` resolves relative file:// URIs against the job file's folder; the registry hands the backend
    those stores, so the calibration cache lands beside the job, not in the directory the command runs in."""
    from edgequant.worker.progress import LogProgress
    from edgequant.worker.runner import run_job

    assert Path.cwd().resolve() != tmp_path.resolve()
    spec = _spec(
        job_files, tmp_path / "out", "tensorrt-int8", acceptance={"maxAccuracyDrop": 0.03, "minCompressionRatio": 0}
    )
    spec["model"]["uri"] = "file://inputs/fashion.onnx"
    spec["calibration"]["dataset"]["uri"] = "file://inputs/cal.npz"
    spec["calibration"]["cacheUri"] = "file://trt-caches/"
    spec["output"]["uri"] = "file://out/"
    result, _ctx = run_job(
        api.QuantizationJobSpec.model_validate(spec),
        workdir=tmp_path / "work",
        progress=LogProgress(),
        base_dir=tmp_path,
    )
    assert result.exit_code == 0, result.message
    assert len(list((tmp_path / "trt-caches").glob("*.cache"))) == 1
    assert not (Path.cwd() / "trt-caches").exists()


def test_cpu_precomputed_cache_is_found_by_the_gpu_job(
    gpu_standins: Any, job_files: dict[str, Path], tmp_path: Path
) -> None:
    """`edgequant tensorrt-calibrate` on a machine without a GPU, then the GPU job skips calibration."""
    import yaml

    out = tmp_path / "out"
    spec = _spec(
        job_files,
        out,
        "tensorrt-mixed",
        tensorrt={"calibrationDevice": "cpu"},
        acceptance={"maxAccuracyDrop": 0.03, "minCompressionRatio": 0},
    )
    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "edgequant.io/v1alpha1",
                "kind": "QuantizationJob",
                "metadata": {"name": "trt"},
                "spec": spec,
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cli = subprocess.run(
        [
            str(Path(sys.executable).with_name("edgequant")),
            "tensorrt-calibrate",
            str(job),
            "--tensorrt-version",
            "8.6.1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    stored = sorted((out / "calibration-cache").glob("*.cache"))
    assert len(stored) == 1 and stored[0].name.startswith("trt8.6.1-cpu-entropy-")
    assert f"calibration cache stored at {file_uri(stored[0])}" in cli.stdout
    assert "Traceback" not in cli.stderr

    result, ctx = _run(spec, tmp_path / "work")
    assert result.exit_code == 0, result.message
    assert gpu_standins.builds[-1]["calibration"] == "cache" and gpu_standins.builds[-1]["flags"] == ["FP16", "INT8"]
    assert f"calibration skipped: identical cache found at {file_uri(stored[0])}" in ctx.notes
    assert (out / "fashion.mixed.calibration.cache").read_bytes() == stored[0].read_bytes()


def test_precompute_refuses_a_spec_whose_gpu_job_would_not_use_it(job_files: dict[str, Path], tmp_path: Path) -> None:
    import yaml

    spec = _spec(job_files, tmp_path / "out", "tensorrt-int8")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec))
    cli = subprocess.run(
        [
            str(Path(sys.executable).with_name("edgequant")),
            "tensorrt-calibrate",
            str(job),
            "--tensorrt-version",
            "8.6.1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert cli.returncode == ExitCode.INVALID_INPUT
    assert "spec.tensorrt.calibrationDevice: set it to cpu" in cli.stderr


def test_mixed_ranks_layers_through_onnx_runtime_and_tensorrt_pins_the_ranked_names(
    gpu_standins: Any, job_files: dict[str, Path], tmp_path: Path
) -> None:
    """Sensitivity for tensorrt-mixed on the CPU (ONNX Runtime INT8 as the proxy); its names are what the engine pins."""
    auto = _spec(
        job_files,
        tmp_path / "auto",
        "tensorrt-mixed",
        mixedPrecision={"mode": "auto", "sensitivity": "exhaustive"},
        acceptance={"maxAccuracyDrop": 0.03, "minCompressionRatio": 0},
    )
    result, ctx = _run(auto, tmp_path / "work-auto")
    assert result.exit_code == 0, result.message
    report = json.loads((tmp_path / "auto" / "report.json").read_text())
    sensitivity = report["analysis"]["sensitivity"]
    ranked = [entry["layer"] for entry in sensitivity["layers"]]
    assert sensitivity["mode"] == "exhaustive" and len(ranked) >= 3 and sensitivity["agreement"] is not None
    assert any("as a proxy for tensorrt-mixed" in note for note in ctx.notes)
    assert not any("sensitivity skipped" in note for note in ctx.notes)

    manual = _spec(
        job_files,
        tmp_path / "manual",
        "tensorrt-mixed",
        mixedPrecision={"mode": "manual", "pinnedLayers": ranked[:2]},
        acceptance={"maxAccuracyDrop": 0.03, "minCompressionRatio": 0},
    )
    result, ctx = _run(manual, tmp_path / "work-manual")
    assert result.exit_code == 0, result.message
    pinned = gpu_standins.builds[-1]["pinned"]
    assert len(pinned) >= 2 and {p["precision"] for p in pinned.values()} == {"HALF"}
    assert not [n for n in ctx.notes if "not pinned" in n], ctx.notes
