"""QuantizationJob status from a batch Job and its pods: pure decisions, one patch, Events on transitions."""

from __future__ import annotations

from typing import Any

from edgequant.api import v1alpha1 as api
from edgequant.api.conditions import Phase, Reason
from edgequant.api.exitcodes import ExitCode
from edgequant.api.result import WorkerResult
from edgequant.controller import status

from .conftest import batch_job, failure_message, pod, success_message

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def conditions(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in st["conditions"]}


def test_fresh_job_without_pods_is_pending() -> None:
    obs = status.observe_job(batch_job(), [])
    assert obs.phase is Phase.PENDING and obs.reason == Reason.JOB_CREATED and obs.attempts == 0


def test_running_pod_means_running() -> None:
    obs = status.observe_job(batch_job(active=1, startTime=T0), [pod("mnist-g1-abcde", "Running")])
    assert obs.phase is Phase.RUNNING and obs.reason == Reason.POD_RUNNING
    assert obs.attempts == 1 and obs.start_time == T0 and "mnist-g1-abcde" in obs.message


def test_completed_job_carries_the_worker_results() -> None:
    job = batch_job(
        succeeded=1,
        startTime=T0,
        completionTime=T1,
        conditions=[("SuccessCriteriaMet", "CompletionsReached", ""), ("Complete", "CompletionsReached", "")],
    )
    obs = status.observe_job(job, [pod("p1", "Succeeded", exit_code=0, message=success_message())])
    assert obs.phase is Phase.SUCCEEDED and obs.reason == Reason.COMPLETED and not obs.degraded
    assert obs.completion_time == T1 and obs.attempts == 1
    assert obs.results is not None
    assert obs.results["artifact"] == {"uri": "s3://b/out/m.dr.tflite", "sha256": "ab" * 32, "sizeBytes": 1234}
    assert obs.results["compressionRatio"] == 4.05 and obs.results["sensitiveLayers"] == ["conv1", "dense_1"]
    # The results are valid API status.
    api.Results.model_validate(obs.results)


def test_degraded_success() -> None:
    job = batch_job(succeeded=1, conditions=[("Complete", "CompletionsReached", "")])
    obs = status.observe_job(job, [pod("p1", "Succeeded", exit_code=0, message=success_message(degraded=True))])
    assert obs.phase is Phase.SUCCEEDED and obs.reason == Reason.COMPLETED_DEGRADED and obs.degraded
    st = status.desired_status({}, obs, generation=1, now=T1)
    assert conditions(st)["Degraded"]["status"] == "True"
    assert conditions(st)["Succeeded"]["status"] == "True"


def test_failed_job_takes_reason_and_message_from_the_worker() -> None:
    job = batch_job(
        failed=1,
        conditions=[
            ("FailureTarget", "PodFailurePolicy", "x"),
            ("Failed", "PodFailurePolicy", "Container quantizer for pod p1 failed with exit code 11"),
        ],
    )
    msg = "calibration: 20 usable samples, fewer than calibration.minSamples=100 (fix: add samples)"
    obs = status.observe_job(
        job, [pod("p1", "Failed", exit_code=11, message=failure_message(ExitCode.DATA_VALIDATION_FAILED, msg))]
    )
    assert obs.phase is Phase.FAILED and obs.reason == "DataValidationFailed" and obs.message == msg
    assert obs.attempts == 1


