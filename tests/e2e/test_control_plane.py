"""The test control plane is real: every check goes through the real kube-apiserver, and the real
Job controller, garbage collector, scheduler and RBAC authorizer do the work. The process node
(tests/harness/node.py) runs the pods."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.harness.cluster import Cluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "edgequant.io_quantizationjobs.yaml"
EXAMPLE_QJ = REPO / "examples" / "01-tflite-dynamic-range.yaml"
CPU_NODE, GPU_NODE = "edgequant-cpu", "edgequant-gpu"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
GPU_SELECTOR = {"nvidia.com/gpu.present": "true"}


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60, interval: float = 0.25):
    """Poll ``fn`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture
def core(k8s_cluster: Cluster) -> client.CoreV1Api:
    return client.CoreV1Api(k8s_cluster.api_client())


@pytest.fixture
def batch(k8s_cluster: Cluster) -> client.BatchV1Api:
    return client.BatchV1Api(k8s_cluster.api_client())


def job_manifest(name: str, container: dict, *, restart_policy: str = "Never", **spec: Any) -> dict:
    pod_spec = {"restartPolicy": restart_policy, "containers": [container], "terminationGracePeriodSeconds": 5}
    pod_spec.update(spec.pop("pod", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": pod_spec}, **spec},
    }


def py(name: str, code: str, **extra: Any) -> dict:
    """A container that runs ``python -c code`` (the project's virtualenv on the process node)."""
    return {"name": name, "image": "python:3.11-slim", "command": ["python", "-c", code], **extra}


def job_condition(batch: client.BatchV1Api, ns: str, name: str, ctype: str):
    job = batch.read_namespaced_job(name, ns)
    for c in job.status.conditions or []:
        if c.type == ctype and c.status == "True":
            return c
    return None


def job_pods(core: client.CoreV1Api, ns: str, job: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(ns, label_selector=f"job-name={job}").items


def test_server_and_nodes(k8s_cluster: Cluster):
    version = json.loads(k8s_cluster.kubectl("version", "-o", "json").stdout)
    server = version["serverVersion"]
    assert re.fullmatch(r"v1\.3\d+\.\d+", server["gitVersion"]), server
    assert server["major"] == "1" and server["gitTreeState"] == "clean"
    assert version["clientVersion"]["gitVersion"] == server["gitVersion"]

    nodes = {
        n["metadata"]["name"]: n for n in json.loads(k8s_cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    }
    assert set(nodes) == {CPU_NODE, GPU_NODE}
    for n in nodes.values():
        ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"
        assert all(t["key"] != "node.kubernetes.io/not-ready" for t in n["spec"].get("taints", []))
    gpu, cpu = nodes[GPU_NODE], nodes[CPU_NODE]
    assert int(gpu["status"]["allocatable"]["nvidia.com/gpu"]) >= 1
    assert "nvidia.com/gpu" not in cpu["status"]["allocatable"]
    assert gpu["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in gpu["spec"]["taints"]


def test_job_runs_to_completion(k8s_cluster: Cluster, namespace: str, core, batch):
    """Job -> real Job controller creates the Pod -> real scheduler binds it -> process node runs
    it with env from a ConfigMap, a Secret and the downward API, and configMap/secret/emptyDir
    volumes -> termination message in the pod status -> Job Complete."""
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"mode": "fast", "config.json": '{"a": 1}'}}
    )
    core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "stringData": {"key": "s3cr3t"}})
    code = r"""
import json, os, pathlib
mounts = json.loads(os.environ["EDGEQUANT_MOUNTS"])
cfg = json.loads(pathlib.Path(os.environ["CONFIG_FILE"]).read_text())
secret = pathlib.Path(mounts["/etc/" + "creds"], "key").read_text()  # split: not rewritten
rootfs_view = pathlib.Path(os.environ["EDGEQUANT_ROOTFS"], "etc/settings/config.json").read_text()
pathlib.Path(os.environ["WORK"], "out.txt").write_text("done")
summary = {"mode": os.environ["MODE"], "key": os.environ["KEY"], "pod": os.environ["POD_NAME"],
           "ns": os.environ["POD_NS"], "cfg": cfg, "secret": secret, "rootfs": rootfs_view,
           "cwd": os.getcwd(), "expanded": os.environ["EXPANDED"]}
print("summary", json.dumps(summary))
with open(os.environ["TERMINATION"], "w") as f:
    json.dump(summary, f)
"""
    container = py(
        "main",
        code,
        workingDir="/work",
        env=[
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "EXPANDED", "value": "$(MODE)-$(POD_NS)"},
            {"name": "CONFIG_FILE", "value": "/etc/settings/config.json"},
            {"name": "WORK", "value": "/work"},
            {"name": "TERMINATION", "value": "/dev/termination-log"},
        ],
        volumeMounts=[
            {"name": "settings", "mountPath": "/etc/settings", "readOnly": True},
            {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
            {"name": "work", "mountPath": "/work"},
        ],
    )
    manifest = job_manifest(
        "hello",
        container,
        pod={
            "volumes": [
                {"name": "settings", "configMap": {"name": "settings"}},
                {"name": "creds", "secret": {"secretName": "creds"}},
                {"name": "work", "emptyDir": {}},
            ]
        },
    )
    batch.create_namespaced_job(namespace, manifest)
    wait_for("Job hello to complete", lambda: job_condition(batch, namespace, "hello", "Complete"))

    pods = job_pods(core, namespace, "hello")
    assert len(pods) == 1
    pod = pods[0]
    assert pod.spec.node_name == CPU_NODE
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0 and terminated.reason == "Completed"
    summary = json.loads(terminated.message)
    assert summary["mode"] == "fast" and summary["key"] == "s3cr3t"
    assert summary["pod"] == pod.metadata.name and summary["ns"] == namespace
    assert summary["cfg"] == {"a": 1} and summary["secret"] == "s3cr3t"
    assert summary["rootfs"] == '{"a": 1}'
    assert summary["expanded"] == f"fast-{namespace}"
    assert summary["cwd"].endswith("/volumes/work")
    # The container's output is kept in a file on the node.
    logs = list(k8s_cluster.pods_dir.glob(f"{namespace}_{pod.metadata.name}_*/containers/main/0.log"))
    assert len(logs) == 1 and "summary" in logs[0].read_text()


def test_gpu_pod_lands_on_gpu_node_only(k8s_cluster: Cluster, namespace: str, core, batch):
    gpu_container = py(
        "main", "import os; print(os.environ['EDGEQUANT_NODE_NAME'])", resources={"limits": {"nvidia.com/gpu": "1"}}
    )
    batch.create_namespaced_job(
        namespace,
        job_manifest("gpu", gpu_container, pod={"tolerations": [GPU_TOLERATION], "nodeSelector": GPU_SELECTOR}),
    )
    # The same request without the toleration fits nowhere: the CPU node has no GPU and the
    # GPU node's taint repels it.
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "gpu-no-toleration"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [py("main", "pass", resources={"limits": {"nvidia.com/gpu": "1"}})],
            },
        },
    )
    # And a CPU pod that does not tolerate the taint never lands on the GPU node.
    batch.create_namespaced_job(namespace, job_manifest("cpu", py("main", "pass"), completions=4, parallelism=4))

    wait_for("GPU Job to complete", lambda: job_condition(batch, namespace, "gpu", "Complete"))
    wait_for("CPU Job to complete", lambda: job_condition(batch, namespace, "cpu", "Complete"))
    (gpu_pod,) = job_pods(core, namespace, "gpu")
    assert gpu_pod.spec.node_name == GPU_NODE
    assert {p.spec.node_name for p in job_pods(core, namespace, "cpu")} == {CPU_NODE}

    def unschedulable():
        pod = core.read_namespaced_pod("gpu-no-toleration", namespace)
        cond = [c for c in pod.status.conditions or [] if c.type == "PodScheduled"]
        return cond and cond[0].status == "False" and cond[0].reason == "Unschedulable" and pod

    pod = wait_for("the scheduler to give up on the pod without toleration", unschedulable)
    assert pod.spec.node_name is None
    assert "nvidia.com/gpu" in pod.status.conditions[0].message or "taint" in pod.status.conditions[0].message


def test_failing_pod_hits_backoff_limit(namespace: str, core, batch):
    code = "import sys; print('first line'); print('boom: bad calibration data'); sys.exit(3)"
    container = py("main", code, terminationMessagePolicy="FallbackToLogsOnError")
    batch.create_namespaced_job(namespace, job_manifest("fails", container, backoffLimit=1))
    cond = wait_for("Job fails to fail", lambda: job_condition(batch, namespace, "fails", "Failed"), timeout=90)
    assert cond.reason == "BackoffLimitExceeded"
    pods = job_pods(core, namespace, "fails")
    assert len(pods) == 2  # the first try and one retry (backoffLimit=1)
    for pod in pods:
        assert pod.status.phase == "Failed"
        term = pod.status.container_statuses[0].state.terminated
        assert term.exit_code == 3 and term.reason == "Error"
        assert term.message.splitlines()[-1] == "boom: bad calibration data"


def test_restart_policy_on_failure_restarts_in_place(namespace: str, core, batch):
    code = r"""
import os, pathlib, sys
marker = pathlib.Path(os.environ["STATE"], "attempts")
n = int(marker.read_text()) + 1 if marker.exists() else 1
marker.write_text(str(n))
print("attempt", n)
sys.exit(0 if n >= 2 else 1)
"""
    container = py(
        "main",
        code,
        env=[{"name": "STATE", "value": "/state"}],
        volumeMounts=[{"name": "state", "mountPath": "/state"}],
    )
    batch.create_namespaced_job(
        namespace,
        job_manifest(
            "flaky",
            container,
            restart_policy="OnFailure",
            backoffLimit=3,
            pod={"volumes": [{"name": "state", "emptyDir": {}}]},
        ),
    )
    wait_for("Job flaky to complete", lambda: job_condition(batch, namespace, "flaky", "Complete"), timeout=90)
    (pod,) = job_pods(core, namespace, "flaky")
    st = pod.status.container_statuses[0]
    assert st.restart_count == 1
    assert st.last_state.terminated.exit_code == 1
    assert st.state.terminated.exit_code == 0


def test_active_deadline_stops_the_job(k8s_cluster: Cluster, namespace: str, core, batch):
    code = "import time; print('working', flush=True); time.sleep(600)"
    batch.create_namespaced_job(namespace, job_manifest("slow", py("main", code), activeDeadlineSeconds=4))
    wait_for("the pod to run", lambda: any(p.status.phase == "Running" for p in job_pods(core, namespace, "slow")))
    cond = wait_for("Job slow to fail", lambda: job_condition(batch, namespace, "slow", "Failed"), timeout=60)
    assert cond.reason == "DeadlineExceeded"
    # The Job controller deletes the active pod; the node stops the process and removes it.
    wait_for("the pod to be removed", lambda: not job_pods(core, namespace, "slow"), timeout=60)
    wait_for("the process to end", lambda: not _container_processes(k8s_cluster, namespace))


def test_pod_deletion_sigterm_then_sigkill(k8s_cluster: Cluster, namespace: str, core):
    polite = r"""
import signal, sys, time
def bye(*_):
    print("got SIGTERM, exiting", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("ready", flush=True)
time.sleep(600)
"""
    stubborn = r"""
import signal, time
signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM", flush=True))
print("ready", flush=True)
while True:
    time.sleep(0.1)
"""
    for name, code in (("polite", polite), ("stubborn", stubborn)):
        core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 3,
                    "containers": [py("main", code)],
                },
            },
        )
    for name in ("polite", "stubborn"):
        wait_for(f"{name} to print ready", lambda n=name: "ready" in _output(k8s_cluster, namespace, n))
        wait_for(
            f"{name} to be Running", lambda n=name: core.read_namespaced_pod(n, namespace).status.phase == "Running"
        )
    started = time.monotonic()
    for name in ("polite", "stubborn"):
        core.delete_namespaced_pod(name, namespace)

    def gone(name: str) -> bool:
        try:
            core.read_namespaced_pod(name, namespace)
        except ApiException as e:
            return e.status == 404
        return False

    wait_for("polite to be removed", lambda: gone("polite"), timeout=30)
    wait_for("stubborn to be removed", lambda: gone("stubborn"), timeout=30)
    elapsed = time.monotonic() - started
    assert "got SIGTERM, exiting" in _output(k8s_cluster, namespace, "polite")
    assert "ignoring SIGTERM" in _output(k8s_cluster, namespace, "stubborn")
    assert elapsed >= 2.5, "the stubborn container must get its grace period before SIGKILL"
    wait_for("the processes to end", lambda: not _container_processes(k8s_cluster, namespace))


def test_garbage_collector_removes_dependents(k8s_cluster: Cluster, namespace: str, core, batch):
    # A running Job: deleting it (background propagation) removes its pod and stops the process.
    batch.create_namespaced_job(
        namespace, job_manifest("owner", py("main", "import time; print('up', flush=True); time.sleep(600)"))
    )
    wait_for("the pod to run", lambda: any(p.status.phase == "Running" for p in job_pods(core, namespace, "owner")))
    # Plain objects too: a ConfigMap owned by another ConfigMap.
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "parent"}})
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "parent", "uid": owner.metadata.uid}
                ],
            }
        },
    )

    batch.delete_namespaced_job("owner", namespace, propagation_policy="Background")
    core.delete_namespaced_config_map("parent", namespace)  # default for core: background

    def names() -> set[str]:
        return {c.metadata.name for c in core.list_namespaced_config_map(namespace).items}

    wait_for("the child ConfigMap to be collected", lambda: "child" not in names())
    wait_for("the Job's pod to be collected", lambda: not job_pods(core, namespace, "owner"), timeout=60)
    wait_for("the process to end", lambda: not _container_processes(k8s_cluster, namespace))


def test_rbac_denies_what_the_role_does_not_grant(k8s_cluster: Cluster, namespace: str, core):
    rbac = client.RbacAuthorizationV1Api(k8s_cluster.api_client())
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "configmap-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    core.create_namespaced_secret(namespace, {"metadata": {"name": "private"}, "stringData": {"k": "v"}})
    token = core.create_namespaced_service_account_token(
        "reader", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    as_reader = client.CoreV1Api(k8s_cluster.api_client(token=token))

    def allowed() -> bool:
        try:
            as_reader.list_namespaced_config_map(namespace)
            return True
        except ApiException as e:
            if e.status == 403:  # the RBAC authorizer's informer may lag a moment
                return False
            raise

    wait_for("the Role to take effect", allowed, timeout=30)
    for call in (
        lambda: as_reader.list_namespaced_secret(namespace),
        lambda: as_reader.read_namespaced_secret("private", namespace),
        lambda: as_reader.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}}),
        lambda: as_reader.list_namespaced_config_map("default"),
    ):
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 403
        assert f"system:serviceaccount:{namespace}:reader" in err.value.body

    sa = f"system:serviceaccount:{namespace}:reader"
    can = k8s_cluster.kubectl("auth", "can-i", "list", "configmaps", "-n", namespace, "--as", sa, check=False)
    cannot = k8s_cluster.kubectl("auth", "can-i", "get", "secrets", "-n", namespace, "--as", sa, check=False)
    assert (can.returncode, can.stdout.strip()) == (0, "yes")
    assert (cannot.returncode, cannot.stdout.strip()) == (1, "no")


def test_quantizationjob_crd_is_served_and_validated(k8s_cluster: Cluster, namespace: str):
    assert CRD_FILE.exists(), f"{CRD_FILE} is missing"
    crd = yaml.safe_load(CRD_FILE.read_text())
    k8s_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    k8s_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd['metadata']['name']}")

    example = yaml.safe_load(EXAMPLE_QJ.read_text())
    example["metadata"] = {"name": "good", "namespace": namespace}

    def applied() -> bool:  # discovery of a new CRD can lag its Established condition briefly
        return k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(example), check=False).returncode == 0

    wait_for("a valid QuantizationJob to be accepted", applied, timeout=30, interval=1)
    table = k8s_cluster.kubectl("get", "qj", "-n", namespace).stdout.splitlines()
    columns = [c["name"].upper() for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert table[0].split() == ["NAME", *columns]
    assert table[1].split()[0] == "good"
    assert example["spec"]["method"] in table[1].split()

    # Schema validation: an unknown method is rejected by the server, naming the field.
    bad = json.loads(json.dumps(example))
    bad["metadata"]["name"] = "bad-method"
    bad["spec"]["method"] = "tflite-int4"
    out = k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert out.returncode != 0
    assert "spec.method" in out.stderr and "tflite-int4" in out.stderr, out.stderr

    # CEL validation: TensorRT on a CPU accelerator is refused with the field named.
    cel = json.loads(json.dumps(yaml.safe_load((REPO / "examples" / "08-tensorrt-fp16.yaml").read_text())))
    cel["metadata"] = {"name": "trt-on-cpu", "namespace": namespace}
    cel["spec"].setdefault("resources", {})["accelerator"] = "cpu"
    out = k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(cel), check=False)
    assert out.returncode != 0
    assert "spec.resources.accelerator" in out.stderr, out.stderr

    names = k8s_cluster.kubectl("get", "qj", "-n", namespace, "-o", "name").stdout.split()
    assert names == ["quantizationjob.edgequant.io/good"]


def test_many_pods_at_once(namespace: str, core, batch):
    """The node copes with a burst: 30 pods from one Job, 15 at a time, plus 10 small Jobs."""
    batch.create_namespaced_job(
        namespace,
        job_manifest(
            "burst",
            {"name": "main", "image": "busybox", "command": ["sh", "-c", "echo $HOSTNAME"]},
            completions=30,
            parallelism=15,
        ),
    )
    for i in range(10):
        batch.create_namespaced_job(
            namespace, job_manifest(f"small-{i}", {"name": "main", "image": "busybox", "command": ["true"]})
        )
    wait_for("the burst Job to complete", lambda: job_condition(batch, namespace, "burst", "Complete"), timeout=120)
    for i in range(10):
        wait_for(
            f"small-{i} to complete", lambda i=i: job_condition(batch, namespace, f"small-{i}", "Complete"), timeout=60
        )
    job = batch.read_namespaced_job("burst", namespace)
    assert job.status.succeeded == 30 and not job.status.failed


def test_termination_message_is_capped(namespace: str, core):
    code = "import os; open(os.environ['EDGEQUANT_TERMINATION_LOG'], 'w').write('x' * 10000)"
    core.create_namespaced_pod(
        namespace,
        {"metadata": {"name": "chatty"}, "spec": {"restartPolicy": "Never", "containers": [py("main", code)]}},
    )
    pod = wait_for(
        "chatty to succeed",
        lambda: (p := core.read_namespaced_pod("chatty", namespace)).status.phase == "Succeeded" and p,
    )
    assert len(pod.status.container_statuses[0].state.terminated.message) == 4096


def test_start_error_fails_the_pod(namespace: str, core):
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "no-such-binary"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox", "command": ["definitely-not-installed"]}],
            },
        },
    )
    pod = wait_for(
        "the pod to fail",
        lambda: (p := core.read_namespaced_pod("no-such-binary", namespace)).status.phase == "Failed" and p,
    )
    term = pod.status.container_statuses[0].state.terminated
    assert term.exit_code == 128 and term.reason == "StartError"
    assert "executable file not found" in term.message


def test_init_container_and_service_account_token(k8s_cluster: Cluster, namespace: str, core):
    """An init container prepares a file; the main container reads it and talks to the API
    server in-cluster with the projected service-account token the admission plugin mounted."""
    init = py(
        "prepare",
        "import pathlib; pathlib.Path('/shared/ready').write_text('prepared')",
        volumeMounts=[{"name": "shared", "mountPath": "/shared"}],
    )
    code = r"""
import json, os, pathlib, ssl, urllib.request
sa = pathlib.Path(os.environ["EDGEQUANT_ROOTFS"], "var/run/secrets/kubernetes.io/serviceaccount")
ctx = ssl.create_default_context(cafile=str(sa / "ca.crt"))
url = "https://%s:%s/apis/authentication.k8s.io/v1/selfsubjectreviews" % (
    os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
req = urllib.request.Request(url, method="POST", data=json.dumps(
    {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode(), headers={
    "Authorization": "Bearer " + (sa / "token").read_text(), "Content-Type": "application/json"})
user = json.load(urllib.request.urlopen(req, context=ctx))["status"]["userInfo"]["username"]
ready = pathlib.Path("/shared/ready").read_text()
namespace = (sa / "namespace").read_text()
open(os.environ["EDGEQUANT_TERMINATION_LOG"], "w").write(json.dumps([ready, user, namespace]))
"""
    main = py("main", code, volumeMounts=[{"name": "shared", "mountPath": "/shared"}])
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "init-and-token"},
            "spec": {
                "restartPolicy": "Never",
                "initContainers": [init],
                "containers": [main],
                "volumes": [{"name": "shared", "emptyDir": {}}],
            },
        },
    )
    pod = wait_for(
        "the pod to finish",
        lambda: (
            (p := core.read_namespaced_pod("init-and-token", namespace)).status.phase in ("Succeeded", "Failed") and p
        ),
    )
    assert pod.status.phase == "Succeeded", pod.status
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 0
    message = json.loads(pod.status.container_statuses[0].state.terminated.message)
    assert message == ["prepared", f"system:serviceaccount:{namespace}:default", namespace]


def test_missing_secret_waits_like_a_kubelet(namespace: str, core):
    """A container whose env needs a Secret that does not exist yet waits in
    CreateContainerConfigError and starts once the Secret appears."""
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "needs-secret"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    py(
                        "main",
                        "import os; open(os.environ['EDGEQUANT_TERMINATION_LOG'], 'w').write(os.environ['PASSWORD'])",
                        env=[{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "late", "key": "password"}}}],
                    )
                ],
            },
        },
    )

    def waiting_reason():
        pod = core.read_namespaced_pod("needs-secret", namespace)
        statuses = pod.status.container_statuses or []
        return statuses and statuses[0].state.waiting and statuses[0].state.waiting.reason

    assert wait_for("CreateContainerConfigError", lambda: waiting_reason() == "CreateContainerConfigError")
    assert core.read_namespaced_pod("needs-secret", namespace).status.phase == "Pending"
    core.create_namespaced_secret(namespace, {"metadata": {"name": "late"}, "stringData": {"password": "hunter2"}})
    pod = wait_for(
        "the pod to succeed",
        lambda: (p := core.read_namespaced_pod("needs-secret", namespace)).status.phase == "Succeeded" and p,
    )
    assert pod.status.container_statuses[0].state.terminated.message == "hunter2"


def test_helm_targets_the_server_version(k8s_cluster: Cluster, tmp_path: Path):
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n"
        "data: {kube: '{{ .Capabilities.KubeVersion.Version }}'}\n"
    )
    helm = str(k8s_cluster.helm)
    assert "v3." in subprocess.run([helm, "version", "--short"], capture_output=True, text=True, check=True).stdout
    server_minor = k8s_cluster.server_version.split(".")[1]
    # Offline rendering assumes the minor helm was stamped with: ours.
    out = subprocess.run(
        [helm, "template", "probe", str(chart)], capture_output=True, text=True, check=True, env=k8s_cluster.env()
    ).stdout
    assert f"kube: 'v1.{server_minor}.0'" in out or f"kube: v1.{server_minor}.0" in out, out
    # Against the server, helm sees the real version.
    out = subprocess.run(
        [helm, "template", "probe", str(chart), "--validate"],
        capture_output=True,
        text=True,
        check=True,
        env=k8s_cluster.env(),
    ).stdout
    assert k8s_cluster.server_version in out, out


# ------------------------------------------------------------------------------------- helpers
def _output(cluster: Cluster, namespace: str, pod: str) -> str:
    return "".join(p.read_text() for p in cluster.pods_dir.glob(f"{namespace}_{pod}_*/containers/*/*.log"))


def _container_processes(cluster: Cluster, namespace: str) -> list[int]:
    """Processes the node started for pods of ``namespace`` that are still alive."""
    marker = f"EDGEQUANT_POD_DIR={cluster.pods_dir}/{namespace}_".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if any(e.startswith(marker) for e in env):
            pids.append(int(entry))
    return pids


def test_a_pod_gets_the_cpu_weight_of_its_request(namespace: str, core):
    """As the kubelet on a cgroup v1 host: the pod's processes sit in a cpu cgroup of their own whose cpu.shares
    come from the CPU request (250m -> 256), below the node's group; a child process stays in it. Where the cpu
    hierarchy is not writable the node runs the pod in the caller's group (and logs it)."""
    code = (
        "import os, subprocess, sys\n"
        "line = [l for l in open('/proc/self/cgroup') if ':cpu:' in l or ':cpu,' in l][0]\n"
        "group = line.strip().split(':', 2)[2]\n"
        "shares = open('/sys/fs/cgroup/cpu' + group + '/cpu.shares').read().strip() if group != '/' else ''\n"
        "child = subprocess.run([sys.executable, '-c', 'print(open(\"/proc/self/cgroup\").read())'],"
        " capture_output=True, text=True).stdout\n"
        "open(os.environ['EDGEQUANT_TERMINATION_LOG'], 'w').write(f'{group} {shares} {group in child}')\n"
    )
    container = py("main", code, resources={"requests": {"cpu": "250m"}})
    core.create_namespaced_pod(
        namespace, {"metadata": {"name": "weighted"}, "spec": {"restartPolicy": "Never", "containers": [container]}}
    )
    pod = wait_for(
        "the pod to succeed",
        lambda: (p := core.read_namespaced_pod("weighted", namespace)).status.phase == "Succeeded" and p,
    )
    group, shares, child_inside = pod.status.container_statuses[0].state.terminated.message.split(" ")
    if os.access("/sys/fs/cgroup/cpu", os.W_OK):
        assert re.fullmatch(rf"/edgequant-node-\d+/{pod.metadata.uid}", group), group
        assert shares == "256"
        assert child_inside == "True"
        # the node removes the group once the pod has ended
        wait_for("the pod's cpu group to go", lambda: not Path("/sys/fs/cgroup/cpu" + group).exists(), timeout=30)
    else:
        assert not group.startswith("/edgequant-node-")
