"""edgequant on a real node: the chart's operator image runs as a pod under the chart's ServiceAccount, and
QuantizationJobs run in their quantizer images with the security context render.py asks for, enforced by a real
kubelet and runc, in a namespace that enforces Pod Security `restricted`. Results reach status through the
kubelet's reading of the termination message; artifacts are checked byte for byte against the moto S3 server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.harness import realnode
from tests.harness.cluster import Cluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "edgequant"
RELEASE = "edgequant"
OPERATOR_NAMESPACE = "edgequant-system"
#: The chart's ServiceAccount for release RELEASE (its fullname).
OPERATOR_SA = "edgequant"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
RUN_AS_USER = 65532


def get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def wait_for(what: str, fn: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def restricted_namespace(cluster: Cluster, name: str) -> str:
    labels = {**RESTRICTED, "kubernetes.io/metadata.name": name}
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
    )
    return name


def container_spec(container_id: str) -> dict[str, Any]:
    """The OCI runtime spec containerd handed runc for a container (``containerd://ID``)."""
    cid = container_id.removeprefix("containerd://")
    out = subprocess.run(
        ["ctr", "--address", str(realnode.CONTAINERD_SOCKET), "-n", "k8s.io", "containers", "info", cid],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return json.loads(out)["Spec"]


#: Where a container may write besides its volumes: what the runtime itself mounts read-write (tmpfs for /dev and
#: /dev/shm, the pod's /etc/hosts, /etc/hostname, /etc/resolv.conf) and the kubelet's termination-log file.
RUNTIME_WRITABLE = {"/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}


def writable_mounts(spec: dict[str, Any]) -> set[str]:
    """Mount points of the OCI spec a process may write to (the root filesystem is checked separately)."""
    return {
        m["destination"]
        for m in spec.get("mounts", [])
        if "ro" not in m.get("options", []) and m.get("type") not in ("proc", "sysfs", "cgroup")
    }


def assert_locked_down(spec: dict[str, Any], volumes: Collection[str] = ()) -> None:
    """Read-only root, non-root UID, no capabilities, no privilege escalation, a seccomp filter; writable mounts
    only the pod's volumes (``volumes``), the termination log and what the runtime adds (RUNTIME_WRITABLE)."""
    assert spec["root"]["readonly"] is True
    extra = writable_mounts(spec) - set(volumes) - RUNTIME_WRITABLE - {"/dev/termination-log"}
    assert not extra, f"writable outside {sorted(volumes)}: {sorted(extra)}"
    assert spec["process"]["user"]["uid"] == RUN_AS_USER
    assert spec["process"].get("noNewPrivileges") is True
    assert not any(spec["process"].get("capabilities", {}).get(kind) for kind in ("bounding", "effective", "permitted"))
    assert spec["linux"].get("seccomp", {}).get("defaultAction") in ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS")


@pytest.fixture(scope="session")
def operator_release(real_cluster: Cluster, node_s3: str) -> Iterator[dict[str, Any]]:
    """`helm install` of the chart, the operator in its image as a pod (namespace enforces `restricted` too); the
    admin's policy allows the test's S3 endpoint."""
    restricted_namespace(real_cluster, OPERATOR_NAMESPACE)
    cmd = [
        str(real_cluster.helm),
        "--kubeconfig",
        str(real_cluster.kubeconfig),
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--set",
        "operator.logFormat=plain",
        "--set",
        "operator.resyncSeconds=20",
        "--set-json",
        f"policy.allowedS3Endpoints={json.dumps([node_s3])}",
        "--wait",
        "--timeout",
        "300s",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=330, env=real_cluster.env())
    pods = get_json(real_cluster, "pods", "-n", OPERATOR_NAMESPACE)["items"]
    assert done.returncode == 0, f"helm install: {done.stdout}\n{done.stderr}\npods: {json.dumps(pods)[:3000]}"
    yield pods[0]


@pytest.fixture
def jobs_namespace(real_cluster: Cluster, operator_release: dict[str, Any], node_s3: str) -> str:
    """A namespace enforcing Pod Security `restricted`, with the moto server's (dummy) keys in a Secret."""
    name = restricted_namespace(real_cluster, f"rn-{uuid.uuid4().hex[:8]}")
    real_cluster.kubectl(
        "create",
        "secret",
        "generic",
        "s3-credentials",
        "-n",
        name,
        f"--from-literal=AWS_ACCESS_KEY_ID={os.environ['AWS_ACCESS_KEY_ID']}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={os.environ['AWS_SECRET_ACCESS_KEY']}",
    )
    return name


@pytest.fixture(scope="session")
def s3(node_s3: str) -> Any:
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=node_s3, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any, fashion_mnist: Any, tmp_path: Path) -> str:
    """A bucket with 200 real Fashion-MNIST test images (evaluation) and 200 training images (calibration)."""
    name = f"rn-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    np.savez(tmp_path / "eval.npz", x=fashion_mnist.test_x[:200], y=fashion_mnist.test_y[:200])
    np.savez(tmp_path / "calib.npz", x=fashion_mnist.train_x[:200], y=fashion_mnist.train_y[:200])
    s3.upload_file(str(tmp_path / "eval.npz"), name, "data/eval.npz")
    s3.upload_file(str(tmp_path / "calib.npz"), name, "data/calib.npz")
    return name


def keras_cnn(path: Path) -> Path:
    """A small Keras CNN for 28x28 grayscale, made in a subprocess (TensorFlow stays out of this one)."""
    code = (
        "import sys, keras\nkeras.utils.set_random_seed(0)\n"
        "keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation='relu'), keras.layers.MaxPooling2D(2),"
        " keras.layers.Flatten(), keras.layers.Dense(32, activation='relu'), keras.layers.Dense(10)]).save(sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, timeout=300)
    return path


def onnx_mlp(path: Path) -> Path:
    from tests.integration.onnx.models import dense_heavy_onnx

    return dense_heavy_onnx(path)[0]


def quantization_job(
    name: str, bucket: str, endpoint: str, method: str, model_key: str, model_input: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "method": method,
        "model": {"uri": f"s3://{bucket}/{model_key}", "input": model_input},
        "calibration": {"dataset": {"uri": f"s3://{bucket}/data/calib.npz", "layout": "npz"}, "samples": 100},
        "evaluation": {"dataset": {"uri": f"s3://{bucket}/data/eval.npz", "layout": "npz"}, "samples": 100},
        "mixedPrecision": {"sensitivity": "off"},
        "acceptance": {"maxAccuracyDrop": 1.0},
        "output": {"uri": f"s3://{bucket}/out/{name}/"},
        "storage": {
            "endpoint": endpoint,
            "pathStyle": True,
            "region": "us-east-1",
            "credentialsSecret": {"name": "s3-credentials"},
        },
        "execution": {"backoffLimit": 1},
        **extra,
    }
    return {"apiVersion": "edgequant.io/v1alpha1", "kind": "QuantizationJob", "metadata": {"name": name}, "spec": spec}


def run_to_end(cluster: Cluster, namespace: str, manifest: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    """Apply a QuantizationJob and wait for Succeeded or Failed; returns the QuantizationJob."""
    applied = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert applied.returncode == 0, f"kubectl apply: {applied.stdout}{applied.stderr}"
    name = manifest["metadata"]["name"]

    def finished() -> dict[str, Any] | None:
        qj = get_json(cluster, "qj", name, "-n", namespace)
        return qj if qj.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    return wait_for(f"QuantizationJob {namespace}/{name} to finish", finished, timeout=timeout, interval=3)


def worker_pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return get_json(cluster, "pods", "-n", namespace, "-l", "app.kubernetes.io/name=edgequant-quantizer")["items"]


def describe(cluster: Cluster, namespace: str) -> str:
    out = cluster.kubectl("get", "qj,jobs,pods,events", "-n", namespace, "-o", "wide", check=False)
    logs = cluster.kubectl(
        "logs", "-n", namespace, "-l", "app.kubernetes.io/name=edgequant-quantizer", "--tail=40", check=False
    )
    return f"{out.stdout}{out.stderr}\n--- worker logs\n{logs.stdout}{logs.stderr}"


def assert_succeeded_in_image(
    cluster: Cluster, namespace: str, qj: dict[str, Any], s3: Any, bucket: str, image: str
) -> None:
    status = qj["status"]
    assert status["phase"] == "Succeeded", f"{json.dumps(status)[:3000]}\n{describe(cluster, namespace)}"
    artifact = status["results"]["artifact"]
    body = s3.get_object(Bucket=bucket, Key=artifact["uri"].removeprefix(f"s3://{bucket}/"))["Body"].read()
    assert hashlib.sha256(body).hexdigest() == artifact["sha256"]

    (pod,) = worker_pods(cluster, namespace)
    assert pod["spec"]["nodeName"] == realnode.NODE_NAME
    (cs,) = pod["status"]["containerStatuses"]
    assert cs["image"].endswith(image)
    terminated = cs["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    # The results in status came from here: the file the kubelet read from /dev/termination-log.
    assert artifact["sha256"] in terminated["message"]
    # The worker ran to the end under a read-only root with /scratch its only writable volume (not even /tmp): it
    # wrote nowhere else.
    assert_locked_down(container_spec(cs["containerID"]), volumes={"/scratch"})


# --------------------------------------------------------------------------- tests


def test_the_node_is_a_kubelet_on_containerd(real_cluster: Cluster) -> None:
    node = get_json(real_cluster, "node", realnode.NODE_NAME)
    info = node["status"]["nodeInfo"]
    print(f"kubelet {info['kubeletVersion']}, runtime {info['containerRuntimeVersion']}")
    assert info["kubeletVersion"] == real_cluster.server_version
    assert info["containerRuntimeVersion"].startswith("containerd://")
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"


def test_the_operator_runs_as_a_pod_in_its_image_under_the_charts_service_account(
    real_cluster: Cluster, operator_release: dict[str, Any]
) -> None:
    pod = get_json(real_cluster, "pod", operator_release["metadata"]["name"], "-n", OPERATOR_NAMESPACE)
    assert pod["spec"]["serviceAccountName"] == OPERATOR_SA
    assert pod["spec"]["nodeName"] == realnode.NODE_NAME
    (cs,) = pod["status"]["containerStatuses"]
    assert cs["ready"] is True and cs["image"].endswith("edgequant/operator:0.1.0")
    assert_locked_down(container_spec(cs["containerID"]), volumes={"/tmp"})


def test_tflite_int8_runs_in_the_tflite_image_and_succeeds(
    real_cluster: Cluster, jobs_namespace: str, s3: Any, bucket: str, node_s3: str, tmp_path: Path
) -> None:
    s3.upload_file(str(keras_cnn(tmp_path / "cnn.keras")), bucket, "models/cnn.keras")
    manifest = quantization_job(
        "int8", bucket, node_s3, "tflite-int8", "models/cnn.keras", {"shape": [28, 28, 1], "colorOrder": "GRAY"}
    )
    qj = run_to_end(real_cluster, jobs_namespace, manifest)
    assert_succeeded_in_image(real_cluster, jobs_namespace, qj, s3, bucket, "edgequant/quantizer-tflite:0.1.0")


def test_onnx_static_runs_in_the_onnx_image_and_succeeds(
    real_cluster: Cluster, jobs_namespace: str, s3: Any, bucket: str, node_s3: str, tmp_path: Path
) -> None:
    s3.upload_file(str(onnx_mlp(tmp_path / "mlp.onnx")), bucket, "models/mlp.onnx")
    manifest = quantization_job(
        "static",
        bucket,
        node_s3,
        "onnx-static",
        "models/mlp.onnx",
        {"shape": [1, 28, 28], "layout": "NCHW", "colorOrder": "GRAY"},
    )
    qj = run_to_end(real_cluster, jobs_namespace, manifest)
    assert_succeeded_in_image(real_cluster, jobs_namespace, qj, s3, bucket, "edgequant/quantizer-onnx:0.1.0")


def test_a_memory_limit_too_small_is_oom_killed_with_the_fix_and_not_retried_forever(
    real_cluster: Cluster, jobs_namespace: str, s3: Any, bucket: str, node_s3: str, tmp_path: Path
) -> None:
    """TensorFlow alone needs several hundred MiB: under a 128Mi limit the kernel kills the worker (cgroup OOM)."""
    s3.upload_file(str(keras_cnn(tmp_path / "cnn.keras")), bucket, "models/cnn.keras")
    manifest = quantization_job(
        "oom",
        bucket,
        node_s3,
        "tflite-int8",
        "models/cnn.keras",
        {"shape": [28, 28, 1], "colorOrder": "GRAY"},
        resources={"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "128Mi"}},
    )
    qj = run_to_end(real_cluster, jobs_namespace, manifest, timeout=600)
    st = qj["status"]
    assert st["phase"] == "Failed", f"{json.dumps(st)[:2000]}\n{describe(real_cluster, jobs_namespace)}"
    assert st["reason"] == "OOMKilled" and "raise spec.resources.limits.memory" in st["message"]
    pods = worker_pods(real_cluster, jobs_namespace)
    # backoffLimit 1: two attempts, both killed by the kernel, then no more.
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    assert all(p["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled" for p in pods)


def test_a_dataset_larger_than_the_scratch_disk_fails_clearly_and_the_node_stays_healthy(
    real_cluster: Cluster, jobs_namespace: str, s3: Any, bucket: str, node_s3: str, fashion_mnist: Any, tmp_path: Path
) -> None:
    """spec.resources.scratchSize becomes the scratch emptyDir's sizeLimit: an evaluation set bigger than it is
    refused before its first byte lands on the node's disk, the job fails once with the fix, the node stays Ready
    without DiskPressure."""
    s3.upload_file(str(keras_cnn(tmp_path / "cnn.keras")), bucket, "models/cnn.keras")
    np.savez(tmp_path / "big.npz", x=fashion_mnist.test_x[:5000], y=fashion_mnist.test_y[:5000])
    big = (tmp_path / "big.npz").stat().st_size
    s3.upload_file(str(tmp_path / "big.npz"), bucket, "data/big.npz")
    manifest = quantization_job(
        "scratch",
        bucket,
        node_s3,
        "tflite-int8",
        "models/cnn.keras",
        {"shape": [28, 28, 1], "colorOrder": "GRAY"},
        resources={"scratchSize": "2Mi"},
    )
    manifest["spec"]["evaluation"]["dataset"]["uri"] = f"s3://{bucket}/data/big.npz"
    assert big > 2 * 2**20
    qj = run_to_end(real_cluster, jobs_namespace, manifest, timeout=600)
    st = qj["status"]
    assert st["phase"] == "Failed", f"{json.dumps(st)[:2000]}\n{describe(real_cluster, jobs_namespace)}"
    assert st["reason"] == "InvalidInput", json.dumps(st)[:2000]
    assert f"s3://{bucket}/data/big.npz" in st["message"] and "would overflow the scratch disk" in st["message"]
    assert "raise spec.resources.scratchSize" in st["message"]
    (pod,) = worker_pods(real_cluster, jobs_namespace)  # a bad input is not retried
    (scratch,) = [v for v in pod["spec"]["volumes"] if v["name"] == "scratch"]
    assert scratch["emptyDir"]["sizeLimit"] == "2Mi"
    node = get_json(real_cluster, "node", realnode.NODE_NAME)
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True" and conditions["DiskPressure"] == "False", conditions
