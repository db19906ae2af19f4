"""The operator end to end on the real control plane: QuantizationJob -> batch Job -> the process node running
`edgequant-worker` against the moto S3 server -> status.

The operator runs as a real subprocess (`edgequant operator`, admin kubeconfig), exactly as in its pod; tests wait
on conditions and object state, never on log lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
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
TERMINAL = ("Succeeded", "Failed")


# --------------------------------------------------------------------------- the operator process


class Operator:
    """`edgequant operator` as a subprocess watching one namespace; its output is kept in a file."""

    def __init__(
        self, cluster: Any, namespace: str, log_dir: Path, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self.cluster, self.namespace, self.extra, self.env = cluster, namespace, extra, env or {}
        self.log_path = log_dir / f"operator-{namespace}-{uuid.uuid4().hex[:6]}.log"
        self.liveness_port, self.metrics_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # No resync timer unless a test asks for one: Job and pod events alone must drive the status.
        # The moto server and the deliberately unreachable endpoints tests use all live on 127.0.0.1: the policy
        # allows that host on any port (a test of the policy itself passes its own list).
        env = {
            **self.cluster.env(),
            "PYTHONUNBUFFERED": "1",
            "EDGEQUANT_OPERATOR_RESYNC_SECONDS": "0",
            "EDGEQUANT_OPERATOR_ALLOWED_S3_ENDPOINTS": "http://127.0.0.1:*",
            **self.env,
        }
        args = [
            str(VENV_BIN / "edgequant"),
            "operator",
            "--namespace",
            self.namespace,
            "--log-format",
            "plain",
            "--liveness-port",
            str(self.liveness_port),
            "--metrics-port",
            str(self.metrics_port),
            *self.extra,
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.healthy, timeout=60, what="the operator's /healthz")

    def healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"the operator exited:\n{self.tail()}"
        return http_get(f"http://127.0.0.1:{self.liveness_port}/healthz") is not None

    def metrics(self) -> dict[str, float]:
        text = http_get(f"http://127.0.0.1:{self.metrics_port}/metrics") or ""
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:] if self.log_path.exists() else ""


def http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode() if response.status == 200 else None
    except OSError:
        return None


@pytest.fixture(scope="module")
def crd_installed(k8s_cluster: Any) -> None:
    k8s_cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "edgequant.io_quantizationjobs.yaml")
    )
    k8s_cluster.kubectl("wait", "--for=condition=Established", "crd/quantizationjobs.edgequant.io", "--timeout=60s")
    wait_for(
        lambda: k8s_cluster.kubectl("get", "qj", "-A", check=False).returncode == 0, timeout=60, what="qj discovery"
    )


@pytest.fixture
def start_operator(
    k8s_cluster: Any, namespace: str, tmp_path: Path, crd_installed: None
) -> Iterator[Callable[..., Operator]]:
    started: list[Operator] = []

    def start(*extra: str, env: dict[str, str] | None = None) -> Operator:
        op = Operator(k8s_cluster, namespace, tmp_path, *extra, env=env)
        op.start()
        started.append(op)
        return op

    try:
        yield start
    finally:
        for op in started:
            op.stop()
        for op in started:
            print(f"---- {op.log_path.name} ----\n" + op.tail())


@pytest.fixture
def operator(start_operator: Callable[..., Operator]) -> Operator:
    return start_operator()


# --------------------------------------------------------------------------- cluster helpers


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def get_json(cluster: Any, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json", timeout=120).stdout)


def get_qj(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    return get_json(cluster, "qj", name, "-n", namespace)


def wait_condition(cluster: Any, namespace: str, name: str, condition: str, timeout: int = 300) -> dict[str, Any]:
    """`kubectl wait --for=condition=...`: the documented way to wait for a QuantizationJob."""
    cluster.kubectl(
        "wait",
        f"--for=condition={condition}",
        f"qj/{name}",
        "-n",
        namespace,
        f"--timeout={timeout}s",
        timeout=timeout + 30,
    )
    return get_qj(cluster, namespace, name)


def batch_jobs(cluster: Any, namespace: str, name: str | None = None) -> list[dict[str, Any]]:
    selector = f"edgequant.io/quantizationjob={name}" if name else "app.kubernetes.io/managed-by=edgequant-operator"
    return list(get_json(cluster, "jobs", "-n", namespace, "-l", selector)["items"])


def pods_of(cluster: Any, namespace: str, job_name: str) -> list[dict[str, Any]]:
    return list(get_json(cluster, "pods", "-n", namespace, "-l", f"job-name={job_name}")["items"])


def events_for(cluster: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    items = get_json(
        cluster,
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name},involvedObject.kind=QuantizationJob",
    )["items"]
    return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def create(cluster: Any, namespace: str, manifests: list[dict[str, Any]]) -> None:
    """kubectl creates them one by one: 5 s each, the API server's write latency (p95) on a loaded 2-core machine."""
    timeout = max(300, 5 * len(manifests))
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(manifests), timeout=timeout)