def test_failed_job_without_a_worker_result_falls_back_to_the_job_and_the_log_tail() -> None:
    job = batch_job(
        failed=3, conditions=[("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]
    )
    pods = [
        pod(
            f"p{i}",
            "Failed",
            created=f"2026-01-01T00:0{i}:00Z",
            exit_code=1,
            message=f"Traceback...\nRuntimeError: boom {i}",
        )
        for i in range(3)
    ]
    obs = status.observe_job(job, pods)
    assert obs.phase is Phase.FAILED and obs.reason == "BackoffLimitExceeded"
    assert "backoff limit" in obs.message and "code 1" in obs.message and "boom 2" in obs.message
    assert obs.attempts == 3


def test_failed_job_with_no_pods_left() -> None:
    job = batch_job(
        failed=1, conditions=[("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")]
    )
    obs = status.observe_job(job, [])
    assert obs.phase is Phase.FAILED and obs.reason == "DeadlineExceeded" and "deadline" in obs.message


def test_a_failed_attempt_while_the_job_retries() -> None:
    pods = [
        pod("p1", "Failed", exit_code=13, message=failure_message(ExitCode.STORAGE_UNAVAILABLE, "s3 endpoint refused")),
        pod("p2", "Pending", created=T1),
    ]
    obs = status.observe_job(batch_job(failed=1, active=1, backoff_limit=2), pods)
    assert obs.phase is Phase.RUNNING and obs.reason == Reason.RETRYING
    assert "StorageUnavailable" in obs.message and "backoffLimit 2" in obs.message and obs.attempts == 2


def test_a_non_retriable_exit_fails_at_once_without_waiting_for_the_job_controller() -> None:
    """The podFailurePolicy fails the Job on exit 10-12 for sure: report it from the pod, and the Job agrees later."""
    no_retry = pod(
        "p1",
        "Failed",
        exit_code=10,
        message=failure_message(ExitCode.INVALID_INPUT, "no model"),
        finished="2026-01-01T00:01:00Z",
    )
    early = status.observe_job(batch_job(active=1), [no_retry])  # the Job watch has not even counted the failure yet
    assert (
        early is not None
        and early.phase is Phase.FAILED
        and early.reason == "InvalidInput"
        and early.message == "no model"
    )
    assert early.completion_time == "2026-01-01T00:01:00Z" and early.attempts == 1
    for job in (
        batch_job(failed=1, conditions=[("FailureTarget", "PodFailurePolicy", "")]),
        batch_job(
            failed=1, conditions=[("FailureTarget", "PodFailurePolicy", ""), ("Failed", "PodFailurePolicy", "exit 10")]
        ),
    ):
        assert status.observe_job(job, [no_retry]) == early  # the same status: nothing more to write


def test_a_retriable_attempt_that_uses_up_the_backoff_limit_waits_for_the_job() -> None:
    """Disruptions do not count against backoffLimit, so only the Job controller knows whether this was the last try."""
    last_try = [
        pod(f"p{i}", "Failed", created=f"2026-01-01T00:0{i}:00Z", exit_code=1, message="boom") for i in range(3)
    ]
    assert status.observe_job(batch_job(failed=3, backoff_limit=2), last_try) is None
    assert status.observe_job(batch_job(failed=2, backoff_limit=2), last_try[:2]).reason == Reason.RETRYING
    failed = status.observe_job(
        batch_job(
            failed=3,
            backoff_limit=2,
            conditions=[("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")],
        ),
        last_try,
    )
    assert failed is not None and failed.phase is Phase.FAILED and failed.completion_time == "2026-01-01T00:10:00Z"


def test_a_succeeded_pod_completes_at_once_and_the_jobs_complete_condition_agrees() -> None:
    done = pod("p1", "Succeeded", exit_code=0, message=success_message(), finished="2026-01-01T00:02:00Z")
    early = status.observe_job(batch_job(active=1), [done])
    assert early is not None and early.phase is Phase.SUCCEEDED and early.results is not None
    assert early.completion_time == "2026-01-01T00:02:00Z"
    for job in (
        batch_job(succeeded=1, conditions=[("SuccessCriteriaMet", "CompletionsReached", "")]),
        batch_job(
            succeeded=1,
            completionTime="2026-01-01T00:02:30Z",
            conditions=[("SuccessCriteriaMet", "CompletionsReached", ""), ("Complete", "CompletionsReached", "")],
        ),
    ):
        assert status.observe_job(job, [done]) == early


def test_suspended_job() -> None:
    obs = status.observe_job(batch_job(suspend=True), [])
    assert obs.phase is Phase.SUSPENDED
    st = status.desired_status({}, obs, generation=2, now=T0)
    assert conditions(st)["Suspended"]["status"] == "True" and st["phase"] == "Suspended"


def test_garbage_termination_message_is_not_a_result() -> None:
    assert status.worker_result(pod("p", "Failed", exit_code=1, message="Segmentation fault")) is None
    assert status.worker_result(pod("p", "Running")) is None


def test_desired_status_has_metav1_conditions_for_every_type() -> None:
    obs = status.observe_job(batch_job(active=1, startTime=T0), [pod("p1", "Running")])
    st = status.desired_status({}, obs, generation=4, now=T0)
    conds = conditions(st)
    assert set(conds) == {"Running", "Succeeded", "Failed", "Degraded", "Suspended"}
    for cond in conds.values():
        assert set(cond) == {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}
        assert cond["observedGeneration"] == 4 and cond["lastTransitionTime"] == T0
        assert cond["reason"][0].isupper() and " " not in cond["reason"]
    assert (
        conds["Running"]["status"] == "True"
        and conds["Succeeded"]["status"] == "Unknown"
        and conds["Failed"]["status"] == "False"
    )
    assert st["observedGeneration"] == 4 and st["phase"] == "Running" and st["attempts"] == 1
    api.QuantizationJobStatus.model_validate(st)


def test_last_transition_time_moves_only_when_the_condition_status_does() -> None:
    running = status.observe_job(batch_job(active=1), [pod("p1", "Running")])
    first = status.desired_status({}, running, generation=1, now=T0)
    again = status.desired_status(first, running, generation=1, now=T1)
    assert again == first
    done = status.observe_job(
        batch_job(succeeded=1, conditions=[("Complete", "CompletionsReached", "")]),
        [pod("p1", "Succeeded", exit_code=0, message=success_message())],
    )
    final = conditions(status.desired_status(first, done, generation=1, now=T1))
    assert final["Running"]["status"] == "False" and final["Running"]["lastTransitionTime"] == T1
    assert final["Failed"]["lastTransitionTime"] == T0  # False before, False now


def test_set_condition_replaces_by_type() -> None:
    conds: list[dict[str, Any]] = []
    status.set_condition(
        conds, status.ConditionType.FAILED, status.ConditionStatus.FALSE, reason="A", message="", generation=1, now=T0
    )
    status.set_condition(
        conds, status.ConditionType.FAILED, status.ConditionStatus.TRUE, reason="B", message="m", generation=2, now=T1
    )
    assert conds == [
        {
            "type": "Failed",
            "status": "True",
            "reason": "B",
            "message": "m",
            "lastTransitionTime": T1,
            "observedGeneration": 2,
        }
    ]


def test_diff_patches_only_what_changed_and_posts_events_on_transitions() -> None:
    pending = status.desired_status({}, status.observe_job(batch_job(), []), generation=1, now=T0)
    change = status.diff({}, pending)
    assert change.changed and change.patch == {k: v for k, v in pending.items() if v is not None}
    assert [(e.type, e.reason) for e in change.events] == [("Normal", "JobCreated")]

    assert not status.diff(pending, dict(pending)).changed
    # Counters of a waiting or running run change no phase: no write of their own (one write per transition).
    pod_created = status.desired_status(
        pending, status.observe_job(batch_job(active=1, startTime=T1), [pod("p1", "Pending")]), generation=1, now=T1
    )
    assert pod_created["attempts"] == 1 and not status.diff(pending, pod_created).changed

    running = status.desired_status(
        pending, status.observe_job(batch_job(active=1), [pod("p1", "Running")]), generation=1, now=T1
    )
    change = status.diff(pending, running)
    assert "results" not in change.patch and change.patch["phase"] == "Running"
    assert [e.reason for e in change.events] == ["PodRunning"]
    started = status.desired_status(
        running, status.observe_job(batch_job(active=1, startTime=T1), [pod("p1", "Running")]), generation=1, now=T1
    )
    assert started["startTime"] == T1 and not status.diff(running, started).changed

    failed_obs = status.observe_job(
        batch_job(failed=1, conditions=[("Failed", "PodFailurePolicy", "")]),
        [pod("p1", "Failed", exit_code=12, message=failure_message(ExitCode.ACCEPTANCE_FAILED, "drop 0.2 > 0.01"))],
    )
    failed = status.desired_status(running, failed_obs, generation=1, now=T1)
    events = status.diff(running, failed).events
    assert [(e.type, e.reason) for e in events] == [("Warning", "AcceptanceFailed")] and "drop 0.2" in events[0].message


def test_each_retry_posts_a_warning() -> None:
    first = status.observe_job(
        batch_job(failed=1, active=1), [pod("p1", "Failed", exit_code=1, message="x"), pod("p2", "Pending", created=T1)]
    )
    prev = status.desired_status({}, first, generation=1, now=T0)
    second = status.observe_job(
        batch_job(failed=2, active=1),
        [
            pod("p1", "Failed", exit_code=1, message="x"),
            pod("p2", "Failed", created=T1, exit_code=1, message="y"),
            pod("p3", "Pending", created="2026-01-01T00:09:00Z"),
        ],
    )
    change = status.diff(prev, status.desired_status(prev, second, generation=1, now=T1))
    assert [(e.type, e.reason) for e in change.events] == [("Warning", "Retrying")]


def test_a_new_generation_is_a_transition_even_in_the_same_phase() -> None:
    obs = status.observe_job(batch_job(), [])
    g1 = status.desired_status({}, obs, generation=1, now=T0)
    change = status.diff(g1, status.desired_status(g1, obs, generation=2, now=T1))
    assert change.patch["observedGeneration"] == 2 and len(change.events) == 1


def test_a_terminal_status_of_the_same_generation_is_final() -> None:
    done = status.observe_job(
        batch_job(succeeded=1, conditions=[("Complete", "CompletionsReached", "")]),
        [pod("p1", "Succeeded", exit_code=0, message=success_message())],
    )
    final = status.desired_status({}, done, generation=1, now=T0)
    stale = status.observe_job(batch_job(active=1), [pod("p1", "Running")])
    assert not status.settle(final, stale, generation=1)
    assert status.settle(final, stale, generation=2)
    assert status.settle(final, done, generation=1)


def test_invalid_spec_and_capacity_observations() -> None:
    st = status.desired_status({}, status.invalid_spec("spec.method: bad"), generation=1, now=T0)
    assert (
        st["phase"] == "Failed"
        and conditions(st)["Failed"]["reason"] == "InvalidSpec"
        and st["message"] == "spec.method: bad"
    )
    wait = status.desired_status({}, status.waiting_for_capacity(5, 5), generation=1, now=T0)
    assert wait["phase"] == "Pending" and wait["reason"] == "WaitingForCapacity" and "5" in wait["message"]
    rejected = status.desired_status(
        {}, status.job_rejected('Job.batch "x" is invalid: affinity'), generation=1, now=T0
    )
    assert rejected["phase"] == "Failed" and rejected["reason"] == "InvalidSpec" and "affinity" in rejected["message"]
    forbidden = status.desired_status({}, status.job_forbidden("exceeded quota"), generation=1, now=T0)
    assert forbidden["phase"] == "Pending" and forbidden["reason"] == "JobForbidden"


def test_a_concluded_job_whose_pod_result_has_not_arrived_yet_waits_for_it() -> None:
    """The pod watch may lag the Job watch: never conclude without the worker's result while it is on the way."""
    job = batch_job(succeeded=1, conditions=[("Complete", "CompletionsReached", "")])
    assert status.observe_job(job, [pod("p1", "Running")]) is None  # nothing to write: the pod's event follows
    assert (
        status.observe_job(job, [pod("p1", "Succeeded", exit_code=0, message=success_message())]).phase
        is Phase.SUCCEEDED
    )
    # No pod left at all (garbage-collected): conclude without results rather than wait forever.
    gone = status.observe_job(job, [])
    assert gone.phase is Phase.SUCCEEDED and gone.results is None
    failed = batch_job(failed=1, conditions=[("Failed", "DeadlineExceeded", "deadline")])
    deleting = pod("p1", "Running")
    deleting["metadata"]["deletionTimestamp"] = T1
    assert status.observe_job(failed, [deleting]).phase is Phase.FAILED


def test_fingerprints_ignore_what_the_status_does_not_show() -> None:
    running = pod("p1", "Running")
    same = pod("p1", "Running")
    same["metadata"]["finalizers"] = ["batch.kubernetes.io/job-tracking"]
    assert status.pod_fingerprint(running) == status.pod_fingerprint(same)
    assert status.pod_fingerprint(running) != status.pod_fingerprint(pod("p1", "Failed", exit_code=1))
    ready = batch_job(active=1)
    ready["status"]["ready"] = 1
    assert status.job_fingerprint(batch_job(active=1)) == status.job_fingerprint(ready)
    assert status.job_fingerprint(batch_job(active=1)) != status.job_fingerprint(
        batch_job(failed=1, conditions=[("FailureTarget", "PodFailurePolicy", "")])
    )


def test_a_success_whose_termination_message_is_unreadable_says_so() -> None:
    job = batch_job(succeeded=1, conditions=[("Complete", "CompletionsReached", "")])
    for message in ('{"exitCode":0,"reason":"Completed","results":{"artif', "Killed", None):
        obs = status.observe_job(job, [pod("p1", "Succeeded", exit_code=0, message=message)])
        assert obs is not None and obs.phase is Phase.SUCCEEDED and obs.reason == Reason.RESULTS_UNREADABLE
        assert obs.results is None
        assert "termination message" in obs.message and "report.json under spec.output.uri" in obs.message
        st = status.desired_status({}, obs, generation=1, now=T1)
        assert conditions(st)["Succeeded"]["reason"] == "ResultsUnreadable"


def test_shortened_results_are_flagged_in_the_status_message() -> None:
    from edgequant.api.result import SHORTENED_NOTE, WorkerResult

    long_uri = "s3://b/" + "p" * 1800
    results = api.Results(
        artifact=api.ArtifactInfo(uri=long_uri + "/m.tflite", sha256="a" * 64, size_bytes=1),
        report_uri=long_uri + "/report.json",
    )
    message = WorkerResult.for_exit(ExitCode.SUCCESS, "published", results).to_termination_message()
    job = batch_job(succeeded=1, conditions=[("Complete", "CompletionsReached", "")])
    obs = status.observe_job(job, [pod("p1", "Succeeded", exit_code=0, message=message)])
    assert obs is not None and obs.reason == Reason.COMPLETED and SHORTENED_NOTE in obs.message
    assert obs.results is not None and obs.results["artifact"]["uri"] == long_uri + "/m.tflite"


def test_the_terminal_status_says_which_stage_the_worker_reached() -> None:
    """status.progress comes with the terminal status (no write of its own): the stage from the termination message."""
    done = WorkerResult.for_exit(ExitCode.SUCCESS, "published").model_copy(update={"stage": "9/9 upload"})
    job = batch_job(succeeded=1, conditions=[("Complete", "CompletionsReached", "")])
    obs = status.observe_job(job, [pod("p1", "Succeeded", exit_code=0, message=done.to_termination_message())])
    assert obs.progress == {"stage": "9/9 upload", "message": "all stages done"}
    assert status.desired_status({}, obs, generation=1, now=T1)["progress"] == obs.progress
    stopped = WorkerResult.for_exit(ExitCode.INVALID_INPUT, "no model").model_copy(update={"stage": "1/9 fetch"})
    failed = batch_job(failed=1, conditions=[("Failed", "PodFailurePolicy", "")])
    obs = status.observe_job(failed, [pod("p1", "Failed", exit_code=10, message=stopped.to_termination_message())])
    assert obs.progress == {"stage": "1/9 fetch", "message": "stopped in stage 1/9 fetch"}
    api.QuantizationJobStatus.model_validate(status.desired_status({}, obs, generation=1, now=T1))
    # A worker that predates the field (or died before its first stage): no progress, nothing else changes.
    obs = status.observe_job(
        failed, [pod("p1", "Failed", exit_code=10, message=failure_message(ExitCode.INVALID_INPUT, "no model"))]
    )
    assert obs.progress is None and obs.reason == "InvalidInput"
    running = status.observe_job(batch_job(active=1), [pod("p1", "Running")])
    assert "progress" not in status.diff({}, status.desired_status({}, running, generation=1, now=T1)).patch


def _oom_killed(name: str, created: str, limit: str | None = "3Gi") -> dict[str, Any]:
    p = pod(name, "Failed", created=created, exit_code=137)
    p["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] = "OOMKilled"
    if limit:
        p["spec"] = {"containers": [{"name": "quantizer", "resources": {"limits": {"memory": limit}}}]}
    return p


def test_an_oom_kill_is_reported_as_oom_killed_with_the_fix_not_as_an_exit_code() -> None:
    job = batch_job(
        failed=2,
        backoff_limit=1,
        conditions=[("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")],
    )
    obs = status.observe_job(job, [_oom_killed("mnist-g1-a", T0), _oom_killed("mnist-g1-b", T1)])
    assert obs.phase is Phase.FAILED and obs.reason == Reason.OOM_KILLED == "OOMKilled"
    assert "(3Gi)" in obs.message and "spec.resources.limits.memory" in obs.message and "137" not in obs.message
    # While the Job still retries, the Retrying message says the same.
    retrying = status.observe_job(batch_job(failed=1, active=1, backoff_limit=2), [_oom_killed("mnist-g1-a", T0)])
    assert (
        retrying.reason == Reason.RETRYING and "OOMKilled" in retrying.message and "limits.memory" in retrying.message
    )
    # A plain crash (no OOMKilled reason) still says its exit code.
    crash = pod("mnist-g1-c", "Failed", created=T0, exit_code=137)
    plain = status.observe_job(
        batch_job(failed=1, backoff_limit=0, conditions=[("Failed", "BackoffLimitExceeded", "limit")]), [crash]
    )
    assert plain.reason == "BackoffLimitExceeded" and "137" in plain.message


def test_a_policy_refusal_fails_the_generation_with_the_message() -> None:
    obs = status.policy_refused("refused by the cluster's QuantizationJob policy: spec.execution.image: ...")
    st = status.desired_status({}, obs, generation=2, now=T0)
    assert st["phase"] == "Failed" and st["reason"] == "PolicyViolation" and st["jobName"] is None
    assert conditions(st)["Failed"]["message"].startswith("refused by the cluster's QuantizationJob policy")


def test_a_run_past_its_deadline_says_which_field_to_raise() -> None:
    job = batch_job(
        failed=1, conditions=[("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")]
    )
    obs = status.observe_job(job, [pod("mnist-g1-a", "Failed", created=T0, exit_code=143)])
    assert obs.phase is Phase.FAILED and obs.reason == Reason.DEADLINE_EXCEEDED
    assert "spec.execution.activeDeadlineSeconds" in obs.message and "longer than specified deadline" in obs.message
