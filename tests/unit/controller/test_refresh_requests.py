"""Which Job/pod events cause a status refresh (Reconciler.refresh_request): no API involved."""

from __future__ import annotations

import logging

from edgequant.controller import reconcile

from .conftest import batch_job, cache_of, pod, quantization_job


def labelled(obj: dict, uid: str) -> dict:
    obj["metadata"].update(
        namespace="team-a", uid=uid, labels={"edgequant.io/quantizationjob": "mnist", "edgequant.io/generation": "1"}
    )
    return obj


def test_events_that_change_nothing_the_status_shows_cause_no_refresh(reconciler: reconcile.Reconciler) -> None:
    running = labelled(pod("mnist-g1-a", "Running"), "pod-1")
    first = reconciler.refresh_request(running, kind="Pod", deleted=False)
    assert first is not None and first.key == ("team-a", "mnist")
    # Until a refresh served it, the same state asks again; afterwards it does not.
    assert reconciler.refresh_request(running, kind="Pod", deleted=False) is not None
    reconciler.refresh(
        first, cache=cache_of([quantization_job()]), logger=logging.getLogger("test")
    )  # no Job: nothing to write
    assert reconciler.seen(first.source_uid) == first.seen
    again = labelled(pod("mnist-g1-a", "Running"), "pod-1")
    again["metadata"]["finalizers"] = ["batch.kubernetes.io/job-tracking"]
    assert reconciler.refresh_request(again, kind="Pod", deleted=False) is None
    ended = labelled(pod("mnist-g1-a", "Failed", exit_code=13), "pod-1")
    later = reconciler.refresh_request(ended, kind="Pod", deleted=False)
    assert later is not None and later.ticket > first.ticket


def test_deleted_pods_are_forgotten_and_deleted_jobs_refresh(reconciler: reconcile.Reconciler) -> None:
    gone = labelled(pod("mnist-g1-b", "Failed", exit_code=1), "pod-2")
    assert reconciler.refresh_request(gone, kind="Pod", deleted=True) is None
    job = labelled(batch_job("mnist-g1", active=1), "job-2")
    assert reconciler.refresh_request(job, kind="Job", deleted=True) is not None


def test_objects_without_our_labels_are_ignored(reconciler: reconcile.Reconciler) -> None:
    assert reconciler.refresh_request(batch_job("other-g1"), kind="Job", deleted=False) is None