# --------------------------------------------------------------------------- model and data in S3


@pytest.fixture(scope="module")
def tiny_keras_model() -> Path:
    """A small Keras CNN for 28x28 grayscale (untrained: these tests are about orchestration), cached by its code."""
    code = (
        "import keras, sys\n"
        "keras.utils.set_random_seed(0)\n"
        "m = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation='relu'),"
        " keras.layers.MaxPooling2D(2), keras.layers.Flatten(), keras.layers.Dense(64, activation='relu'), keras.layers.Dense(10)])\n"
        "m.save(sys.argv[1])\n"
    )
    path = ROOT / ".cache" / "test-models" / f"operator-e2e-{hashlib.sha256(code.encode()).hexdigest()[:12]}.keras"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.keras")
        subprocess.run([sys.executable, "-c", code, str(partial)], check=True, capture_output=True, timeout=300)
        partial.rename(path)
    return path


@pytest.fixture
def s3_world(
    s3_server: Any, s3_client: Any, tiny_keras_model: Path, fashion_mnist: Any, tmp_path: Path
) -> dict[str, Any]:
    """A bucket with the model, an evaluation set (npz of 200 real images) and a too-small calibration set."""
    bucket = f"e2e-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=bucket)
    s3_client.upload_file(str(tiny_keras_model), bucket, "models/tiny.keras")
    x, y = fashion_mnist.test_x[:200], fashion_mnist.test_y[:200]
    np.savez(tmp_path / "eval.npz", x=x, y=y)
    s3_client.upload_file(str(tmp_path / "eval.npz"), bucket, "data/eval.npz")
    np.savez(tmp_path / "small.npz", x=x[:20], y=y[:20])
    s3_client.upload_file(str(tmp_path / "small.npz"), bucket, "data/small-calibration.npz")
    return {"bucket": bucket, "endpoint": s3_server.endpoint, "client": s3_client}


@pytest.fixture
def s3_secret(k8s_cluster: Any, namespace: str, s3_server: Any) -> str:
    """The moto server's (dummy) keys in a Secret: pods get them by secretKeyRef, the operator never reads them."""
    k8s_cluster.kubectl(
        "create",
        "secret",
        "generic",
        "s3-credentials",
        "-n",
        namespace,
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
        "storage": {
            "endpoint": world["endpoint"],
            "pathStyle": True,
            "region": "us-east-1",
            "credentialsSecret": {"name": secret},
        },
        "execution": {"backoffLimit": 2},
    }
    spec.update(overrides)
    return {"apiVersion": "edgequant.io/v1alpha1", "kind": "QuantizationJob", "metadata": {"name": name}, "spec": spec}


def missing_model(manifest: dict[str, Any]) -> dict[str, Any]:
    """The worker stops at its first S3 read (InvalidInput, exit 10: no retry): cheap runs for orchestration tests."""
    manifest["spec"]["model"]["uri"] = manifest["spec"]["model"]["uri"].replace(
        "tiny.keras", f"absent-{manifest['metadata']['name']}.keras"
    )
    return manifest


# --------------------------------------------------------------------------- tests


