"""The operator end to end on the real control plane: QuantizationJob -> batch Job -> process node
running `edgequant-worker` against the moto S3 server -> status.

The operator runs as a real subprocess (`edgequant operator`), exactly as in its pod.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.conftest import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------- helpers


class Operator:
    """`edgequant operator` as a subprocess; output kept in a file shown on failure."""

    def __init__(self, cluster: Any, namespace: str, log_dir: Path, *extra: str) -> None:
        self.cluster, self.namespace, self.extra = cluster, namespace, extra
        self.log_path = log_dir / f"operator-{namespace}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**self.cluster.env(), "PYTHONUNBUFFERED": "1"}
        args = [
            str(VENV_BIN / "edgequant"), "operator", "--namespace", self.namespace,
            "--liveness-port", str(free_port()), "--metrics-port", str(free_port()), "--log-format", "plain", *self.extra,
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""


@pytest.fixture(scope="module")
def crd_installed(k8s_cluster: Any) -> None:
    k8s_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "edgequant.io_quantizationjobs.yaml"))
    k8s_cluster.kubectl("wait", "--for=condition=Established", "crd/quantizationjobs.edgequant.io", "--timeout=60s")
    wait_for(lambda: k8s_cluster.kubectl("get", "qj", "-A", check=False).returncode == 0, timeout=60, what="qj discovery")


@pytest.fixture
def operator(k8s_cluster: Any, namespace: str, tmp_path: Path, crd_installed: None) -> Iterator[Operator]:
    op = Operator(k8s_cluster, namespace, tmp_path)
    op.start()
    try:
        yield op
    finally:
        op.stop()
        print("---- operator log ----\n" + op.tail())


def get_qj(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", "qj", name, "-n", namespace, "-o", "json").stdout)


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def wait_condition(cluster: Any, namespace: str, name: str, condition: str, timeout: int = 240) -> dict[str, Any]:
    cluster.kubectl("wait", f"--for=condition={condition}", f"qj/{name}", "-n", namespace, f"--timeout={timeout}s", timeout=timeout + 30)
    return get_qj(cluster, namespace, name)


def batch_jobs(cluster: Any, namespace: str, name: str | None = None) -> list[dict[str, Any]]:
    selector = ["-l", f"edgequant.io/quantizationjob={name}"] if name else ["-l", "app.kubernetes.io/managed-by=edgequant-operator"]
    return json.loads(cluster.kubectl("get", "jobs", "-n", namespace, *selector, "-o", "json").stdout)["items"]


def apply(cluster: Any, namespace: str, manifest: dict[str, Any] | list[dict[str, Any]]) -> None:
    docs = manifest if isinstance(manifest, list) else [manifest]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs), timeout=120)


# --------------------------------------------------------------------------- model and data in S3


@pytest.fixture(scope="module")
def tiny_keras_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Keras CNN for 28x28 grayscale (untrained: these tests are about orchestration)."""
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    code = (
        "import keras, sys\n"
        "keras.utils.set_random_seed(0)\n"
        "m = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation='relu'),"
        " keras.layers.MaxPooling2D(2), keras.layers.Flatten(), keras.layers.Dense(64, activation='relu'), keras.layers.Dense(10)])\n"
        "m.save(sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, timeout=300)
    return path


@pytest.fixture
def s3_world(s3_server: Any, s3_client: Any, tiny_keras_model: Path, fashion_mnist: Any, tmp_path: Path) -> dict[str, Any]:
    """A bucket with the model, an evaluation set (npz, 200 real images) and a too-small calibration set."""
    bucket = f"e2e-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=bucket)
    s3_client.upload_file(str(tiny_keras_model), bucket, "models/tiny.keras")
    x, y = fashion_mnist.test_x[:200], fashion_mnist.test_y[:200]
    eval_npz = tmp_path / "eval.npz"
    np.savez(eval_npz, x=x, y=y)
    s3_client.upload_file(str(eval_npz), bucket, "data/eval.npz")
    small = tmp_path / "small.npz"
    np.savez(small, x=x[:20], y=y[:20])
    s3_client.upload_file(str(small), bucket, "data/small-calibration.npz")
    return {"bucket": bucket, "endpoint": s3_server.endpoint, "client": s3_client}


@pytest.fixture
def s3_secret(k8s_cluster: Any, namespace: str) -> str:
    """The moto server's (dummy) keys in a Secret: the pod gets them via secretKeyRef, the operator never reads them."""
    k8s_cluster.kubectl(
        "create", "secret", "generic", "s3-credentials", "-n", namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={os.environ['AWS_ACCESS_KEY_ID']}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={os.environ['AWS_SECRET_ACCESS_KEY']}",
    )
    return "s3-credentials"


def qj(name: str, world: dict[str, Any], secret: str, **overrides: Any) -> dict[str, Any]:
    bucket = world["bucket"]
    spec: dict[str, Any] = {
        "method": "tflite-dynamic-range",
        "model": {"uri": f"s3://{bucket}/models/tiny.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
        "evaluation": {"dataset": {"uri": f"s3://{bucket}/data/eval.npz", "layout": "npz"}, "samples": 100},
        "mixedPrecision": {"sensitivity": "off"},
        "acceptance": {"maxAccuracyDrop": 1.0},
        "output": {"uri": f"s3://{bucket}/out/{name}/"},
        "storage": {"endpoint": world["endpoint"], "pathStyle": True, "region": "us-east-1", "credentialsSecret": {"name": secret}},
        "execution": {"backoffLimit": 2},
    }
    for key, value in overrides.items():
        spec[key] = value
    return {"apiVersion": "edgequant.io/v1alpha1", "kind": "QuantizationJob", "metadata": {"name": name}, "spec": spec}


# --------------------------------------------------------------------------- tests


def test_succeeds_with_results_and_artifact_in_s3(k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str) -> None:
    apply(k8s_cluster, namespace, qj("happy", s3_world, s3_secret))
    obj = wait_condition(k8s_cluster, namespace, "happy", "Succeeded")
    status = obj["status"]
    assert status["phase"] == "Succeeded" and status["observedGeneration"] == 1
    results = status["results"]
    artifact = results["artifact"]
    assert artifact["uri"].startswith(f"s3://{s3_world['bucket']}/out/happy/")
    key = artifact["uri"].split("/", 3)[3]
    body = s3_world["client"].get_object(Bucket=s3_world["bucket"], Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == artifact["sha256"]
    assert len(body) == artifact["sizeBytes"]
    assert results["compressionRatio"] > 1.0
    assert results["baseline"]["accuracy"] is not None and results["quantized"]["accuracy"] is not None
    assert results["reportUri"].endswith("report.json")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Succeeded"]["status"] == "True" and conditions["Failed"]["status"] == "False"
    assert all(c["observedGeneration"] == 1 for c in conditions.values())
    assert [j["metadata"]["name"] for j in batch_jobs(k8s_cluster, namespace, "happy")] == ["happy-g1"]
    # Secrets never leak into the resource.
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in json.dumps(obj)
    events = k8s_cluster.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=happy", "-o", "json").stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert "Completed" in reasons


def test_bad_data_fails_without_retries(k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str) -> None:
    bucket = s3_world["bucket"]
    manifest = qj(
        "bad-data", s3_world, s3_secret, method="tflite-int8",
        calibration={"dataset": {"uri": f"s3://{bucket}/data/small-calibration.npz", "layout": "npz"}},
    )
    apply(k8s_cluster, namespace, manifest)
    status = wait_condition(k8s_cluster, namespace, "bad-data", "Failed")["status"]
    assert status["phase"] == "Failed"
    assert status["reason"] == "DataValidationFailed"
    assert "20" in status["message"] and "minSamples" in status["message"]
    assert status["attempts"] == 1
    job = batch_jobs(k8s_cluster, namespace, "bad-data")[0]
    assert job["status"].get("failed") == 1  # podFailurePolicy FailJob: no retry


def test_storage_outage_is_retried_up_to_backoff_limit(k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str) -> None:
    manifest = qj("outage", s3_world, s3_secret, execution={"backoffLimit": 1})
    manifest["spec"]["storage"]["endpoint"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    apply(k8s_cluster, namespace, manifest)
    status = wait_condition(k8s_cluster, namespace, "outage", "Failed", timeout=300)["status"]
    assert status["attempts"] == 2  # first try + backoffLimit 1
    assert status["reason"] == "StorageUnavailable"


def test_restart_mid_job_no_duplicates(k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str) -> None:
    apply(k8s_cluster, namespace, qj("restart", s3_world, s3_secret))
    wait_for(lambda: batch_jobs(k8s_cluster, namespace, "restart"), timeout=120, what="the batch Job")
    operator.kill()
    operator.start()
    status = wait_condition(k8s_cluster, namespace, "restart", "Succeeded")["status"]
    assert status["jobName"] == "restart-g1"
    assert len(batch_jobs(k8s_cluster, namespace, "restart")) == 1


def test_spec_edit_starts_new_run_and_delete_cleans_up(k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str) -> None:
    apply(k8s_cluster, namespace, qj("edit", s3_world, s3_secret))
    wait_condition(k8s_cluster, namespace, "edit", "Succeeded")
    k8s_cluster.kubectl("patch", "qj", "edit", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": {"method": "tflite-float16"}}))

    def second_run_done() -> dict[str, Any] | None:
        s = get_qj(k8s_cluster, namespace, "edit").get("status") or {}
        return s if s.get("observedGeneration") == 2 and s.get("phase") == "Succeeded" else None

    status = wait_for(second_run_done, timeout=240, what="generation 2 to succeed")
    assert status["jobName"] == "edit-g2"
    assert status["results"]["method"] == "tflite-float16"
    wait_for(lambda: [j["metadata"]["name"] for j in batch_jobs(k8s_cluster, namespace, "edit")] == ["edit-g2"], timeout=60, what="the g1 Job to go")

    k8s_cluster.kubectl("delete", "qj", "edit", "-n", namespace, "--wait=true", timeout=120)

    def gone() -> bool:
        pods = json.loads(k8s_cluster.kubectl("get", "pods", "-n", namespace, "-l", "edgequant.io/quantizationjob=edit", "-o", "json").stdout)["items"]
        return not batch_jobs(k8s_cluster, namespace, "edit") and not pods

    wait_for(gone, timeout=120, what="the Job and pods to be garbage-collected")


def test_tensorrt_job_lands_on_gpu_node_and_fails_fast_without_gpu(k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str) -> None:
    manifest = qj("trt", s3_world, s3_secret, method="tensorrt-fp16")
    manifest["spec"]["model"] = {"uri": f"s3://{s3_world['bucket']}/models/missing.onnx", "input": {"shape": [1, 28, 28], "layout": "NCHW", "colorOrder": "GRAY"}}
    apply(k8s_cluster, namespace, manifest)
    status = wait_condition(k8s_cluster, namespace, "trt", "Failed")["status"]
    pods = json.loads(k8s_cluster.kubectl("get", "pods", "-n", namespace, "-l", "job-name=trt-g1", "-o", "json").stdout)["items"]
    assert pods and all(p["spec"]["nodeName"] == "edgequant-gpu" for p in pods)
    assert pods[0]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert status["reason"] in ("AcceleratorUnavailable", "InvalidInput")
    assert status["attempts"] == 1


def test_two_hundred_jobs_all_reach_a_terminal_state(k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str) -> None:
    """Scale: 200 at once. The model is missing on purpose, so each worker stops at its first S3 read
    (InvalidInput, no retry) and the test measures orchestration, not quantization."""
    manifests = []
    for i in range(200):
        m = qj(f"many-{i:03d}", s3_world, s3_secret)
        m["spec"]["model"]["uri"] = f"s3://{s3_world['bucket']}/models/absent-{i}.keras"
        manifests.append(m)
    apply(k8s_cluster, namespace, manifests)

    def all_terminal() -> bool:
        items = json.loads(k8s_cluster.kubectl("get", "qj", "-n", namespace, "-o", "json", timeout=60).stdout)["items"]
        phases = [((i.get("status") or {}).get("phase")) for i in items]
        return len(items) == 200 and all(p in ("Succeeded", "Failed") for p in phases)

    wait_for(all_terminal, timeout=900, interval=5, what="200 QuantizationJobs to finish")
    items = json.loads(k8s_cluster.kubectl("get", "qj", "-n", namespace, "-o", "json").stdout)["items"]
    assert {i["status"]["reason"] for i in items} == {"InvalidInput"}
    assert len(batch_jobs(k8s_cluster, namespace)) == 200
