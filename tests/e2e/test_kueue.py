"""Kueue end to end: two QuantizationJobs in a LocalQueue whose ClusterQueue has room for one at a time.

Real Kueue (its controller manager built from sigs.k8s.io/kueue, CRDs from the same module: tests/harness/kueue.py)
against the real control plane; the operator is the `edgequant operator` process, the quantizer runs on the
process node against the moto S3 server. The second job must wait (phase Queued, Kueue's reason) while the first
runs, and run when Kueue admits it after the first finished: the operator never unsuspends a Job Kueue holds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Self

import pytest

from tests.e2e.test_operator import (  # noqa: F401  fixtures are found by name in this module
    Operator,
    batch_jobs,
    crd_installed,
    create,
    get_json,
    get_qj,
    pods_of,
    qj,
    s3_secret,
    s3_world,
    start_operator,
    tiny_keras_model,
    wait_condition,
    wait_for,
)
from tests.harness.cluster import tail
from tests.harness.kueue import API, Kueue

pytestmark = pytest.mark.e2e

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
LOCAL_QUEUE = "quantizers"


@pytest.fixture(scope="module")
def kueue(k8s_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kueue]:
    manager = Kueue(k8s_cluster, tmp_path_factory.mktemp("kueue"))
    try:
        yield manager.start()
    finally:
        manager.stop()
        print(f"---- {manager.log} (last 60 lines) ----\n{tail(manager.log, 60)}")


@pytest.fixture
def one_cpu_queue(k8s_cluster: Any, namespace: str, kueue: Kueue) -> Iterator[str]:
    """ResourceFlavor + ClusterQueue (1 CPU, for this namespace only) + LocalQueue `quantizers`; the name of the ClusterQueue."""
    flavor, cluster_queue = f"cpu-{namespace}", f"one-cpu-{namespace}"
    objects = [
        {"apiVersion": API, "kind": "ResourceFlavor", "metadata": {"name": flavor}},
        {
            "apiVersion": API,
            "kind": "ClusterQueue",
            "metadata": {"name": cluster_queue},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "resourceGroups": [
                    {
                        # ephemeral-storage too: every quantizer pod requests its scratch volume's size.
                        "coveredResources": ["cpu", "memory", "ephemeral-storage"],
                        "flavors": [
                            {
                                "name": flavor,
                                "resources": [
                                    {"name": "cpu", "nominalQuota": "1"},
                                    {"name": "memory", "nominalQuota": "64Gi"},
                                    {"name": "ephemeral-storage", "nominalQuota": "1Ti"},
                                ],
                            }
                        ],
                    }
                ],
            },
        },
        {
            "apiVersion": API,
            "kind": "LocalQueue",
            "metadata": {"name": LOCAL_QUEUE, "namespace": namespace},
            "spec": {"clusterQueue": cluster_queue},
        },
    ]
    k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))

    def active() -> bool:
        conditions = (
            get_json(k8s_cluster, "clusterqueues.kueue.x-k8s.io", cluster_queue).get("status", {}).get("conditions")
            or []
        )
        return any(c["type"] == "Active" and c["status"] == "True" for c in conditions)

    wait_for(active, timeout=60, what=f"ClusterQueue {cluster_queue} to be active")
    try:
        yield cluster_queue
    finally:
        k8s_cluster.kubectl(
            "delete", "localqueues.kueue.x-k8s.io", LOCAL_QUEUE, "-n", namespace, "--wait=false", check=False
        )
        k8s_cluster.kubectl("delete", "clusterqueues.kueue.x-k8s.io", cluster_queue, "--wait=false", check=False)
        k8s_cluster.kubectl("delete", "resourceflavors.kueue.x-k8s.io", flavor, "--wait=false", check=False)


class Timeline:
    """Every change of (phase, reason) of the namespace's QuantizationJobs, as a watch delivers it, with its time."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.entries: list[tuple[float, str, str, str]] = []
        self._last: dict[str, tuple[str, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.time()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        from kubernetes import client, watch

        api = client.CustomObjectsApi(self.cluster.api_client())
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    api.list_namespaced_custom_object,
                    "edgequant.io",
                    "v1alpha1",
                    self.namespace,
                    "quantizationjobs",
                    timeout_seconds=2,
                ):
                    self._record(event["object"])
                    if self._stop.is_set():
                        break
            except Exception:  # noqa: BLE001  a broken watch is restarted, as any client would
                time.sleep(0.2)
            finally:
                stream.stop()

    def _record(self, obj: dict[str, Any]) -> None:
        status = obj.get("status") or {}
        name, state = obj["metadata"]["name"], (str(status.get("phase") or "-"), str(status.get("reason") or "-"))
        if self._last.get(name) != state:
            self._last[name] = state
            self.entries.append((time.time(), name, *state))

    def phases(self, name: str) -> list[str]:
        out: list[str] = []
        for _, who, phase, _ in self.entries:
            if who == name and (not out or out[-1] != phase):
                out.append(phase)
        return out

    def first(self, name: str, phase: str) -> float:
        return next(t for t, who, p, _ in self.entries if who == name and p == phase)

    def render(self) -> str:
        return "\n".join(
            f"  t+{t - self.t0:6.1f}s  {name:<7} {phase:<10} {reason}" for t, name, phase, reason in self.entries
        )


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind)