def test_succeeds_with_results_and_the_artifact_in_s3(
    k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str
) -> None:
    create(k8s_cluster, namespace, [qj("happy", s3_world, s3_secret)])
    obj = wait_condition(k8s_cluster, namespace, "happy", "Succeeded")
    status = obj["status"]
    assert status["phase"] == "Succeeded" and status["reason"] == "Completed" and status["observedGeneration"] == 1
    assert status["attempts"] == 1 and status["jobName"] == "happy-g1"
    assert status["startTime"] <= status["completionTime"]
    results = status["results"]
    artifact = results["artifact"]
    assert artifact["uri"].startswith(f"s3://{s3_world['bucket']}/out/happy/")
    body = s3_world["client"].get_object(Bucket=s3_world["bucket"], Key=artifact["uri"].split("/", 3)[3])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == artifact["sha256"] and len(body) == artifact["sizeBytes"]
    assert results["compressionRatio"] > 2.0 and results["method"] == "tflite-dynamic-range"
    assert results["baseline"]["accuracy"] is not None and results["quantized"]["accuracy"] is not None
    assert abs(results["accuracyDrop"] - (results["baseline"]["accuracy"] - results["quantized"]["accuracy"])) < 1e-6
    s3_world["client"].head_object(Bucket=s3_world["bucket"], Key=results["reportUri"].split("/", 3)[3])
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Succeeded"]["status"] == "True" and conditions["Failed"]["status"] == "False"
    assert conditions["Running"]["status"] == "False" and conditions["Degraded"]["status"] == "False"
    assert all(c["observedGeneration"] == 1 for c in conditions.values())
    assert [j["metadata"]["name"] for j in batch_jobs(k8s_cluster, namespace, "happy")] == ["happy-g1"]
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in json.dumps(obj)  # secrets never reach the resource
    reasons = [e["reason"] for e in events_for(k8s_cluster, namespace, "happy")]
    assert "JobCreated" in reasons and "Completed" in reasons
    # The rendered pod, as the API server stored it.
    (pod,) = pods_of(k8s_cluster, namespace, "happy-g1")
    assert pod["spec"]["nodeName"] == "edgequant-cpu" and pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    metrics = operator.metrics()
    assert metrics['edgequant_quantizationjobs{phase="Succeeded"}'] == 1.0
    assert metrics["edgequant_batch_jobs_created_total"] == 1.0
    assert metrics['edgequant_run_duration_seconds_count{method="tflite-dynamic-range",phase="Succeeded"}'] == 1.0
    assert {k: v for k, v in metrics.items() if k.startswith("edgequant_reconcile_errors_total") and v} == {}


