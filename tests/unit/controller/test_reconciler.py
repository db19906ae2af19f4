"""Reconciler decisions made from the watch cache alone: its API client points nowhere, so any call it made would fail."""

from __future__ import annotations

import logging

import kopf

from edgequant.api.conditions import Phase, Reason
from edgequant.controller import handlers, reconcile, status

from .conftest import batch_job, cache_of, pod, quantization_job

LOG = logging.getLogger("test")
SPEC = {
    "method": "tflite-dynamic-range",
    "model": {"uri": "s3://b/m.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
    "output": {"uri": "s3://b/o/"},
}


def test_a_finished_generation_whose_job_is_gone_is_not_started_again(reconciler: reconcile.Reconciler) -> None:
    """E.g. its Job's TTL removed it after the result was recorded, and the operator restarted."""
    body = quantization_job(phase="Succeeded", observedGeneration=1, results={"degraded": False})
    body["spec"] = SPEC
    reconciler.reconcile(body, cache=cache_of([body]), logger=LOG)  # would raise on any API call


def test_the_next_generation_waits_while_the_old_job_and_its_pods_go(
    reconciler: reconcile.Reconciler, scheduled: list
) -> None:
    body = quantization_job(generation=2, phase="Running", observedGeneration=1)
    body["spec"] = SPEC
    going = batch_job("mnist-g1", active=1)
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    going["metadata"]["labels"] = {"edgequant.io/quantizationjob": "mnist", "edgequant.io/generation": "1"}
    reconciler.reconcile(body, cache=cache_of([body], [going]), logger=LOG)  # no create, no delete, no status write
    assert scheduled == []


def test_pending_is_written_only_when_the_pod_does_not_start_soon() -> None:
    created = status.Observation(
        phase=Phase.PENDING, reason=Reason.JOB_CREATED, message="batch Job mnist-g1 created", job_name="mnist-g1"
    )
    running = status.Observation(
        phase=Phase.RUNNING, reason=Reason.POD_RUNNING, message="pod is running", job_name="mnist-g1"
    )
    due = reconcile.pending_status_due
    assert not due(created, {}, generation=1, created_ago=1.0)
    assert due(created, {}, generation=1, created_ago=reconcile.PENDING_STATUS_DELAY)
    assert due(created, {}, generation=1, created_ago=None)  # not created by this process (e.g. after a restart)
    assert due(running, {}, generation=1, created_ago=0.0)
    # A status that already describes this generation (e.g. Running, then a retry's new pod) stays exact.
    assert due(created, {"phase": "Running", "observedGeneration": 1}, generation=1, created_ago=1.0)
    assert not due(created, {"phase": "Succeeded", "observedGeneration": 1}, generation=2, created_ago=1.0)
    # A scheduled pod without a stuck container is on its way: Pending only once it looks stuck.
    assert not due(created, {}, generation=1, created_ago=reconcile.PENDING_STATUS_DELAY, starting=True)
    assert due(created, {}, generation=1, created_ago=reconcile.PENDING_STATUS_STUCK_AFTER, starting=True)


def test_which_pods_are_on_their_way() -> None:
    assert status.pod_is_starting(pod("p1", "Pending"))  # created, not judged by the scheduler yet
    unschedulable = pod("p1", "Pending")
    unschedulable["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
    assert not status.pod_is_starting(unschedulable)  # e.g. the nodes are full
    pulling = pod("p1", "Pending")
    pulling["status"]["containerStatuses"] = [
        {"name": "quantizer", "state": {"waiting": {"reason": "ImagePullBackOff"}}}
    ]
    assert not status.pod_is_starting(pulling)
    assert not status.pod_is_starting(pod("p1", "Failed", exit_code=1))
    assert status.pod_fingerprint(unschedulable) != status.pod_fingerprint(pod("p1", "Pending"))  # asks for a refresh


def test_events_of_an_ended_pod_or_a_concluded_job_are_final(reconciler: reconcile.Reconciler) -> None:
    labels = {"edgequant.io/quantizationjob": "mnist", "edgequant.io/generation": "1"}
    ended = pod("mnist-g1-a", "Failed", exit_code=10)
    ended["metadata"].update(namespace="team-a", uid="pod-1", labels=labels)
    running = pod("mnist-g1-b", "Running")
    running["metadata"].update(namespace="team-a", uid="pod-2", labels=labels)
    done = batch_job("mnist-g1", failed=1, conditions=[("Failed", "PodFailurePolicy", "")])
    done["metadata"]["labels"] = labels
    assert reconciler.refresh_request(ended, kind="Pod", deleted=False).final  # type: ignore[union-attr]
    assert not reconciler.refresh_request(running, kind="Pod", deleted=False).final  # type: ignore[union-attr]
    assert reconciler.refresh_request(done, kind="Job", deleted=False).final  # type: ignore[union-attr]


def test_the_ttl_comes_from_the_spec_not_the_job_manifest() -> None:
    assert reconcile.ttl_after_finished({"spec": {"execution": {"ttlSecondsAfterFinished": 0}}}) == 0
    assert reconcile.ttl_after_finished({"spec": {"execution": {}}}) is None
    assert reconcile.ttl_after_finished({}) is None


def test_kopfs_bookkeeping_writes_nothing_to_the_object() -> None:
    """The last handled spec and handler progress stay in memory: no annotation patch per job."""
    body = kopf.Body(
        {"metadata": {"uid": "u1", "name": "a", "namespace": "ns", "annotations": {}}, "spec": {"method": "x"}}
    )
    diffbase = handlers.MemoryDiffBaseStorage(prefix="edgequant.io", key="last-handled-spec")
    patch = kopf.Patch()
    essence = diffbase.build(body=body)
    diffbase.store(body=body, patch=patch, essence=essence)
    assert not patch and diffbase.fetch(body=body) == essence
    diffbase.forget("u1")
    assert diffbase.fetch(body=body) is None

    progress = handlers.MemoryProgressStorage(prefix="edgequant.io")
    record = {"started": "2026-01-01T00:00:00", "retries": 1, "success": False, "failure": False}
    progress.store(key="h", record=record, body=body, patch=patch)  # type: ignore[arg-type]
    assert not patch and progress.fetch(key="h", body=body) == record  # type: ignore[arg-type]
    progress.purge(key="h", body=body, patch=patch)  # type: ignore[arg-type]
    assert not patch and progress.fetch(key="h", body=body) is None  # type: ignore[arg-type]
    # A delayed retry still wakes kopf up by touching the object (off the happy path).
    progress.touch(body=body, patch=patch, value="now")
    assert patch


def test_the_resync_timer_puts_no_finalizer_on_jobs() -> None:
    registry = kopf.OperatorRegistry()
    handlers.register_resync(60, registry)
    (timer,) = registry._spawning.get_all_handlers()
    assert timer.requires_finalizer is False
    empty = kopf.OperatorRegistry()
    handlers.register_resync(0, empty)
    assert not empty._spawning.get_all_handlers()


def test_a_pending_status_says_what_holds_the_pod_back() -> None:
    unscheduled = pod("mnist-g1-a", "Pending")
    unscheduled["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Too many pods.",
        }
    ]
    obs = status.observe_job(batch_job(active=1), [unscheduled])
    assert obs is not None and obs.reason == Reason.JOB_CREATED
    assert (
        obs.message
        == "batch Job mnist-g1 created, waiting for its pod: not scheduled (Unschedulable): 0/1 nodes are available: 1 Too many pods."
    )
    pulling = pod("mnist-g1-a", "Pending")
    pulling["status"]["containerStatuses"] = [
        {"name": "quantizer", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}
    ]
    obs = status.observe_job(batch_job(active=1), [pulling])
    assert obs is not None and obs.message.endswith("waiting for its pod: ImagePullBackOff: no such image")


def test_the_first_terminal_status_of_a_generation_is_the_one_that_records_the_result() -> None:
    running = {"phase": "Running", "observedGeneration": 1}
    failed = {"phase": "Failed", "observedGeneration": 1}
    assert reconcile.newly_terminal(running, failed)
    assert reconcile.newly_terminal({}, {"phase": "Succeeded", "observedGeneration": 1})
    assert not reconcile.newly_terminal(failed, {**failed, "message": "the Job concluded too"})
    assert reconcile.newly_terminal(failed, {"phase": "Succeeded", "observedGeneration": 2})  # a new generation
    assert not reconcile.newly_terminal({}, running)


def test_when_a_pod_exited_is_its_containers_finished_at() -> None:
    ended = pod("mnist-g1-a", "Failed", exit_code=10, finished="2026-01-01T00:00:10Z")
    assert status.exited_at(ended) == status.epoch_seconds("2026-01-01T00:00:00Z") + 10
    assert status.exited_at(pod("mnist-g1-b", "Running")) is None