def _workload_of(cluster: Any, namespace: str, job: dict[str, Any]) -> dict[str, Any]:
    items = get_json(
        cluster, "workloads.kueue.x-k8s.io", "-n", namespace, "-l", f"kueue.x-k8s.io/job-uid={job['metadata']['uid']}"
    )["items"]
    assert len(items) == 1, items
    return items[0]


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp).astimezone(UTC)


def test_the_second_job_waits_in_kueue_then_runs(
    k8s_cluster: Any,
    namespace: str,
    one_cpu_queue: str,
    start_operator: Callable[..., Operator],
    s3_world: dict[str, Any],
    s3_secret: str,
) -> None:
    start_operator(env={"EDGEQUANT_OPERATOR_KUEUE": "true"})
    whole_quota = {"requests": {"cpu": "1"}}  # each job asks for the ClusterQueue's one CPU
    with Timeline(k8s_cluster, namespace) as timeline:
        create(k8s_cluster, namespace, [qj("first", s3_world, s3_secret, queueName=LOCAL_QUEUE, resources=whole_quota)])
        wait_for(
            lambda: (get_qj(k8s_cluster, namespace, "first").get("status") or {}).get("phase") == "Running",
            timeout=300,
            what="the first job to run",
        )
        create(
            k8s_cluster, namespace, [qj("second", s3_world, s3_secret, queueName=LOCAL_QUEUE, resources=whole_quota)]
        )

        def queued_by_kueue() -> dict[str, Any] | None:
            obj = get_qj(k8s_cluster, namespace, "second")
            return obj if (obj.get("status") or {}).get("reason") == "Pending" else None

        second = wait_for(queued_by_kueue, timeout=120, what="the second job to be queued with Kueue's reason")
        first_then = get_qj(k8s_cluster, namespace, "first")["status"]
        (held,) = batch_jobs(k8s_cluster, namespace, "second")
        queued = _condition(second, "Queued")

        final_first = wait_condition(k8s_cluster, namespace, "first", "Succeeded", timeout=600)["status"]
        final_second = wait_condition(k8s_cluster, namespace, "second", "Succeeded", timeout=600)["status"]
        wait_for(lambda: timeline.phases("second")[-1:] == ["Succeeded"], timeout=30, what="the watch to see the end")

    # The timeline (docs/kueue.md shows one).
    print(f"\nKueue timeline (ClusterQueue {one_cpu_queue}: 1 CPU; each job requests 1 CPU):\n{timeline.render()}")

    # While the first ran, the second waited: phase Queued, the Queued condition carries Kueue's reason and message.
    assert first_then["phase"] in ("Running", "Succeeded") and second["status"]["phase"] == "Queued"
    assert queued["status"] == "True" and queued["reason"] == "Pending"
    assert "insufficient unused quota for cpu" in queued["message"] and LOCAL_QUEUE in queued["message"]
    assert held["spec"]["suspend"] is True and held["metadata"]["labels"][QUEUE_LABEL] == LOCAL_QUEUE

    # Then it ran: Kueue admitted it only once the first had finished, and the operator never started it before.
    first_job, second_job = (batch_jobs(k8s_cluster, namespace, n)[0] for n in ("first", "second"))
    first_wl, second_wl = (_workload_of(k8s_cluster, namespace, j) for j in (first_job, second_job))
    first_done = _at(_condition(first_wl, "Finished")["lastTransitionTime"])
    second_admitted = _at(_condition(second_wl, "Admitted")["lastTransitionTime"])
    assert second_admitted >= first_done
    assert _at(second_job["status"]["startTime"]) >= _at(first_job["status"]["completionTime"])
    assert len(pods_of(k8s_cluster, namespace, "second-g1")) == 1  # started once, never started and stopped
    for final in (final_first, final_second):
        assert final["phase"] == "Succeeded" and final["reason"] == "Completed" and final["results"]["artifact"]["uri"]
        assert {c["type"]: c["status"] for c in final["conditions"]}.get("Queued", "False") == "False"
    order = timeline.phases("second")
    assert order.index("Queued") < order.index("Running") < order.index("Succeeded"), order
    assert timeline.first("second", "Running") > timeline.first("second", "Queued")
