"""The fault suite on the real control plane (issue 13): each case drives a QuantizationJob into a fault and asserts
the final phase, the condition's reason, a message that names the fix, and that the operator keeps serving another
job meanwhile. docs/security.md maps each numbered item of the issue to its cases here.

The operator runs as a subprocess (tests/e2e/test_operator.py's `Operator`), workers as processes on the harness's
process node, S3 is moto's server; the admission policy and RBAC cases use the chart's renders.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.conftest import free_port
from tests.e2e.test_chart import CHART, helm, render
from tests.e2e.test_operator import (  # noqa: F401  (fixtures used by name)
    Operator,
    batch_jobs,
    crd_installed,
    create,
    events_for,
    get_qj,
    missing_model,
    pods_of,
    qj,
    s3_secret,
    s3_world,
    start_operator,
    tiny_keras_model,
    wait_for,
)

pytestmark = pytest.mark.e2e

TERMINAL = ("Succeeded", "Failed")
SECRET_MARK = "sk-0123456789abcdef-must-never-show"


def terminal(cluster: Any, namespace: str, name: str, timeout: float = 240) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = get_qj(cluster, namespace, name).get("status") or {}
        return status if status.get("phase") in TERMINAL else None

    return wait_for(done, timeout=timeout, what=f"{name} to finish")


def failed_condition(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Failed")


def served_meanwhile(
    cluster: Any, namespace: str, world: dict[str, Any], secret: str, name: str = "bystander"
) -> dict[str, Any]:
    """Another job created while the fault plays out: the operator runs it (its worker ends InvalidInput at once)."""
    create(cluster, namespace, [missing_model(qj(name, world, secret))])
    status = terminal(cluster, namespace, name)
    assert status["reason"] == "InvalidInput" and status["jobName"] == f"{name}-g1", status
    assert "outside" not in written(world)  # nothing written outside an output prefix
    return status


FIXTURE_OBJECTS = {"models/tiny.keras", "data/eval.npz", "data/small-calibration.npz", "data/bomb.npz"}
#: Model folders the traversal cases upload (their odd keys included): inputs, not writes.
FIXTURE_PREFIXES = ("saved-",)


def written(world: dict[str, Any]) -> dict[str, set[str]]:
    """Objects the jobs wrote, by output prefix (`out/<job>/`), and anything written elsewhere under "outside"."""
    listing = world["client"].list_objects_v2(Bucket=world["bucket"])
    found: dict[str, set[str]] = {}
    for key in (o["Key"] for o in listing.get("Contents", [])):
        if key in FIXTURE_OBJECTS or key.startswith(FIXTURE_PREFIXES):
            continue
        parts = key.split("/")
        where = parts[1] if len(parts) > 2 and parts[0] == "out" else "outside"
        found.setdefault(where, set()).add(key)
    return found


# --------------------------------------------------------------------------- items 1, 2: the operator's policy


POLICY_CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    # A job that would send a Secret's value (here another key of it) to an endpoint its author controls.
    "endpoint": (
        {
            "storage": {
                "endpoint": "http://127.0.0.1:{port}",
                "pathStyle": True,
                "region": "us-east-1",
                "credentialsSecret": {"name": "s3-credentials", "accessKeyIdKey": "AWS_SECRET_ACCESS_KEY"},
            }
        },
        "spec.storage.endpoint",
        "policy.allowedS3Endpoints",
    ),
    # Looks like AWS to a reader, is not AWS's host: refused like any unlisted endpoint.
    "aws-lookalike": (
        {
            "storage": {
                "endpoint": "https://s3.amazonaws.com.attacker.example",
                "credentialsSecret": {"name": "s3-credentials"},
            }
        },
        "spec.storage.endpoint",
        "policy.allowedS3Endpoints",
    ),
    "image": (
        {"execution": {"image": "docker.io/attacker/forged-results:1", "backoffLimit": 0}},
        "spec.execution.image",
        "policy.allowedImageRepositories",
    ),
    "service-account": (
        {"storage": {"serviceAccountName": "namespace-admin"}},
        "spec.storage.serviceAccountName",
        "policy.allowedServiceAccounts",
    ),
    "secret": (
        {"storage": {"credentialsSecret": {"name": "db-password"}}},
        "spec.storage.credentialsSecret.name",
        "policy.allowedCredentialsSecrets",
    ),
}


@pytest.mark.parametrize("case", sorted(POLICY_CASES))
def test_the_operator_refuses_a_job_outside_the_admins_policy(
    case: str,
    k8s_cluster: Any,
    namespace: str,
    start_operator: Callable[..., Operator],
    s3_world: dict[str, Any],
    s3_secret: str,
) -> None:
    start_operator(
        env={
            "EDGEQUANT_OPERATOR_ALLOWED_S3_ENDPOINTS": s3_world["endpoint"],
            "EDGEQUANT_OPERATOR_ALLOWED_CREDENTIALS_SECRETS": s3_secret,
        }
    )
    override, field, setting = POLICY_CASES[case]
    manifest = qj(f"refused-{case}", s3_world, s3_secret)
    for section, values in override.items():
        values = json.loads(json.dumps(values).replace("{port}", str(free_port())))
        manifest["spec"][section] = {**manifest["spec"].get(section, {}), **values}
    create(k8s_cluster, namespace, [manifest])
    bystander = served_meanwhile(k8s_cluster, namespace, s3_world, s3_secret)

    status = terminal(k8s_cluster, namespace, f"refused-{case}")
    assert status["phase"] == "Failed" and status["reason"] == "PolicyViolation", status
    assert failed_condition(status)["reason"] == "PolicyViolation" and failed_condition(status)["status"] == "True"
    assert field in status["message"] and setting in status["message"] and "ask the cluster admin" in status["message"]
    assert batch_jobs(k8s_cluster, namespace, f"refused-{case}") == []  # no Job, so no pod ever held the credentials
    assert [e["reason"] for e in events_for(k8s_cluster, namespace, f"refused-{case}") if e["type"] == "Warning"] == [
        "PolicyViolation"
    ]
    assert bystander["phase"] == "Failed"  # the other job ran to its own end meanwhile
    assert set(written(s3_world)) <= {
        "bystander"
    }  # the refused job wrote nothing, the other only below its output prefix


@pytest.mark.parametrize("field", ["spec.model.uri", "spec.storage.endpoint"])
def test_credentials_in_a_uri_are_refused_before_they_are_echoed(
    field: str,
    k8s_cluster: Any,
    namespace: str,
    start_operator: Callable[..., Operator],
    s3_world: dict[str, Any],
    s3_secret: str,
) -> None:
    operator = start_operator()
    manifest = qj("signed-uri", s3_world, s3_secret)
    if field == "spec.model.uri":  # a presigned URL pasted as the model
        manifest["spec"]["model"]["uri"] += f"?X-Amz-Credential=AKIA/x&X-Amz-Signature={SECRET_MARK}"
    else:  # keys written into the endpoint
        manifest["spec"]["storage"]["endpoint"] = s3_world["endpoint"].replace(
            "http://", f"http://AKIAEXAMPLE:{SECRET_MARK}@"
        )
    create(k8s_cluster, namespace, [manifest])
    served_meanwhile(k8s_cluster, namespace, s3_world, s3_secret)
    status = terminal(k8s_cluster, namespace, "signed-uri")
    assert status["phase"] == "Failed" and status["reason"] == "InvalidSpec"
    assert field in status["message"] and "credentialsSecret" in status["message"]
    assert batch_jobs(k8s_cluster, namespace, "signed-uri") == []
    events = json.dumps(events_for(k8s_cluster, namespace, "signed-uri"))
    assert SECRET_MARK not in json.dumps(status) and SECRET_MARK not in events and SECRET_MARK not in operator.tail()


def test_worker_pods_get_no_api_token_unless_the_policy_names_their_service_account(
    k8s_cluster: Any, namespace: str, start_operator: Callable[..., Operator], s3_world: dict[str, Any], s3_secret: str
) -> None:
    core = client.CoreV1Api(k8s_cluster.api_client())
    for sa in ("s3-reader", "needs-token"):
        core.create_namespaced_service_account(namespace, {"metadata": {"name": sa}})
    start_operator(
        env={
            "EDGEQUANT_OPERATOR_ALLOWED_SERVICE_ACCOUNTS": "s3-reader,needs-token",
            "EDGEQUANT_OPERATOR_TOKEN_SERVICE_ACCOUNTS": "needs-token",
        }
    )
    for name, sa in (("identity", "s3-reader"), ("with-token", "needs-token")):
        manifest = missing_model(qj(name, s3_world, s3_secret))
        manifest["spec"]["storage"]["serviceAccountName"] = sa
        create(k8s_cluster, namespace, [manifest])
    for name, mounted in (("identity", False), ("with-token", True)):
        status = terminal(k8s_cluster, namespace, name)
        assert status["reason"] == "InvalidInput"  # ran: the worker found no model, as set up
        (pod,) = pods_of(k8s_cluster, namespace, f"{name}-g1")
        assert pod["spec"]["automountServiceAccountToken"] is mounted
        mounts = [m["mountPath"] for m in pod["spec"]["containers"][0].get("volumeMounts", [])]
        assert ("/var/run/secrets/kubernetes.io/serviceaccount" in mounts) is mounted


# --------------------------------------------------------------------------- item 3: the admission policy


@pytest.fixture
def admission_policy(k8s_cluster: Any, namespace: str, crd_installed: None) -> Iterator[Callable[..., None]]:
    """Apply the chart's ValidatingAdmissionPolicy + binding (bound to this namespace only) rendered with values."""
    applied: list[dict[str, Any]] = []

    def apply(*values: str) -> None:
        docs = render(
            k8s_cluster,
            f"eq-{uuid.uuid4().hex[:6]}",
            namespace,
            "--set",
            f"operator.watchNamespaces={{{namespace}}}",
            *values,
        )
        policy = [d for d in docs if d["kind"].startswith("ValidatingAdmissionPolicy")]
        assert len(policy) == 2
        k8s_cluster.kubectl("apply", "--server-side", "-f", "-", input="\n---\n".join(json.dumps(d) for d in policy))
        applied.extend(policy)

    yield apply
    for d in applied:
        k8s_cluster.kubectl("delete", d["kind"], d["metadata"]["name"], "--ignore-not-found", check=False)