def test_bad_data_fails_with_reason_and_message_and_no_retry(
    k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str
) -> None:
    bucket = s3_world["bucket"]
    manifest = qj(
        "bad-data",
        s3_world,
        s3_secret,
        method="tflite-int8",
        calibration={"dataset": {"uri": f"s3://{bucket}/data/small-calibration.npz", "layout": "npz"}},
    )
    create(k8s_cluster, namespace, [manifest])
    status = wait_condition(k8s_cluster, namespace, "bad-data", "Failed")["status"]
    assert status["phase"] == "Failed" and status["reason"] == "DataValidationFailed"
    assert "minSamples" in status["message"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Failed"]["reason"] == "DataValidationFailed" and conditions["Succeeded"]["status"] == "False"
    assert status["attempts"] == 1

    def concluded() -> dict[str, Any] | None:
        """The status comes from the pod's exit, before the Job controller fails the Job: wait for that."""
        (job,) = batch_jobs(k8s_cluster, namespace, "bad-data")
        failed = any(c["type"] == "Failed" and c["status"] == "True" for c in job["status"].get("conditions") or [])
        return job if failed else None

    job = wait_for(concluded, timeout=300, what="the Job controller to fail the Job")
    assert (
        job["status"].get("failed") == 1 and len(pods_of(k8s_cluster, namespace, "bad-data-g1")) == 1
    )  # FailJob: no retry

    def warnings() -> list[str]:
        """The Event is posted after the status write."""
        return [e["reason"] for e in events_for(k8s_cluster, namespace, "bad-data") if e["type"] == "Warning"]

    assert wait_for(warnings, timeout=60, what="the Warning Event") == ["DataValidationFailed"]


def test_a_crashing_worker_is_retried_up_to_the_backoff_limit(
    k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str
) -> None:
    """Each attempt is killed (SIGKILL: exit 137, no termination message) as soon as it runs."""
    create(k8s_cluster, namespace, [qj("crash", s3_world, s3_secret, execution={"backoffLimit": 1})])
    killed: set[str] = set()

    def kill_running_attempts() -> dict[str, Any] | None:
        for pod in pods_of(k8s_cluster, namespace, "crash-g1"):
            for cs in pod["status"].get("containerStatuses") or []:
                cid = cs.get("containerID") or ""
                if (
                    cs.get("state", {}).get("running")
                    and cid.startswith("process://")
                    and pod["metadata"]["name"] not in killed
                ):
                    os.kill(int(cid.removeprefix("process://")), signal.SIGKILL)
                    killed.add(pod["metadata"]["name"])
        status = get_qj(k8s_cluster, namespace, "crash").get("status") or {}
        return status if status.get("phase") in TERMINAL else None

    status = wait_for(kill_running_attempts, timeout=240, what="the crashing job to fail")
    assert status["phase"] == "Failed" and status["reason"] == "BackoffLimitExceeded"
    assert status["attempts"] == 2 and len(killed) == 2  # the first try and backoffLimit 1 retry
    assert "137" in status["message"]
    reasons = [e["reason"] for e in events_for(k8s_cluster, namespace, "crash")]
    assert "Retrying" in reasons and "BackoffLimitExceeded" in reasons


def test_operator_killed_mid_job_converges_after_restart_without_duplicates(
    k8s_cluster: Any, namespace: str, start_operator: Callable[..., Operator], s3_world: dict[str, Any], s3_secret: str
) -> None:
    operator = start_operator()
    create(k8s_cluster, namespace, [qj("restart", s3_world, s3_secret)])
    wait_for(lambda: batch_jobs(k8s_cluster, namespace, "restart"), timeout=120, what="the batch Job")
    operator.kill()
    # The run finishes while no operator watches...
    k8s_cluster.kubectl(
        "wait", "--for=condition=Complete", "job/restart-g1", "-n", namespace, "--timeout=240s", timeout=270
    )
    assert (get_qj(k8s_cluster, namespace, "restart").get("status") or {}).get("phase") != "Succeeded"
    # ... and a new operator process picks it up from the cluster state alone.
    start_operator()
    status = wait_condition(k8s_cluster, namespace, "restart", "Succeeded")["status"]
    assert status["jobName"] == "restart-g1" and status["results"]["artifact"]["sha256"]
    jobs = batch_jobs(k8s_cluster, namespace, "restart")
    assert [j["metadata"]["name"] for j in jobs] == ["restart-g1"] and len(
        pods_of(k8s_cluster, namespace, "restart-g1")
    ) == 1


def test_a_spec_edit_while_running_replaces_the_run_and_delete_cleans_up(
    k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str
) -> None:
    # Generation 1 cannot reach its storage (exit 13, retriable): it keeps retrying until the edit.
    manifest = qj("edit", s3_world, s3_secret, execution={"backoffLimit": 6})
    manifest["spec"]["storage"] = {**manifest["spec"]["storage"], "endpoint": f"http://127.0.0.1:{free_port()}"}
    create(k8s_cluster, namespace, [manifest])

    def retrying() -> dict[str, Any] | None:
        s = get_qj(k8s_cluster, namespace, "edit").get("status") or {}
        return s if s.get("reason") == "Retrying" else None

    first = wait_for(retrying, timeout=180, what="generation 1 to retry")
    assert first["phase"] == "Running" and "StorageUnavailable" in first["message"]
    k8s_cluster.kubectl(
        "patch",
        "qj",
        "edit",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"storage": {"endpoint": s3_world["endpoint"]}}}),
    )

    def second_run_done() -> dict[str, Any] | None:
        s = get_qj(k8s_cluster, namespace, "edit").get("status") or {}
        return s if s.get("observedGeneration") == 2 and s.get("phase") in TERMINAL else None

    status = wait_for(second_run_done, timeout=300, what="generation 2 to finish")
    assert status["phase"] == "Succeeded" and status["jobName"] == "edit-g2" and status["attempts"] == 1
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])
    wait_for(
        lambda: [j["metadata"]["name"] for j in batch_jobs(k8s_cluster, namespace, "edit")] == ["edit-g2"],
        timeout=60,
        what="the g1 Job to go",
    )
    wait_for(lambda: not pods_of(k8s_cluster, namespace, "edit-g1"), timeout=60, what="the g1 pods to go")

    k8s_cluster.kubectl("delete", "qj", "edit", "-n", namespace, "--wait=true", timeout=120)

    def gone() -> bool:
        pods = get_json(k8s_cluster, "pods", "-n", namespace, "-l", "edgequant.io/quantizationjob=edit")["items"]
        return not batch_jobs(k8s_cluster, namespace, "edit") and not pods

    wait_for(gone, timeout=120, what="the Job and pods to be garbage-collected")


