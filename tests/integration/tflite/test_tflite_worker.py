"""edgequant-worker as the pod runs it: spec in EDGEQUANT_SPEC, data and outputs in S3 (moto server), exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.api.exitcodes import ExitCode
from edgequant.api.result import WorkerResult

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def _worker(
    spec: dict[str, Any],
    tmp_path: Path,
    *,
    name: str = "fmnist",
    env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], WorkerResult, str]:
    """Run the worker with the whole QuantizationJob in $EDGEQUANT_SPEC; returns the process, result and raw message."""
    log = tmp_path / "termination-log"
    document = {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationJob",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": spec,
    }
    full_env = {
        **os.environ,
        **(env or {}),
        "EDGEQUANT_SPEC": json.dumps(document),
        "EDGEQUANT_TERMINATION_LOG": str(log),
        "EDGEQUANT_WORKDIR": str(tmp_path / "work"),
    }
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("edgequant-worker"))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=600,
    )
    text = log.read_text()
    return proc, WorkerResult.from_termination_message(text), text


def _storage(endpoint: str) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "pathStyle": True,
        "region": "us-east-1",
        "credentialsSecret": {"name": "s3-credentials"},
    }


def _keys(client: Any, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


@pytest.fixture
def s3_data(
    s3_server: Any,
    s3_client: Any,
    s3_bucket: str,
    s3_upload_tree: Callable[..., int],
    trained_cnn: Path,
    fmnist_files: dict[str, Path],
) -> str:
    """The trained CNN, the calibration imagefolder and the test npz in a fresh bucket; returns the bucket."""
    s3_client.upload_file(str(trained_cnn), s3_bucket, "models/fmnist-cnn.keras")
    s3_upload_tree(fmnist_files["calibration"], s3_bucket, "datasets/calibration/")
    s3_client.upload_file(str(fmnist_files["test.npz"]), s3_bucket, "datasets/test.npz")
    return s3_bucket


def test_full_int8_on_s3_publishes_artifact_report_and_result(
    s3_server: Any,
    s3_client: Any,
    s3_data: str,
    spec_for: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    b = s3_data
    spec = spec_for(
        "tflite-int8",
        model=f"s3://{b}/models/fmnist-cnn.keras",
        out=f"s3://{b}/artifacts/run-1/",
        calibration=f"s3://{b}/datasets/calibration/",
        evaluation=f"s3://{b}/datasets/test.npz",
        acceptance={"maxAccuracyDrop": 0.02},
        storage=_storage(s3_server.endpoint),
    )
    proc, result, text = _worker(spec, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result.exit_code == 0 and result.reason == "Completed"
    assert len(text.encode()) < 4096
    for stage in ("fetch", "validate-data", "baseline", "quantize", "evaluate", "gate", "upload"):
        assert f"stage {stage} done" in proc.stderr
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in proc.stderr + proc.stdout + text
    res = result.results
    assert res is not None and res.artifact is not None
    artifact_key = res.artifact.uri.removeprefix(f"s3://{b}/")
    body = s3_client.get_object(Bucket=b, Key=artifact_key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == res.artifact.sha256 and len(body) == res.artifact.size_bytes
    assert res.report_uri == f"s3://{b}/artifacts/run-1/report.json"
    assert res.input_contract.dtype == "uint8" and res.compression_ratio > 3
    report = json.loads(s3_client.get_object(Bucket=b, Key="artifacts/run-1/report.json")["Body"].read())
    assert report["job"] == {"name": "fmnist", "namespace": "ml"}
    assert report["artifact"]["sha256"] == res.artifact.sha256
    assert report["inputContract"]["dtype"] == "uint8"
    assert [d["role"] for d in report["datasets"]] == ["calibration", "evaluation"]
    assert report["datasets"][0]["classCounts"] == {
        f"{i:02d}_{n}": 30
        for i, n in enumerate(
            ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
        )
    }


def test_random_noise_calibration_fails_validation_naming_files(
    s3_server: Any,
    s3_client: Any,
    s3_bucket: str,
    trained_cnn: Path,
    spec_for: Callable[..., dict[str, Any]],
    tmp_path: Path,
    imagefolder_writer: Callable[..., Path],
    s3_upload_tree: Callable[..., int],
    fmnist_files: dict[str, Path],
) -> None:
    b = s3_bucket
    noise = np.random.default_rng(3).integers(0, 256, size=(150, 28, 28), dtype=np.uint8)
    imagefolder_writer(tmp_path / "noise", noise, np.arange(150) % 10)
    s3_upload_tree(tmp_path / "noise", b, "datasets/noise/")
    s3_client.upload_file(str(trained_cnn), b, "m.keras")
    s3_client.upload_file(str(fmnist_files["test.npz"]), b, "test.npz")
    spec = spec_for(
        "tflite-int8",
        model=f"s3://{b}/m.keras",
        out=f"s3://{b}/out/",
        calibration=f"s3://{b}/datasets/noise/",
        evaluation=f"s3://{b}/test.npz",
        storage=_storage(s3_server.endpoint),
    )
    proc, result, text = _worker(spec, tmp_path)
    assert proc.returncode == ExitCode.DATA_VALIDATION_FAILED == result.exit_code
    assert result.reason == "DataValidationFailed" and "random noise" in result.message
    assert len(text.encode()) < 4096
    assert _keys(s3_client, b, "out/") == ["out/report.html", "out/report.json"]
    report = json.loads(s3_client.get_object(Bucket=b, Key="out/report.json")["Body"].read())
    noise_finding = next(f for f in report["findings"] if f["code"] == "noise")
    assert noise_finding["severity"] == "error" and noise_finding["count"] == 150
    assert noise_finding["files"][0].endswith(".png") and "/" in noise_finding["files"][0]


def test_missed_budget_exits_acceptance_failed_without_publishing(
    s3_server: Any,
    s3_client: Any,
    s3_data: str,
    spec_for: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    b = s3_data
    spec = spec_for(
        "tflite-dynamic-range",
        model=f"s3://{b}/models/fmnist-cnn.keras",
        out=f"s3://{b}/strict/",
        acceptance={"minCompressionRatio": 50},
        storage=_storage(s3_server.endpoint),
    )
    proc, result, _ = _worker(spec, tmp_path)
    assert proc.returncode == ExitCode.ACCEPTANCE_FAILED == result.exit_code
    assert "below acceptance.minCompressionRatio 50.00x" in result.message
    assert result.results.artifact is None and result.results.compression_ratio > 2
    assert not [k for k in _keys(s3_client, b, "strict/") if k.endswith(".tflite")]


def test_unreachable_storage_exits_storage_unavailable(spec_for: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    from tests.conftest import DUMMY_AWS_ENV, free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    spec = spec_for("tflite-float16", model="s3://models/m.keras", out="s3://artifacts/x/", storage=_storage(endpoint))
    proc, result, _ = _worker(spec, tmp_path, env=DUMMY_AWS_ENV)
    assert proc.returncode == ExitCode.STORAGE_UNAVAILABLE == result.exit_code
    assert f"cannot reach {endpoint}" in result.message