def test_the_admission_policy_refuses_kubectl_apply_naming_the_field(
    k8s_cluster: Any, namespace: str, admission_policy: Callable[..., None], s3_world: dict[str, Any]
) -> None:
    admission_policy(
        "--set",
        f"policy.allowedS3Endpoints={{{s3_world['endpoint']}}}",
        "--set",
        "policy.allowedServiceAccounts={s3-reader}",
        "--set",
        "policy.allowedCredentialsSecrets={s3-*}",
        "--set",
        "policy.allowedImageRepositories={registry.corp/ml/}",
    )

    def apply(manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return k8s_cluster.kubectl(
            "apply", "-n", namespace, "--dry-run=server", "-f", "-", input=yaml.safe_dump(manifest), check=False
        )

    def with_spec(name: str, **sections: dict[str, Any]) -> dict[str, Any]:
        manifest = qj(name, s3_world, "s3-credentials")
        for section, values in sections.items():
            manifest["spec"][section] = {**manifest["spec"].get(section, {}), **values}
        return manifest

    # The policy takes effect once the API server has loaded it.
    wait_for(
        lambda: apply(with_spec("probe", execution={"image": "evil/x:1"})).returncode != 0,
        timeout=60,
        what="the policy to load",
    )
    refused = {
        "spec.storage.endpoint": with_spec("a", storage={"endpoint": f"http://127.0.0.1:{free_port()}"}),
        "spec.execution.image": with_spec("b", execution={"image": "docker.io/attacker/x:1"}),
        "spec.storage.serviceAccountName": with_spec("c", storage={"serviceAccountName": "namespace-admin"}),
        "spec.storage.credentialsSecret.name": with_spec("d", storage={"credentialsSecret": {"name": "db-password"}}),
        "carries a credential": with_spec(
            "e", output={"uri": f"s3://{s3_world['bucket']}/out/?X-Amz-Signature={SECRET_MARK}"}
        ),
    }
    for field, manifest in refused.items():
        done = apply(manifest)
        assert done.returncode != 0, f"{field}: applied"
        assert (
            "denied request" in done.stderr and field in done.stderr and "ValidatingAdmissionPolicy" in done.stderr
        ), done.stderr
        assert SECRET_MARK not in done.stderr
    allowed = with_spec(
        "ok",
        storage={"serviceAccountName": "s3-reader", "credentialsSecret": {"name": "s3-credentials"}},
        execution={"image": "registry.corp/ml/quantizer:2"},
    )
    done = apply(allowed)
    assert done.returncode == 0, done.stderr
    # Only a changed spec is judged: an existing object's metadata can still be updated (the operator's annotations).
    created = k8s_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(allowed), check=False)
    assert created.returncode == 0, created.stderr
    k8s_cluster.kubectl("annotate", "qj", "ok", "-n", namespace, "edgequant.io/test=1")