def test_an_invalid_spec_that_passed_the_crd_fails_with_invalid_spec(
    k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str
) -> None:
    """affinity is passed through unchecked by the CRD; the API server rejects the Job it ends up in."""
    bad_affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    create(k8s_cluster, namespace, [qj("bad-affinity", s3_world, s3_secret, scheduling={"affinity": bad_affinity})])
    status = wait_condition(k8s_cluster, namespace, "bad-affinity", "Failed", timeout=60)["status"]
    assert status["reason"] == "InvalidSpec" and "nodeSelectorTerms" in status["message"]
    assert batch_jobs(k8s_cluster, namespace, "bad-affinity") == []
    # Fixing the spec starts a run.
    k8s_cluster.kubectl(
        "patch",
        "qj",
        "bad-affinity",
        "-n",
        namespace,
        "--type=json",
        "-p",
        json.dumps([{"op": "remove", "path": "/spec/scheduling/affinity"}]),
    )
    wait_for(lambda: batch_jobs(k8s_cluster, namespace, "bad-affinity"), timeout=60, what="a Job for the fixed spec")


def test_tensorrt_lands_on_the_gpu_node_and_fails_fast_without_a_gpu(
    k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str
) -> None:
    manifest = qj("trt", s3_world, s3_secret, method="tensorrt-fp16")
    manifest["spec"]["model"] = {
        "uri": f"s3://{s3_world['bucket']}/models/missing.onnx",
        "input": {"shape": [1, 28, 28], "layout": "NCHW", "colorOrder": "GRAY"},
    }
    create(k8s_cluster, namespace, [manifest])
    status = wait_condition(k8s_cluster, namespace, "trt", "Failed")["status"]
    (pod,) = pods_of(k8s_cluster, namespace, "trt-g1")
    assert pod["spec"]["nodeName"] == "edgequant-gpu"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert status["reason"] in ("AcceleratorUnavailable", "InvalidInput") and status["attempts"] == 1


def test_the_concurrency_cap_makes_jobs_wait_then_run(
    k8s_cluster: Any, namespace: str, start_operator: Callable[..., Operator], s3_world: dict[str, Any], s3_secret: str
) -> None:
    start_operator("--max-concurrent-jobs", "1", env={"EDGEQUANT_OPERATOR_CAPACITY_RETRY_SECONDS": "1"})
    # The first one occupies the only slot for two attempts (unreachable storage, backoffLimit 1).
    slow = missing_model(qj("slot-holder", s3_world, s3_secret, execution={"backoffLimit": 1}))
    slow["spec"]["storage"] = {**slow["spec"]["storage"], "endpoint": f"http://127.0.0.1:{free_port()}"}
    create(k8s_cluster, namespace, [slow])
    wait_for(lambda: batch_jobs(k8s_cluster, namespace, "slot-holder"), timeout=60, what="the first Job")
    create(k8s_cluster, namespace, [missing_model(qj("waiter", s3_world, s3_secret))])

    def waiting() -> dict[str, Any] | None:
        s = get_qj(k8s_cluster, namespace, "waiter").get("status") or {}
        return s if s.get("reason") == "WaitingForCapacity" else None

    status = wait_for(waiting, timeout=60, what="the second job to wait for capacity")
    assert status["phase"] == "Pending" and batch_jobs(k8s_cluster, namespace, "waiter") == []
    wait_condition(k8s_cluster, namespace, "slot-holder", "Failed")
    final = wait_condition(k8s_cluster, namespace, "waiter", "Failed")["status"]  # it ran after all (missing model)
    assert final["reason"] == "InvalidInput" and final["jobName"] == "waiter-g1"


