"""Kueue: the queue label, who owns a Job's suspend, and what a queued job's status says. Pure, no cluster."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import ValidationError

from edgequant.api.conditions import ConditionType, Phase, Reason
from edgequant.controller import cache, plan, queueing, status
from edgequant.controller.reconcile import Reconciler
from edgequant.controller.settings import OperatorSettings

from .conftest import batch_job, cache_of, pod, quantization_job
from .test_render import rendered, spec_of

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def queued_job(
    name: str = "mnist-g1", *, uid: str = "job-uid", suspend: bool = True, queue: str = "team-queue", **status: Any
) -> dict[str, Any]:
    job = batch_job(name, uid=uid, suspend=suspend, **status)
    job["metadata"]["labels"] = {
        queueing.QUEUE_NAME_LABEL: queue,
        "edgequant.io/quantizationjob": name.rsplit("-g", 1)[0],
    }
    return job


def workload(
    *conditions: tuple[str, str, str, str],
    job_uid: str = "job-uid",
    name: str = "job-mnist-g1-1a2b3",
    created: str = T0,
) -> dict[str, Any]:
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "Workload",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": f"wl-{name}",
            "creationTimestamp": created,
            "labels": {queueing.WORKLOAD_JOB_UID_LABEL: job_uid},
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": "mnist-g1", "uid": job_uid, "controller": True}
            ],
        },
        "status": {
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": m, "lastTransitionTime": T0}
                for t, s, r, m in conditions
            ]
        },
    }


PENDING = (
    "QuotaReserved",
    "False",
    "Pending",
    "couldn't assign flavors to pod set main: insufficient unused quota for cpu in flavor default, 1 more needed",
)


# --------------------------------------------------------------------------- the rendered Job


def test_a_queued_job_is_labelled_for_kueue_and_created_suspended() -> None:
    job = rendered(spec_of(queueName="team-queue"))
    assert job["metadata"]["labels"][queueing.QUEUE_NAME_LABEL] == "team-queue"
    assert job["spec"]["suspend"] is True
    assert queueing.QUEUE_NAME_LABEL not in job["spec"]["template"]["metadata"]["labels"]  # Kueue reads the Job's label


def test_without_a_queue_nothing_changes() -> None:
    job = rendered(spec_of())
    assert queueing.QUEUE_NAME_LABEL not in job["metadata"]["labels"] and job["spec"]["suspend"] is False


def test_spec_suspend_holds_a_queued_job_back_from_the_queue() -> None:
    """Labelled, a suspended Job would be started by Kueue on admission: it joins the queue when spec.suspend goes."""
    job = rendered(spec_of(queueName="team-queue", suspend=True))
    assert queueing.QUEUE_NAME_LABEL not in job["metadata"]["labels"] and job["spec"]["suspend"] is True


@pytest.mark.parametrize("bad", ["Team-Queue", "-q", "q-", "q_1", "a" * 64, ""])
def test_queue_name_must_be_a_label_value_and_an_object_name(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        spec_of(queueName=bad)
    assert "queueName" in str(err.value)


# --------------------------------------------------------------------------- who writes Job.spec.suspend


def test_the_operator_never_overrides_the_suspend_kueue_decided() -> None:
    admitted = queued_job(suspend=False, active=1)  # Kueue admitted it and unsuspended the Job
    assert queueing.suspend_to_enforce(admitted, spec_suspend=False) is None
    preempted = queued_job(suspend=True)  # Kueue evicted it and suspended the Job again
    assert queueing.suspend_to_enforce(preempted, spec_suspend=False) is None


def test_the_operator_still_owns_the_suspend_of_jobs_without_a_queue() -> None:
    assert queueing.suspend_to_enforce(batch_job(suspend=False), spec_suspend=True) is True
    assert queueing.suspend_to_enforce(batch_job(suspend=True), spec_suspend=False) is False
    assert queueing.suspend_to_enforce(batch_job(suspend=True), spec_suspend=True) is None
    done = batch_job(suspend=False, conditions=[("Complete", "CompletionsReached", "")])
    assert queueing.suspend_to_enforce(done, spec_suspend=True) is None
    assert queueing.suspend_to_enforce(None, spec_suspend=True) is None


def test_kueue_suspended_jobs_do_not_count_against_the_cap_and_admitted_ones_do() -> None:
    assert not plan.is_running(queued_job(suspend=True))
    assert plan.is_running(queued_job(suspend=False, active=1))
    jobs = {
        ("ns", "a"): [queued_job("a-g1", uid="u1", suspend=True)],
        ("ns", "b"): [queued_job("b-g1", uid="u2", suspend=False)],
    }
    states = cache.Cache(quantization_jobs={}, jobs=jobs, pods={}).job_states()
    assert states == {("ns", "a-g1"): False, ("ns", "b-g1"): True}
    # The cap is checked only before creating a Job that would run at once: a queued Job is created suspended.
    assert rendered(spec_of(queueName="q"), OperatorSettings(max_concurrent_jobs=1))["spec"]["suspend"] is True


# --------------------------------------------------------------------------- status of a queued job


def test_a_queued_job_shows_kueues_reason_and_message() -> None:
    obs = status.observe_job(queued_job(), [], workload(PENDING))
    assert obs is not None and obs.phase is Phase.QUEUED and obs.reason == "Pending"
    assert "insufficient unused quota for cpu" in obs.message and "team-queue" in obs.message


def test_before_kueue_made_a_workload_the_job_is_queued_with_our_reason() -> None:
    obs = status.observe_job(queued_job(), [], None)
    assert obs is not None and obs.phase is Phase.QUEUED and obs.reason == Reason.QUEUED
    assert "LocalQueue team-queue exist" in obs.message


@pytest.mark.parametrize(
    ("conditions", "reason"),
    [
        ([("QuotaReserved", "False", "Inadmissible", "LocalQueue team-queue doesn't exist")], "Inadmissible"),
        ([("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue cq")], "QuotaReserved"),
        (
            [
                ("QuotaReserved", "True", "QuotaReserved", ""),
                ("Admitted", "True", "Admitted", "The workload is admitted"),
            ],
            "Admitted",
        ),
        (
            [PENDING, ("Evicted", "True", "Preempted", "Preempted to accommodate a workload of higher priority")],
            "Preempted",
        ),
    ],
    ids=["inadmissible", "checks-running", "admitted", "preempted"],
)
def test_the_most_telling_workload_condition_wins(conditions: list[tuple[str, str, str, str]], reason: str) -> None:
    obs = status.observe_job(queued_job(), [], workload(*conditions))
    assert obs is not None and obs.phase is Phase.QUEUED and obs.reason == reason


def test_an_admitted_job_runs_like_any_other() -> None:
    running = queued_job(suspend=False, active=1, startTime=T0)
    obs = status.observe_job(
        running, [pod("mnist-g1-abcde", "Running")], workload(("Admitted", "True", "Admitted", ""))
    )
    assert obs is not None and obs.phase is Phase.RUNNING


def test_a_suspended_job_without_a_queue_is_suspended_not_queued() -> None:
    obs = status.observe_job(batch_job(suspend=True), [], workload(PENDING))
    assert obs is not None and obs.phase is Phase.SUSPENDED


def test_the_queued_condition_carries_kueues_reason_and_clears_on_admission() -> None:
    queued = status.observe_job(queued_job(), [], workload(PENDING))
    assert queued is not None
    first = status.desired_status({}, queued, generation=1, now=T0)
    cond = {c["type"]: c for c in first["conditions"]}
    assert first["phase"] == "Queued" and cond[ConditionType.QUEUED.value]["status"] == "True"
    assert (
        cond[ConditionType.QUEUED.value]["reason"] == "Pending"
        and "1 more needed" in cond[ConditionType.QUEUED.value]["message"]
    )
    assert cond[ConditionType.SUSPENDED.value]["status"] == "False"
    started = status.observe_job(queued_job(suspend=False, active=1, startTime=T1), [pod("mnist-g1-abcde", "Running")])
    assert started is not None
    later = status.desired_status(first, started, generation=1, now=T1)
    cond = {c["type"]: c for c in later["conditions"]}
    assert later["phase"] == "Running" and cond[ConditionType.QUEUED.value]["status"] == "False"
    assert cond[ConditionType.QUEUED.value]["lastTransitionTime"] == T1


def test_jobs_never_queued_get_no_queued_condition() -> None:
    obs = status.observe_job(batch_job(active=1), [pod("mnist-g1-abcde", "Running")])
    assert obs is not None
    assert ConditionType.QUEUED.value not in {
        c["type"] for c in status.desired_status({}, obs, generation=1, now=T0)["conditions"]
    }


# --------------------------------------------------------------------------- Workloads in the cache and as events


def test_workloads_are_indexed_by_the_uid_of_their_job() -> None:
    wl = workload(PENDING)
    wl["spec"] = {"podSets": [{"name": "main", "count": 1, "template": {"spec": {"containers": []}}}]}
    key, value = cache.workload_entry(wl) or (None, None)
    assert (
        key == ("team-a", "job-uid") and "spec" not in value and value["status"]["conditions"][0]["reason"] == "Pending"
    )
    unlabelled = workload(PENDING)
    del unlabelled["metadata"]["labels"]
    assert cache.workload_entry(unlabelled) is not None  # the owner reference names the Job too
    unlabelled["metadata"]["ownerReferences"] = []
    assert cache.workload_entry(unlabelled) is None


def test_the_cache_finds_the_workload_and_the_quantizationjob_of_a_job() -> None:
    job = queued_job()
    old = workload(("Evicted", "True", "Preempted", ""), name="old", created=T0)
    new = workload(PENDING, name="new", created=T1)
    c = cache.Cache(
        quantization_jobs={}, jobs={("team-a", "mnist"): [job]}, pods={}, workloads={("team-a", "job-uid"): [old, new]}
    )
    found = c.workload_of(job)
    assert found is not None and found["metadata"]["name"] == "new"
    assert c.workload_of(batch_job()) is None  # not queued: Kueue's Workloads are not ours to read
    assert c.quantization_job_of_job_uid("team-a", "job-uid") == "mnist"
    assert (
        c.quantization_job_of_job_uid("team-b", "job-uid") is None
        and c.quantization_job_of_job_uid("team-a", "other") is None
    )


def test_workload_condition_changes_refresh_and_repeats_do_not(reconciler: Reconciler) -> None:
    def tagged(wl: dict[str, Any]) -> dict[str, Any]:
        wl["metadata"]["annotations"] = {"edgequant.io/quantizationjob-name": "mnist"}
        return wl

    first = reconciler.refresh_request(tagged(workload(PENDING)), kind="Workload", deleted=False)
    assert first is not None and first.key == ("team-a", "mnist")
    # Served from a cache holding the QuantizationJob and no Job: nothing to write, but the Workload is now seen.
    reconciler.refresh(first, cache=cache_of([quantization_job()]), logger=logging.getLogger("test"))
    assert reconciler.refresh_request(tagged(workload(PENDING)), kind="Workload", deleted=False) is None
    admitted = tagged(workload(("QuotaReserved", "True", "QuotaReserved", ""), ("Admitted", "True", "Admitted", "")))
    assert reconciler.refresh_request(admitted, kind="Workload", deleted=False) is not None
