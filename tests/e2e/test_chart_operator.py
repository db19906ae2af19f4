"""The chart's own operator Deployment through the happy path, authenticated only by a TokenRequest token of the
chart's ServiceAccount: helm install -> rollout -> /healthz and /metrics answer -> a QuantizationJob whose model and
data sit in the moto S3 server -> Succeeded, artifact in S3 matching its sha256. The docs/helm.md steps, for real.

The process node runs the Deployment's pod as a local process (image edgequant/operator -> `edgequant operator`),
with the chart's env. A pod there has no /var/run/secrets, so the test hands it a kubeconfig that carries nothing
but the ServiceAccount's token (operator.extraEnv KUBECONFIG): every request the operator makes is authorised by
the chart's RBAC and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
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
from kubernetes import client

from tests.harness.cluster import Cluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "edgequant"


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except OSError as exc:  # an endpoint that is not listening yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def helm(cluster: Cluster, *args: str) -> str:
    done = subprocess.run(
        [str(cluster.helm), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=cluster.env(),
    )
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def token_kubeconfig(cluster: Cluster, path: Path, token: str) -> Path:
    """A kubeconfig with the API server, its CA and a bearer token: no client certificate, no other identity."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": cluster.server,
                            "certificate-authority-data": base64.b64encode(cluster.pki.ca_crt.read_bytes()).decode(),
                        },
                    }
                ],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "operator"}}],
                "current-context": "c",
            }
        )
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def release(k8s_cluster: Cluster, namespace: str) -> Iterator[str]:
    name = f"eq-{uuid.uuid4().hex[:6]}"
    yield name
    # --wait: the operator pod is gone before the next test applies QuantizationJobs.
    subprocess.run(
        [
            str(k8s_cluster.helm),
            "--kubeconfig",
            str(k8s_cluster.kubeconfig),
            "uninstall",
            name,
            "-n",
            namespace,
            "--wait",
            "--ignore-not-found",
        ],
        capture_output=True,
        timeout=120,
        env=k8s_cluster.env(),
    )


@pytest.fixture
def kubeconfig_path() -> Iterator[Path]:
    """Outside /tmp: the process node maps container paths in env values, and the chart mounts an emptyDir at /tmp."""
    bases = [REPO / ".cache", Path.home() / ".cache", Path("/var/tmp")]
    base = next(b for b in bases if not str(b.resolve()).startswith("/tmp/"))  # a checkout may itself live under /tmp
    path = base / "edgequant-chart-e2e" / f"{uuid.uuid4().hex}.kubeconfig"
    path.parent.mkdir(parents=True, exist_ok=True)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture
