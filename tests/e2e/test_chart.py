"""The Helm chart on the real control plane: server-side apply of its renders, helm install and upgrade, and
least-privilege RBAC checked by the real authorizer (kubectl auth can-i, and calls made with a TokenRequest
token of the chart's ServiceAccount)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from edgequant.api import sweep as sweep_api
from edgequant.api import v1alpha1 as api
from tests.harness.cluster import Cluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "edgequant"
CRD_NAME = f"{api.PLURAL}.{api.GROUP}"
SWEEP_CRD_NAME = f"{sweep_api.PLURAL}.{api.GROUP}"


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    """Pods on the process node share this machine's network: give each operator its own ports."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ports() -> list[str]:
    return ["--set", f"liveness.port={free_port()}", "--set", f"metrics.port={free_port()}"]


def helm(cluster: Cluster, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(cluster.helm), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cluster.env(),
    )
    if check:
        assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def render(cluster: Cluster, release: str, namespace: str, *args: str) -> list[dict[str, Any]]:
    out = helm(cluster, "template", release, str(CHART), "--namespace", namespace, "--include-crds", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def can_i(cluster: Cluster, sa: str, verb: str, resource: str, namespace: str | None) -> bool:
    """kubectl auth can-i; "pods/log" means the subresource (kubectl alone would read it as TYPE/NAME)."""
    kind, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, kind, "--as", sa, *([f"--subresource={subresource}"] if subresource else [])]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    done = cluster.kubectl(*args, check=False)
    assert done.stdout.strip() in ("yes", "no"), done.stderr
    return done.stdout.strip() == "yes"


@pytest.fixture
def extra_namespaces(k8s_cluster: Cluster, namespace: str) -> Iterator[list[str]]:
    """Two more namespaces for the operator to serve, deleted after the test."""
    core = client.CoreV1Api(k8s_cluster.api_client())
    names = [f"{namespace[:55]}-a", f"{namespace[:55]}-b"]
    for name in names:
        core.create_namespace({"metadata": {"name": name, "labels": {"edgequant.io/test": "true"}}})
    yield names
    for name in names:
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def release(k8s_cluster: Cluster, namespace: str) -> Iterator[str]:
    """A unique release name; whatever was installed under it is uninstalled, waiting for its pods to stop."""
    name = f"eq-{uuid.uuid4().hex[:6]}"
    yield name
    helm(k8s_cluster, "uninstall", name, "--namespace", namespace, "--wait", "--ignore-not-found", check=False)


def test_rendered_manifests_apply_server_side(
    k8s_cluster: Cluster, namespace: str, extra_namespaces: list[str]
) -> None:
    """Default and non-default renders pass the API server's validation (dry-run), then apply for real."""
    renders = {
        "default": ["--set", "replicaCount=0"],
        "namespaced, peered, with a metrics Service": [
            "--set",
            f"operator.watchNamespaces={{{','.join(extra_namespaces)}}}",
            "--set",
            "replicaCount=0",
            "--set",
            "peering.enabled=true",
            "--set",
            "metrics.service.enabled=true",
            "--set",
            "image.tag=9.9.9",
            "--set",
            "quantizerImages.torch.repository=registry.example/torch",
        ],
    }
    applied: list[dict[str, Any]] = []
    try:
        for label, args in renders.items():
            release = f"eq-{uuid.uuid4().hex[:6]}"
            docs = render(k8s_cluster, release, namespace, *args)
            crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
            objects = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
            # CRDs first (helm does the same with crds/), then everything else.
            for batch in (crds, objects):
                stream = "\n---\n".join(json.dumps(d) for d in batch)
                dry = k8s_cluster.kubectl(
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager=edgequant-chart-test",
                    "--dry-run=server",
                    "-f",
                    "-",
                    input=stream,
                    check=False,
                )
                assert dry.returncode == 0, f"{label}: server-side dry run refused:\n{dry.stderr}"
                if batch is objects:
                    for d in batch:
                        if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
                            gone = k8s_cluster.kubectl("get", d["kind"], d["metadata"]["name"], check=False)
                            assert gone.returncode != 0, f"{label}: dry run created {d['kind']}/{d['metadata']['name']}"
                real = k8s_cluster.kubectl(
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager=edgequant-chart-test",
                    "-f",
                    "-",
                    input=stream,
                    check=False,
                )
                assert real.returncode == 0, f"{label}: server-side apply refused:\n{real.stderr}"
                if batch is crds:
                    for d in crds:
                        k8s_cluster.kubectl(
                            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{d['metadata']['name']}"
                        )
            applied += objects
            for d in objects:
                ns = d["metadata"].get("namespace")
                got = k8s_cluster.kubectl(
                    "get", d["kind"], d["metadata"]["name"], *(["-n", ns] if ns else []), "-o", "json"
                )
                assert json.loads(got.stdout)["metadata"]["labels"]["app.kubernetes.io/instance"] == release
    finally:
        for d in applied:  # cluster-scoped objects outlive the namespaces
            if "namespace" not in d["metadata"]:
                k8s_cluster.kubectl("delete", d["kind"], d["metadata"]["name"], "--ignore-not-found", check=False)