def test_suspend_then_resume(
    k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str
) -> None:
    create(k8s_cluster, namespace, [missing_model(qj("pause", s3_world, s3_secret, suspend=True))])
    status = wait_condition(k8s_cluster, namespace, "pause", "Suspended", timeout=60)["status"]
    assert status["phase"] == "Suspended"
    (job,) = batch_jobs(k8s_cluster, namespace, "pause")
    assert job["spec"]["suspend"] is True and pods_of(k8s_cluster, namespace, "pause-g1") == []
    k8s_cluster.kubectl("patch", "qj", "pause", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": false}}')
    final = wait_condition(k8s_cluster, namespace, "pause", "Failed")["status"]
    assert final["observedGeneration"] == 2 and final["reason"] == "InvalidInput"
    assert {c["type"]: c["status"] for c in final["conditions"]}["Suspended"] == "False"


def test_the_resync_timer_recreates_a_job_deleted_by_hand(
    k8s_cluster: Any, namespace: str, start_operator: Callable[..., Operator], s3_world: dict[str, Any], s3_secret: str
) -> None:
    start_operator(env={"EDGEQUANT_OPERATOR_RESYNC_SECONDS": "2"})
    create(k8s_cluster, namespace, [missing_model(qj("held", s3_world, s3_secret, suspend=True))])
    wait_condition(k8s_cluster, namespace, "held", "Suspended", timeout=60)
    (job,) = batch_jobs(k8s_cluster, namespace, "held")
    k8s_cluster.kubectl("delete", "job", "held-g1", "-n", namespace, "--wait=true")

    def recreated() -> bool:
        jobs = batch_jobs(k8s_cluster, namespace, "held")
        return len(jobs) == 1 and jobs[0]["metadata"]["uid"] != job["metadata"]["uid"]

    wait_for(recreated, timeout=60, what="the resync to create the Job again")
    assert get_qj(k8s_cluster, namespace, "held")["status"]["phase"] == "Suspended"


def test_a_running_job_deleted_by_hand_is_recreated_on_its_delete_event(
    k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str
) -> None:
    """No resync timer in this operator (EDGEQUANT_OPERATOR_RESYNC_SECONDS=0): the Job's DELETED event alone does it."""
    manifest = qj("deleted", s3_world, s3_secret, execution={"backoffLimit": 6})
    manifest["spec"]["storage"] = {
        **manifest["spec"]["storage"],
        "endpoint": f"http://127.0.0.1:{free_port()}",
    }  # retries: stays running
    create(k8s_cluster, namespace, [manifest])
    wait_for(
        lambda: (get_qj(k8s_cluster, namespace, "deleted").get("status") or {}).get("phase") == "Running",
        timeout=180,
        what="the run to start",
    )
    (job,) = batch_jobs(k8s_cluster, namespace, "deleted")
    k8s_cluster.kubectl("delete", "job", "deleted-g1", "-n", namespace, "--wait=true")

    def recreated() -> bool:
        jobs = batch_jobs(k8s_cluster, namespace, "deleted")
        return (
            len(jobs) == 1
            and jobs[0]["metadata"]["uid"] != job["metadata"]["uid"]
            and jobs[0]["metadata"]["name"] == "deleted-g1"
        )

    wait_for(recreated, timeout=60, what="the Job to be created again")
    assert operator.metrics()["edgequant_batch_jobs_created_total"] == 2.0


def _worker_pid(pod: dict[str, Any]) -> int | None:
    """The process node runs each container as a process: its pid, once it runs."""
    for cs in pod["status"].get("containerStatuses") or []:
        cid = cs.get("containerID") or ""
        if cs.get("state", {}).get("running") and cid.startswith("process://"):
            return int(cid.removeprefix("process://"))
    return None


def test_a_spec_edit_starts_the_new_generation_only_after_the_old_pod_is_gone(
    k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str
) -> None:
    """Both generations write below the same output.uri: generation 2's Job exists only once generation 1's pod has
    stopped and is deleted, so nothing of generation 1 can upload over generation 2's outputs. Generation 1's worker
    is frozen (SIGSTOP): its pod then takes its whole grace period (30 s) to go, and generation 2 waits for it."""
    create(k8s_cluster, namespace, [qj("fence", s3_world, s3_secret)])
    pid = wait_for(
        lambda: next(filter(None, map(_worker_pid, pods_of(k8s_cluster, namespace, "fence-g1"))), None),
        timeout=120,
        what="generation 1's worker",
    )
    os.kill(pid, signal.SIGSTOP)
    k8s_cluster.kubectl(
        "patch",
        "qj",
        "fence",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"acceptance": {"maxAccuracyDrop": 0.9}}}),
    )

    def second_job() -> list[dict[str, Any]]:
        return [j for j in batch_jobs(k8s_cluster, namespace, "fence") if j["metadata"]["name"] == "fence-g2"]

    wait_for(second_job, timeout=120, interval=0.2, what="generation 2's Job")
    assert pods_of(k8s_cluster, namespace, "fence-g1") == []  # gone before generation 2 was created
    assert [j["metadata"]["name"] for j in batch_jobs(k8s_cluster, namespace, "fence")] == ["fence-g2"]
    status = wait_condition(k8s_cluster, namespace, "fence", "Succeeded")["status"]
    assert status["observedGeneration"] == 2 and status["jobName"] == "fence-g2"
    report = (
        s3_world["client"]
        .get_object(Bucket=s3_world["bucket"], Key=status["results"]["reportUri"].split("/", 3)[3])["Body"]
        .read()
    )
    assert json.loads(report)["gate"]["maxAccuracyDrop"] == 0.9  # generation 2's report