# --------------------------------------------------------------------------- item 4: RBAC under owner-reference enforcement


def test_the_charts_service_account_may_create_owned_jobs_under_owner_reference_enforcement(
    k8s_cluster: Any, namespace: str, crd_installed: None, s3_world: dict[str, Any]
) -> None:
    """The control plane runs OwnerReferencesPermissionEnforcement: blockOwnerDeletion needs update on the owner's
    finalizers. With the chart's grant the Job is created; with the grant minus that rule it is forbidden."""
    release = f"eq-{uuid.uuid4().hex[:6]}"
    helm(
        k8s_cluster,
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        f"operator.watchNamespaces={{{namespace}}}",
        "--set",
        "replicaCount=0",
        "--set",
        "policy.admissionPolicy.enabled=false",
        "--set",
        f"liveness.port={free_port()}",
        "--set",
        f"metrics.port={free_port()}",
    )
    try:
        api_client = k8s_cluster.api_client()
        owner = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            "edgequant.io",
            "v1alpha1",
            namespace,
            "quantizationjobs",
            {
                **qj("owner", s3_world, "s3-credentials"),
                "spec": {**qj("owner", s3_world, "s3-credentials")["spec"], "suspend": True},
            },
        )
        token = (
            client.CoreV1Api(api_client)
            .create_namespaced_service_account_token(
                f"{release}-edgequant", namespace, {"spec": {"expirationSeconds": 600}}
            )
            .status.token
        )
        as_operator = client.BatchV1Api(k8s_cluster.api_client(token=token))

        def job(name: str) -> dict[str, Any]:
            return {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {
                    "name": name,
                    "ownerReferences": [
                        {
                            "apiVersion": "edgequant.io/v1alpha1",
                            "kind": "QuantizationJob",
                            "name": "owner",
                            "uid": owner["metadata"]["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {
                    "suspend": True,
                    "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}},
                },
            }

        wait_for(
            lambda: _try_create(as_operator, namespace, job(f"owned-{uuid.uuid4().hex[:6]}")) == "created",
            timeout=30,
            what="the chart's grant to allow an owned Job",
        )
        rbac = client.RbacAuthorizationV1Api(api_client)
        role = rbac.read_namespaced_role(f"{release}-edgequant", namespace)
        role.rules = [r for r in role.rules if not any(res.endswith("/finalizers") for res in r.resources)]
        rbac.replace_namespaced_role(f"{release}-edgequant", namespace, role)

        def refused() -> str | None:
            result = _try_create(as_operator, namespace, job(f"owned-{uuid.uuid4().hex[:6]}"))
            return None if result == "created" else result

        denied = wait_for(refused, timeout=30, what="the grant without finalizers to be refused")
        assert "blockOwnerDeletion" in denied and "finalizers" in denied, denied
    finally:
        helm(k8s_cluster, "uninstall", release, "--namespace", namespace, "--ignore-not-found", check=False)


def _try_create(batch: client.BatchV1Api, namespace: str, job: dict[str, Any]) -> str:
    try:
        batch.create_namespaced_job(namespace, job)
        return "created"
    except ApiException as exc:
        if exc.status == 409:
            return "created"
        if exc.status == 403:
            return exc.body or "forbidden"
        raise


# --------------------------------------------------------------------------- items 9, 10, 11: bounded resources


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


def test_a_hung_s3_endpoint_ends_as_storage_unavailable(
    k8s_cluster: Any,
    namespace: str,
    start_operator: Callable[..., Operator],
    s3_world: dict[str, Any],
    s3_secret: str,
    silent_endpoint: str,
) -> None:
    start_operator(
        env={
            "EDGEQUANT_OPERATOR_S3_CONNECT_TIMEOUT_SECONDS": "2",
            "EDGEQUANT_OPERATOR_S3_READ_TIMEOUT_SECONDS": "2",
            "EDGEQUANT_OPERATOR_S3_MAX_ATTEMPTS": "2",
        }
    )
    manifest = qj("hung", s3_world, s3_secret, execution={"backoffLimit": 0})
    manifest["spec"]["storage"]["endpoint"] = silent_endpoint
    started = time.monotonic()
    create(k8s_cluster, namespace, [manifest])
    served_meanwhile(k8s_cluster, namespace, s3_world, s3_secret)
    status = terminal(k8s_cluster, namespace, "hung")
    assert status["phase"] == "Failed" and status["reason"] == "StorageUnavailable", status
    assert "no answer after 2 attempt" in status["message"] and "spec.storage.endpoint" in status["message"]
    assert time.monotonic() - started < 240  # bounded: the worker gave up on its own (2 x (2 + 2) s plus start-up)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            children = [int(c) for c in task.read_text().split()]
            found += children
            todo += children
    return found


def test_a_hung_worker_ends_at_the_default_deadline_and_its_model_process_holds_no_keys(
    k8s_cluster: Any,
    namespace: str,
    start_operator: Callable[..., Operator],
    s3_world: dict[str, Any],
    s3_secret: str,
    silent_endpoint: str,
) -> None:
    """The worker hangs in its first download (a silent endpoint, a read timeout longer than the deadline): while it
    does, its processes are read from outside; then the operator's default deadline ends it."""
    start_operator(
        env={
            "EDGEQUANT_OPERATOR_DEFAULT_ACTIVE_DEADLINE_SECONDS": "60",
            "EDGEQUANT_OPERATOR_S3_READ_TIMEOUT_SECONDS": "3000",
        }
    )
    manifest = qj("stuck", s3_world, s3_secret, execution={"backoffLimit": 0})
    manifest["spec"]["storage"]["endpoint"] = silent_endpoint
    create(k8s_cluster, namespace, [manifest])
    (job,) = wait_for(lambda: batch_jobs(k8s_cluster, namespace, "stuck"), timeout=60, what="the Job")
    assert job["spec"]["activeDeadlineSeconds"] == 60

    # Item 7: the container's first process holds the Secret's keys; the process that would load the model
    # (the one with the storage broker) has none, in its environment or the kernel's copy of it.
    def worker_processes() -> tuple[dict[str, str], list[dict[str, str]]] | None:
        for pod in pods_of(k8s_cluster, namespace, "stuck-g1"):
            for cs in pod["status"].get("containerStatuses") or []:
                cid = cs.get("containerID") or ""
                if cs.get("state", {}).get("running") and cid.startswith("process://"):
                    root = int(cid.removeprefix("process://"))
                    envs = [_environ(p) for p in [root, *_descendants(root)] if Path(f"/proc/{p}").exists()]
                    children = [e for e in envs if "EDGEQUANT_STORAGE_BROKER_FD" in e]
                    holders = [e for e in envs if e.get("EDGEQUANT_SANDBOX") == "1"]
                    if children and holders:
                        return holders[0], children
        return None

    holder, children = wait_for(worker_processes, timeout=50, what="the worker's parent and model processes")
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    # The parent was given the key (by secretKeyRef) but wiped its value from the kernel's copy of its environment
    # (worker/sandbox.py wipe_initial_environ): /proc shows the variable, the same length, and not the secret...
    shown = holder.get("AWS_SECRET_ACCESS_KEY")
    assert shown is not None and len(shown) == len(secret) and shown != secret
    for child in children:  # ...the model process never was
        assert secret not in json.dumps(child) and not any(
            k.startswith(("AWS_ACCESS_KEY", "AWS_SECRET")) for k in child
        )

    served_meanwhile(k8s_cluster, namespace, s3_world, s3_secret)
    status = terminal(k8s_cluster, namespace, "stuck")
    assert status["phase"] == "Failed" and status["reason"] == "DeadlineExceeded", status
    assert "spec.execution.activeDeadlineSeconds" in status["message"]


def test_a_download_past_the_scratch_size_stops_before_it_starts(
    k8s_cluster: Any, namespace: str, start_operator: Callable[..., Operator], s3_world: dict[str, Any], s3_secret: str
) -> None:
    start_operator()
    create(k8s_cluster, namespace, [qj("small-disk", s3_world, s3_secret, resources={"scratchSize": "16Ki"})])
    served_meanwhile(k8s_cluster, namespace, s3_world, s3_secret)
    status = terminal(k8s_cluster, namespace, "small-disk")
    assert status["phase"] == "Failed" and status["reason"] == "InvalidInput", status
    assert "spec.resources.scratchSize" in status["message"] and "models/tiny.keras" in status["message"]
    (pod,) = pods_of(k8s_cluster, namespace, "small-disk-g1")
    assert {"name": "scratch", "emptyDir": {"sizeLimit": "16Ki"}} in pod["spec"]["volumes"]
    assert pod["spec"]["containers"][0]["resources"]["requests"]["ephemeral-storage"] == "16Ki"
    assert set(written(s3_world)) <= {
        "bystander",
        "small-disk",
    }  # at most the failure's report, below its output prefix
    assert not any(k.endswith(".tflite") for k in written(s3_world).get("small-disk", set()))


def test_an_npz_past_the_memory_budget_is_refused_before_it_is_decoded(
    k8s_cluster: Any,
    namespace: str,
    start_operator: Callable[..., Operator],
    s3_world: dict[str, Any],
    s3_secret: str,
    tmp_path: Any,
) -> None:
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(
        bomb, x=np.zeros((40000, 28, 28, 1), np.uint8), y=np.zeros(40000, np.int64)
    )  # 30 MiB decoded, ~40 KiB
    s3_world["client"].upload_file(str(bomb), s3_world["bucket"], "data/bomb.npz")
    start_operator()
    manifest = qj("bomb", s3_world, s3_secret, resources={"requests": {"memory": "40Mi"}, "limits": {"memory": "40Mi"}})
    manifest["spec"]["evaluation"]["dataset"]["uri"] = f"s3://{s3_world['bucket']}/data/bomb.npz"
    create(k8s_cluster, namespace, [manifest])
    served_meanwhile(k8s_cluster, namespace, s3_world, s3_secret)
    status = terminal(k8s_cluster, namespace, "bomb")
    assert status["phase"] == "Failed" and status["reason"] == "InvalidInput", status
    assert "[40000, 28, 28, 1]" in status["message"] and "40.0 MiB" in status["message"]
    assert "spec.resources.limits.memory" in status["message"] and status["attempts"] == 1


# --------------------------------------------------------------------------- item 16: the model is the one named


def test_a_model_whose_sha256_differs_fails_naming_the_field(
    k8s_cluster: Any, namespace: str, start_operator: Callable[..., Operator], s3_world: dict[str, Any], s3_secret: str
) -> None:
    start_operator()
    expected = "0" * 64
    manifest = qj("swapped", s3_world, s3_secret)
    manifest["spec"]["model"]["sha256"] = expected
    create(k8s_cluster, namespace, [manifest])
    served_meanwhile(k8s_cluster, namespace, s3_world, s3_secret)
    status = terminal(k8s_cluster, namespace, "swapped")
    assert status["phase"] == "Failed" and status["reason"] == "InvalidInput", status
    assert "spec.model.sha256" in status["message"] and f"expected {expected}" in status["message"]
    assert "fix the object or spec.model.sha256" in status["message"] and status["attempts"] == 1
    # The failure report is written; no artifact is published from a model that is not the one named.
    assert written(s3_world)["swapped"] == {"out/swapped/report.json", "out/swapped/report.html"}


# --------------------------------------------------------------------------- item 5: keys stay in their folder


TRAVERSING_MODEL_KEYS = {
    "absolute": ("//etc/x", "starts with '/'"),
    "dot-dot": ("a/../../x", "has a '..' part"),
    "backslash": ("a\\..\\..\\x", "contains a backslash"),
}


@pytest.mark.parametrize("case", sorted(TRAVERSING_MODEL_KEYS))
def test_a_model_folder_with_a_key_that_leaves_it_fails_before_a_byte_lands(
    k8s_cluster: Any,
    namespace: str,
    start_operator: Callable[..., Operator],
    s3_world: dict[str, Any],
    s3_secret: str,
    case: str,
) -> None:
    """A SavedModel prefix whose listing holds a key that would resolve outside the download folder."""
    suffix, problem = TRAVERSING_MODEL_KEYS[case]
    s3, bucket = s3_world["client"], s3_world["bucket"]
    s3.put_object(Bucket=bucket, Key=f"saved-{case}/saved_model.pb", Body=b"not read")
    s3.put_object(Bucket=bucket, Key=f"saved-{case}/{suffix}", Body=b"escaped")
    start_operator()
    manifest = qj(f"traversal-{case}", s3_world, s3_secret)
    manifest["spec"]["model"]["uri"] = f"s3://{bucket}/saved-{case}/"
    create(k8s_cluster, namespace, [manifest])
    served_meanwhile(k8s_cluster, namespace, s3_world, s3_secret)
    status = terminal(k8s_cluster, namespace, f"traversal-{case}")
    assert status["phase"] == "Failed" and status["reason"] == "InvalidInput", status
    assert problem in status["message"] and "rename the object" in status["message"], status["message"]
    name = f"traversal-{case}"
    assert status["attempts"] == 1 and written(s3_world)[name] == {f"out/{name}/report.json", f"out/{name}/report.html"}


# --------------------------------------------------------------------------- items 8 and 13: bounded input, long names


def test_an_over_long_field_is_refused_by_the_api_server_naming_it(
    k8s_cluster: Any, namespace: str, start_operator: Callable[..., Operator], s3_world: dict[str, Any], s3_secret: str
) -> None:
    start_operator()
    manifest = qj("long-uri", s3_world, s3_secret)
    manifest["spec"]["model"]["uri"] = f"s3://{s3_world['bucket']}/" + "m" * 4096 + ".keras"
    objects = client.CustomObjectsApi(k8s_cluster.api_client())
    with pytest.raises(ApiException) as refused:
        objects.create_namespaced_custom_object("edgequant.io", "v1alpha1", namespace, "quantizationjobs", manifest)
    assert refused.value.status == 422 and "spec.model.uri" in str(refused.value.body)
    assert "Too long" in str(refused.value.body) or "at most" in str(refused.value.body), refused.value.body
    served_meanwhile(k8s_cluster, namespace, s3_world, s3_secret)
    assert batch_jobs(k8s_cluster, namespace, "long-uri") == []


def test_a_name_longer_than_a_label_value_runs_with_hashed_labels(
    k8s_cluster: Any, namespace: str, start_operator: Callable[..., Operator], s3_world: dict[str, Any], s3_secret: str
) -> None:
    start_operator()
    name = "release-" + "x" * 110  # valid as an object name (<= 253), too long for a label value (63)
    create(k8s_cluster, namespace, [missing_model(qj(name, s3_world, s3_secret))])
    served_meanwhile(k8s_cluster, namespace, s3_world, s3_secret)
    status = terminal(k8s_cluster, namespace, name)
    # The run itself fails as a missing model does (its fix names spec.model.uri): the long name cost nothing.
    assert status["phase"] == "Failed" and status["reason"] == "InvalidInput", status
    assert "spec.model.uri" in status["message"] or "absent-" in status["message"], status["message"]
    job_name = status["jobName"]
    assert job_name and len(job_name) <= 63
    job = json.loads(k8s_cluster.kubectl("get", "job", "-n", namespace, job_name, "-o", "json").stdout)
    assert all(len(v) <= 63 for v in job["metadata"]["labels"].values())
    assert job["metadata"]["annotations"]["edgequant.io/quantizationjob-name"] == name