def test_helm_install_then_upgrade(
    k8s_cluster: Cluster, namespace: str, extra_namespaces: list[str], release: str
) -> None:
    """Install limited to one namespace, then upgrade to two namespaces, two peered replicas and new images."""
    first, second = extra_namespaces
    installed = helm(
        k8s_cluster,
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        f"operator.watchNamespaces={{{first}}}",
        "--set",
        "replicaCount=0",
        *ports(),
    )
    assert f"these namespaces: {first}" in installed.stdout  # NOTES.txt
    rbac = client.RbacAuthorizationV1Api(k8s_cluster.api_client())
    apps = client.AppsV1Api(k8s_cluster.api_client())
    assert [r.metadata.name for r in rbac.list_namespaced_role(first).items] == [release + "-edgequant"]
    assert rbac.list_namespaced_role(second).items == []
    assert not [c for c in rbac.list_cluster_role().items if c.metadata.name.startswith(release)]
    k8s_cluster.kubectl("get", f"crd/{CRD_NAME}", "crd/kopfpeerings.kopf.dev", "crd/clusterkopfpeerings.kopf.dev")

    upgraded = helm(
        k8s_cluster,
        "upgrade",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--reuse-values",
        "--set",
        f"operator.watchNamespaces={{{first},{second}}}",
        "--set",
        "replicaCount=0",
        "--set",
        "peering.enabled=true",
        "--set",
        "quantizerImages.tflite.tag=2.0.0",
    )
    assert "STATUS: deployed" in upgraded.stdout and "REVISION: 2" in upgraded.stdout
    for ns in (first, second):
        assert [r.metadata.name for r in rbac.list_namespaced_role(ns).items] == [release + "-edgequant"]
        peering = k8s_cluster.kubectl("get", "kopfpeerings.kopf.dev", release + "-edgequant", "-n", ns, check=False)
        assert peering.returncode == 0, peering.stderr
    deployment = apps.read_namespaced_deployment(release + "-edgequant", namespace)
    env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
    assert json.loads(env["EDGEQUANT_OPERATOR_IMAGES"])["tflite"] == "edgequant/quantizer-tflite:2.0.0"
    assert env["EDGEQUANT_OPERATOR_NAMESPACES"] == f"{first},{second}"
    history = json.loads(helm(k8s_cluster, "history", release, "--namespace", namespace, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2] and history[-1]["status"] == "deployed"

    helm(k8s_cluster, "uninstall", release, "--namespace", namespace, "--wait")
    for ns in (first, second):
        assert rbac.list_namespaced_role(ns).items == []
    # Helm never deletes CRDs: QuantizationJobs survive an uninstall.
    k8s_cluster.kubectl("get", f"crd/{CRD_NAME}")


def test_service_account_gets_exactly_its_grant(
    k8s_cluster: Cluster, namespace: str, extra_namespaces: list[str], release: str
) -> None:
    """What the real RBAC authorizer says the chart's ServiceAccount may do, namespaced and cluster-wide."""
    served, unserved = extra_namespaces
    helm(
        k8s_cluster,
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        f"operator.watchNamespaces={{{served}}}",
        "--set",
        "replicaCount=0",
        "--set",
        "peering.enabled=true",
        *ports(),
    )
    sa = f"system:serviceaccount:{namespace}:{release}-edgequant"
    wait_for("the RoleBinding to take effect", lambda: can_i(k8s_cluster, sa, "watch", CRD_NAME, served), timeout=30)

    granted = [
        ("get", CRD_NAME),
        ("list", CRD_NAME),
        ("watch", CRD_NAME),
        ("patch", CRD_NAME),
        ("patch", f"{CRD_NAME}/status"),
        ("create", CRD_NAME),  # a QuantizationSweep's cells
        ("update", f"{CRD_NAME}/finalizers"),  # blockOwnerDeletion on its Jobs (OwnerReferencesPermissionEnforcement)
        ("get", SWEEP_CRD_NAME),
        ("list", SWEEP_CRD_NAME),
        ("watch", SWEEP_CRD_NAME),
        ("patch", f"{SWEEP_CRD_NAME}/status"),
        ("create", "jobs.batch"),
        ("delete", "jobs.batch"),
        ("patch", "jobs.batch"),
        ("list", "jobs.batch"),
        ("watch", "jobs.batch"),
        ("get", "pods"),
        ("list", "pods"),
        ("watch", "pods"),
        ("create", "events"),
        ("patch", "kopfpeerings.kopf.dev"),
        ("watch", "kopfpeerings.kopf.dev"),
    ]
    denied = [
        ("get", "secrets"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("create", "secrets"),
        ("create", "pods"),
        ("delete", "pods"),
        ("patch", "pods"),
        ("create", "pods/exec"),
        ("get", "pods/log"),
        ("delete", CRD_NAME),
        ("update", CRD_NAME),
        ("update", f"{CRD_NAME}/status"),
        ("create", SWEEP_CRD_NAME),
        ("delete", SWEEP_CRD_NAME),
        ("create", "pods/eviction"),
        ("patch", "jobs.batch/status"),
        ("get", "configmaps"),
        ("create", "serviceaccounts/token"),
        ("create", "deployments.apps"),
        ("create", "roles.rbac.authorization.k8s.io"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
        ("escalate", "roles.rbac.authorization.k8s.io"),
        ("impersonate", "serviceaccounts"),
        ("*", "*"),
    ]
    for verb, resource in granted:
        assert can_i(k8s_cluster, sa, verb, resource, served), (
            f"{sa} should be allowed to {verb} {resource} in {served}"
        )
    for verb, resource in denied:
        assert not can_i(k8s_cluster, sa, verb, resource, served), f"{sa} must not {verb} {resource} in {served}"
    for verb, resource in granted:  # nothing outside the served namespace, nothing cluster-wide
        assert not can_i(k8s_cluster, sa, verb, resource, unserved), (
            f"{sa} may {verb} {resource} in unserved {unserved}"
        )
        assert not can_i(k8s_cluster, sa, verb, resource, None), f"{sa} may {verb} {resource} cluster-wide"
    for verb, resource in [
        ("get", "nodes"),
        ("list", "namespaces"),
        ("get", "clusterkopfpeerings.kopf.dev"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ]:
        assert not can_i(k8s_cluster, sa, verb, resource, None), f"{sa} may {verb} {resource}"

    # The same through the API, authenticated with a token from the TokenRequest API.
    core = client.CoreV1Api(k8s_cluster.api_client())
    core.create_namespaced_secret(
        served, {"metadata": {"name": "s3-credentials"}, "stringData": {"AWS_SECRET_ACCESS_KEY": "x"}}
    )
    token = core.create_namespaced_service_account_token(
        f"{release}-edgequant", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    as_operator = client.CoreV1Api(k8s_cluster.api_client(token=token))
    assert as_operator.list_namespaced_pod(served).items == []
    for call in (
        lambda: as_operator.read_namespaced_secret("s3-credentials", served),
        lambda: as_operator.list_namespaced_secret(served),
        lambda: as_operator.list_secret_for_all_namespaces(),
        lambda: as_operator.list_namespaced_pod(unserved),
    ):
        with pytest.raises(ApiException) as denied_call:
            call()
        assert denied_call.value.status == 403


def test_cluster_wide_install_grants_no_secrets_anywhere(k8s_cluster: Cluster, namespace: str, release: str) -> None:
    installed = helm(
        k8s_cluster, "install", release, str(CHART), "--namespace", namespace, "--set", "replicaCount=0", *ports()
    )
    assert "serves QuantizationJobs in every namespace" in installed.stdout  # NOTES.txt
    sa = f"system:serviceaccount:{namespace}:{release}-edgequant"
    wait_for(
        "the ClusterRoleBinding to take effect", lambda: can_i(k8s_cluster, sa, "watch", CRD_NAME, None), timeout=30
    )
    for verb, resource in [
        ("list", CRD_NAME),
        ("patch", f"{CRD_NAME}/status"),
        ("create", "jobs.batch"),
        ("watch", "pods"),
    ]:
        assert can_i(k8s_cluster, sa, verb, resource, None)
    for verb, resource in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("create", "pods"),
        ("delete", CRD_NAME),
        ("patch", "clusterkopfpeerings.kopf.dev"),
        ("list", "nodes"),
    ]:
        assert not can_i(k8s_cluster, sa, verb, resource, None), f"{sa} may {verb} {resource}"
        assert not can_i(k8s_cluster, sa, verb, resource, "kube-system"), f"{sa} may {verb} {resource} in kube-system"