def test_a_result_is_recorded_before_the_job_ttl_can_remove_it_and_never_reruns(
    k8s_cluster: Any, namespace: str, start_operator: Callable[..., Operator], s3_world: dict[str, Any], s3_secret: str
) -> None:
    """ttlSecondsAfterFinished 0, and the run finishes while no operator runs: the Job waits (the TTL is set by the
    operator once the status holds the result), the next operator records the result, then the Job goes; neither
    that Job's deletion nor another restart runs the job again."""
    first = start_operator()
    create(
        k8s_cluster,
        namespace,
        [qj("kept", s3_world, s3_secret, execution={"backoffLimit": 2, "ttlSecondsAfterFinished": 0})],
    )
    wait_for(lambda: batch_jobs(k8s_cluster, namespace, "kept"), timeout=120, what="the batch Job")
    first.kill()
    k8s_cluster.kubectl(
        "wait", "--for=condition=Complete", "job/kept-g1", "-n", namespace, "--timeout=240s", timeout=270
    )
    (job,) = batch_jobs(k8s_cluster, namespace, "kept")  # still there: no TTL until the result is recorded
    assert "ttlSecondsAfterFinished" not in job["spec"]
    assert (get_qj(k8s_cluster, namespace, "kept").get("status") or {}).get("phase") != "Succeeded"

    second = start_operator()
    recorded = wait_condition(k8s_cluster, namespace, "kept", "Succeeded")["status"]
    assert recorded["jobName"] == "kept-g1" and recorded["results"]["artifact"]["sha256"]
    wait_for(
        lambda: not batch_jobs(k8s_cluster, namespace, "kept"), timeout=120, what="the TTL to remove the finished Job"
    )

    def serves_another_job(op: Operator, name: str) -> None:
        """Once a job created later has finished, the operator has handled everything about "kept" before it."""
        create(k8s_cluster, namespace, [missing_model(qj(name, s3_world, s3_secret))])
        assert wait_condition(k8s_cluster, namespace, name, "Failed")["status"]["reason"] == "InvalidInput"
        assert op.metrics()["edgequant_batch_jobs_created_total"] == 1.0  # that job's, none for "kept"

    serves_another_job(second, "after-ttl")
    second.stop()
    third = start_operator()
    serves_another_job(third, "after-restart")
    assert batch_jobs(k8s_cluster, namespace, "kept") == []
    final = get_qj(k8s_cluster, namespace, "kept")["status"]
    assert (
        final["phase"] == "Succeeded"
        and final["results"] == recorded["results"]
        and final["completionTime"] == recorded["completionTime"]
    )