def model_and_data(s3_server: Any, s3_client: Any, fashion_mnist: Any, tmp_path: Path) -> dict[str, str]:
    """A small Keras CNN and 200 real Fashion-MNIST test images in a fresh bucket."""
    bucket = f"chart-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=bucket)
    model = tmp_path / "cnn.keras"
    code = (
        "import sys, keras\n"
        "keras.utils.set_random_seed(0)\n"
        "keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation='relu'), keras.layers.MaxPooling2D(2),"
        " keras.layers.Flatten(), keras.layers.Dense(64, activation='relu'), keras.layers.Dense(10)]).save(sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(model)], check=True, capture_output=True, timeout=300)
    s3_client.upload_file(str(model), bucket, "models/cnn.keras")
    evaluation = tmp_path / "eval.npz"
    np.savez(evaluation, x=fashion_mnist.test_x[:200], y=fashion_mnist.test_y[:200])
    s3_client.upload_file(str(evaluation), bucket, "data/eval.npz")
    return {"bucket": bucket, "endpoint": s3_server.endpoint}


def test_chart_operator_runs_the_happy_path_as_its_service_account(
    k8s_cluster: Cluster,
    namespace: str,
    release: str,
    model_and_data: dict[str, str],
    s3_client: Any,
    kubeconfig_path: Path,
) -> None:
    liveness, metrics = free_port(), free_port()
    sa = f"{release}-edgequant"
    common = [
        "--namespace",
        namespace,
        "--set",
        f"operator.watchNamespaces={{{namespace}}}",
        "--set",
        "operator.logFormat=plain",
        "--set",
        f"liveness.port={liveness}",
        "--set",
        f"metrics.port={metrics}",
        "--set",
        f"policy.allowedS3Endpoints={{{model_and_data['endpoint']}}}",
    ]
    # 1. Install (the ServiceAccount must exist before a token can be requested for it), 2. token, 3. scale up.
    helm(k8s_cluster, "install", release, str(CHART), *common, "--set", "replicaCount=0")
    core = client.CoreV1Api(k8s_cluster.api_client())
    token = core.create_namespaced_service_account_token(
        sa, namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    kubeconfig = token_kubeconfig(k8s_cluster, kubeconfig_path, token)
    helm(
        k8s_cluster,
        "upgrade",
        release,
        str(CHART),
        *common,
        "--set",
        "replicaCount=1",
        "--set",
        "operator.extraEnv[0].name=KUBECONFIG",
        "--set",
        f"operator.extraEnv[0].value={kubeconfig}",
        "--wait",
        "--timeout=120s",
    )
    k8s_cluster.kubectl("rollout", "status", f"deployment/{release}-edgequant", "-n", namespace, "--timeout=120s")

    # The endpoints the chart's probe and metrics Service point at answer.
    assert wait_for("/healthz", lambda: http_get(f"http://127.0.0.1:{liveness}/healthz")[0] == 200, timeout=90)
    assert "edgequant_batch_jobs_created_total" in http_get(f"http://127.0.0.1:{metrics}/metrics")[1]

    # A first QuantizationJob, as in docs/helm.md: credentials in a Secret, apply, wait for Succeeded.
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
    bucket = model_and_data["bucket"]
    job = {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationJob",
        "metadata": {"name": "first"},
        "spec": {
            "method": "tflite-dynamic-range",
            "model": {"uri": f"s3://{bucket}/models/cnn.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
            "evaluation": {"dataset": {"uri": f"s3://{bucket}/data/eval.npz", "layout": "npz"}, "samples": 100},
            "mixedPrecision": {"sensitivity": "off"},
            "acceptance": {"maxAccuracyDrop": 1.0},
            "output": {"uri": f"s3://{bucket}/out/first/"},
            "storage": {
                "endpoint": model_and_data["endpoint"],
                "pathStyle": True,
                "region": "us-east-1",
                "credentialsSecret": {"name": "s3-credentials"},
            },
        },
    }
    k8s_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(job))
    waited = k8s_cluster.kubectl(
        "wait", "--for=condition=Succeeded", "qj/first", "-n", namespace, "--timeout=240s", check=False, timeout=270
    )
    status = json.loads(k8s_cluster.kubectl("get", "qj", "first", "-n", namespace, "-o", "json").stdout).get(
        "status", {}
    )
    assert waited.returncode == 0, (
        f"not Succeeded: {json.dumps(status)[:2000]}\n{operator_output(k8s_cluster, namespace, release)}"
    )

    # Where results appear: status.results and the artifact in object storage.
    results = status["results"]
    key = results["artifact"]["uri"].removeprefix(f"s3://{bucket}/")
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == results["artifact"]["sha256"]
    assert results["reportUri"].startswith(f"s3://{bucket}/out/first/")
    s3_client.head_object(Bucket=bucket, Key=results["reportUri"].removeprefix(f"s3://{bucket}/"))
    table = k8s_cluster.kubectl("get", "qj", "-n", namespace).stdout
    assert "Succeeded" in table and "tflite-dynamic-range" in table

    # The operator did all that with the chart's grant only and never asked for more: no request was forbidden.
    # (kopf lists namespaces and CRDs to discover them unless its settings.scanning.disabled is true; the grant
    # leaves both out on purpose, so an operator that still scans shows up here.)
    forbidden = [
        line[:300] for line in operator_output(k8s_cluster, namespace, release).splitlines() if "Forbidden" in line
    ]
    assert not forbidden, "requests beyond the chart's grant:\n" + "\n".join(forbidden[:6])


def operator_output(cluster: Cluster, namespace: str, release: str) -> str:
    logs = sorted(cluster.pods_dir.glob(f"{namespace}_{release}-edgequant-*/containers/operator/*.log"))
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in logs)
