"""Create-or-adopt decisions and Job names: pure."""

from __future__ import annotations

import pytest

from edgequant.controller import naming, plan

from .conftest import batch_job


def test_adopts_the_job_of_this_generation_and_drops_older_ones() -> None:
    jobs = [batch_job("mnist-g1"), batch_job("mnist-g2"), batch_job("mnist-g3")]
    p = plan.plan_jobs(jobs, name="mnist", uid="qj-uid", generation=2, previous_status={})
    assert p.current is jobs[1]
    assert p.obsolete == ["mnist-g1", "mnist-g3"]
    assert not p.must_create


def test_nothing_found_means_create() -> None:
    p = plan.plan_jobs(
        [], name="mnist", uid="qj-uid", generation=1, previous_status={"phase": "Pending", "observedGeneration": 1}
    )
    assert p.current is None and p.must_create


def test_a_deleted_namesakes_job_is_not_adopted() -> None:
    """Delete and re-create a QuantizationJob quickly: the old Job (other owner uid) may still be there."""
    old = batch_job("mnist-g1", owner_uid="old-uid")
    p = plan.plan_jobs([old], name="mnist", uid="qj-uid", generation=1, previous_status={})
    assert p.current is None and p.obsolete == ["mnist-g1"]
    assert not p.must_create  # its deletion comes first; its DELETED event creates ours


def test_jobs_already_being_deleted_are_left_alone_and_waited_for() -> None:
    """A spec edit: generation 2 starts only once generation 1's Job is gone, and it goes only after its pods."""
    going = batch_job("mnist-g1")
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    p = plan.plan_jobs([going], name="mnist", uid="qj-uid", generation=2, previous_status={})
    assert p.obsolete == [] and p.leaving == ["mnist-g1"] and not p.must_create
    assert plan.plan_jobs([], name="mnist", uid="qj-uid", generation=2, previous_status={}).must_create


def test_this_generations_job_being_deleted_is_not_adopted() -> None:
    """Deleted by hand in the foreground: the new Job of the same name waits until the old one (and its pod) is gone."""
    going = batch_job("mnist-g1")
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    p = plan.plan_jobs([going], name="mnist", uid="qj-uid", generation=1, previous_status={})
    assert p.current is None and p.leaving == ["mnist-g1"] and not p.must_create


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_a_finished_generation_is_never_started_again(phase: str) -> None:
    """E.g. after ttlSecondsAfterFinished removed its Job and the operator restarts."""
    p = plan.plan_jobs(
        [], name="mnist", uid="qj-uid", generation=3, previous_status={"phase": phase, "observedGeneration": 3}
    )
    assert p.already_finished and not p.must_create
    newer = plan.plan_jobs(
        [], name="mnist", uid="qj-uid", generation=4, previous_status={"phase": phase, "observedGeneration": 3}
    )
    assert newer.must_create


def test_running_and_finished_jobs() -> None:
    assert plan.is_running(batch_job(active=1))
    assert not plan.is_running(batch_job(suspend=True))
    done = batch_job(succeeded=1, conditions=[("Complete", "CompletionsReached", "")])
    assert plan.is_finished(done) and not plan.is_running(done)
    failing = batch_job(failed=1, conditions=[("FailureTarget", "PodFailurePolicy", "")])
    assert not plan.is_finished(failing) and plan.is_running(failing)


def test_job_names_are_deterministic_valid_and_distinct() -> None:
    assert naming.job_name("mnist", 7) == "mnist-g7"
    long = "a" * 60 + "-x"
    other = "a" * 60 + "-y"
    name = naming.job_name(long, 12)
    assert name == naming.job_name(long, 12)
    assert len(name) <= 57 and name.endswith("-g12")  # pod names add "-xxxxx" and stay label-safe
    assert name != naming.job_name(other, 12)
    assert naming.job_name(long, 13) != name


def test_a_job_of_a_newer_generation_means_the_object_was_read_too_early() -> None:
    newer = batch_job("mnist-g3")
    newer["metadata"]["labels"] = {"edgequant.io/generation": "3"}
    older = batch_job("mnist-g1")
    older["metadata"]["labels"] = {"edgequant.io/generation": "1"}
    p = plan.plan_jobs([older, newer], name="mnist", uid="qj-uid", generation=2, previous_status={})
    assert p.stale and not p.must_create
    assert p.obsolete == ["mnist-g1"]  # never the newer one