def test_two_hundred_jobs_at_once_all_reach_a_terminal_state(
    k8s_cluster: Any, namespace: str, operator: Operator, s3_world: dict[str, Any], s3_secret: str
) -> None:
    """10 of them really quantize (tflite-dynamic-range on the tiny model, no evaluation); 190 stop at their
    first S3 read (a missing model: InvalidInput). 200 TensorFlow processes at once would not fit this machine."""
    manifests = []
    for i in range(200):
        m = qj(f"many-{i:03d}", s3_world, s3_secret)
        m["spec"].pop("evaluation")
        # A small scratch volume: the default (20Gi, requested as ephemeral-storage) fits 5 pods on the node.
        m["spec"].setdefault("resources", {})["scratchSize"] = "256Mi"
        manifests.append(m if i % 20 == 0 else missing_model(m))
    create(k8s_cluster, namespace, manifests)

    def all_terminal() -> list[dict[str, Any]] | None:
        items = get_json(k8s_cluster, "qj", "-n", namespace)["items"]
        done = [i for i in items if (i.get("status") or {}).get("phase") in TERMINAL]
        return items if len(items) == 200 and len(done) == 200 else None

    items = wait_for(all_terminal, timeout=600, interval=3, what="200 QuantizationJobs to finish")
    by_name = {i["metadata"]["name"]: i["status"] for i in items}
    succeeded = sorted(n for n, s in by_name.items() if s["phase"] == "Succeeded")
    assert succeeded == [f"many-{i:03d}" for i in range(0, 200, 20)]
    assert all(s["reason"] == "InvalidInput" for n, s in by_name.items() if n not in succeeded)
    assert all(s["attempts"] == 1 and s["jobName"] == f"{n}-g1" for n, s in by_name.items())
    for name in succeeded:
        artifact = by_name[name]["results"]["artifact"]
        head = s3_world["client"].head_object(Bucket=s3_world["bucket"], Key=artifact["uri"].split("/", 3)[3])
        assert head["ContentLength"] == artifact["sizeBytes"]
    jobs = batch_jobs(k8s_cluster, namespace)
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted(f"{n}-g1" for n in by_name)
    assert operator.metrics()["edgequant_batch_jobs_created_total"] == 200.0


def test_two_replicas_elect_one_leader_and_hand_over(
    k8s_cluster: Any, namespace: str, start_operator: Callable[..., Operator], s3_world: dict[str, Any], s3_secret: str
) -> None:
    """kopf peering: the replica with the highest priority works, the other stands by until it is gone."""
    k8s_cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(ROOT / "charts" / "edgequant" / "crds" / "kopf.dev_peerings.yaml"),
    )
    k8s_cluster.kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=60s")
    peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "eq-peers"}}
    create(k8s_cluster, namespace, [peering])
    leader = start_operator("--peering", "eq-peers", env={"EDGEQUANT_OPERATOR_PEERING_PRIORITY": "200"})
    standby = start_operator("--peering", "eq-peers", env={"EDGEQUANT_OPERATOR_PEERING_PRIORITY": "100"})

    def peers() -> list[int]:
        status = get_json(k8s_cluster, "kopfpeering", "eq-peers", "-n", namespace).get("status") or {}
        return sorted(int(p.get("priority", 0)) for p in status.values())

    wait_for(lambda: peers() == [100, 200], timeout=60, what="both replicas in the peering object")
    create(k8s_cluster, namespace, [missing_model(qj("first", s3_world, s3_secret))])
    assert wait_condition(k8s_cluster, namespace, "first", "Failed")["status"]["reason"] == "InvalidInput"
    assert leader.metrics()["edgequant_batch_jobs_created_total"] == 1.0
    assert standby.metrics()["edgequant_batch_jobs_created_total"] == 0.0

    leader.stop()  # a graceful exit leaves the peering object at once
    wait_for(lambda: peers() == [100], timeout=60, what="the leader to leave the peering")
    create(k8s_cluster, namespace, [missing_model(qj("second", s3_world, s3_secret))])
    assert wait_condition(k8s_cluster, namespace, "second", "Failed")["status"]["reason"] == "InvalidInput"
    assert standby.metrics()["edgequant_batch_jobs_created_total"] == 1.0
    assert len(batch_jobs(k8s_cluster, namespace)) == 2
