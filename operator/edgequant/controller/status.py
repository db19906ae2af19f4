"""QuantizationJob status: the one place that decides it, from the batch Job and its pods. Pure.

``observe_job`` turns a Job and its pods into an Observation; ``desired_status``
builds the status from a snapshot of the previous one with ``set_condition``;
``diff`` says what changed (one patch, only if something did) and which
transitions deserve an Event; ``settle`` keeps a terminal status final.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from pydantic import ValidationError

from edgequant.api.conditions import ConditionStatus, ConditionType, Phase, Reason
from edgequant.api.exitcodes import NON_RETRIABLE
from edgequant.api.result import SHORTENED_NOTE, WorkerResult
from edgequant.controller import queueing


@dataclass(frozen=True)
class Observation:
    """What one reconcile decided, before it is merged into the previous status."""

    phase: Phase
    reason: str
    message: str
    job_name: str | None = None
    attempts: int | None = None
    start_time: str | None = None
    completion_time: str | None = None
    results: dict[str, Any] | None = None
    degraded: bool = False
    progress: dict[str, str] | None = None


class _JobFacts(TypedDict):
    """The Observation fields every phase reports about the batch Job."""

    job_name: str | None
    attempts: int
    start_time: str | None


class _ConditionStamp(TypedDict):
    """The set_condition arguments every condition of one observation shares."""

    generation: int
    now: str


@dataclass(frozen=True)
class Transition:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class StatusChange:
    patch: dict[str, Any] = field(default_factory=dict)
    events: list[Transition] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.patch)


# --------------------------------------------------------------------------- reading Jobs and pods


def _job_condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        state = (cs.get("state") or {}).get("terminated")
        if state:
            return dict(state)
    return None


def worker_result(pod: dict[str, Any]) -> WorkerResult | None:
    """The worker's compact result from the pod's termination message, if it wrote one."""
    state = _terminated(pod)
    if not state or not state.get("message"):
        return None
    try:
        return WorkerResult.from_termination_message(state["message"])
    except (ValueError, ValidationError, json.JSONDecodeError):
        return None


def _unreadable_message(pod: dict[str, Any] | None) -> str:
    """Why a succeeded run shows no results: the worker's termination message is missing or not a WorkerResult."""
    text = ((_terminated(pod) or {}).get("message") or "").strip() if pod is not None else ""
    what = f"is not readable ({len(text.encode())} bytes, not the worker's JSON result)" if text else "is missing"
    return (
        f"the quantizer exited successfully but its termination message {what}, so the status shows no results; "
        "read report.json under spec.output.uri, and check that spec.execution.image runs edgequant-worker"
    )


def progress_of(result: WorkerResult | None, *, succeeded: bool) -> dict[str, str] | None:
    """status.progress of a finished run: the stage the worker reached, from its termination message.

    Only the terminal status carries it: a live stage would cost a status write per stage (the pod log has them).
    """
    if result is None or not result.stage:
        return None
    return {"stage": result.stage, "message": "all stages done" if succeeded else f"stopped in stage {result.stage}"}


def _by_age(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        pods,
        key=lambda p: (
            (p.get("metadata") or {}).get("creationTimestamp") or "",
            (p.get("metadata") or {}).get("name") or "",
        ),
    )


DEADLINE_FIX = (
    "the run outlived its activeDeadlineSeconds and was stopped: raise spec.execution.activeDeadlineSeconds "
    "(the operator's default applies when it is unset), or check for a hung storage endpoint"
)


def _memory_limit(pod: dict[str, Any]) -> str | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        if limit:
            return str(limit)
    return None


def oom_message(pod: dict[str, Any]) -> str | None:
    """The reason and fix when the kernel killed the quantizer for exceeding its memory limit, else None."""
    if (_terminated(pod) or {}).get("reason") != "OOMKilled":
        return None
    limit = _memory_limit(pod)
    return (
        f"the quantizer was killed for using more memory than its limit{f' ({limit})' if limit else ''} (OOMKilled); "
        "raise spec.resources.limits.memory, or lower calibration.samples, evaluation.samples or training.batchSize"
    )


def _fallback_message(pod: dict[str, Any]) -> str:
    oom = oom_message(pod)
    if oom is not None:
        return oom
    state = _terminated(pod) or {}
    text = (state.get("message") or "").strip()
    code = state.get("exitCode")
    tail = text.splitlines()[-1] if text else ""
    return f"quantizer exited with code {code}" + (f": {tail}" if tail else "")


def observe_job(
    job: dict[str, Any], pods: list[dict[str, Any]], workload: dict[str, Any] | None = None
) -> Observation | None:
    """Decide phase, reason, message and results from a batch Job and its pods; None: wait for the next event.

    ``workload``: the Kueue Workload of a queued Job, whose conditions say why it waits.
    """
    name = (job.get("metadata") or {}).get("name")
    jstatus = job.get("status") or {}
    counted = int(jstatus.get("failed") or 0) + int(jstatus.get("succeeded") or 0) + int(jstatus.get("active") or 0)
    attempts = max(counted, len(pods))
    common: _JobFacts = {"job_name": name, "attempts": attempts, "start_time": jstatus.get("startTime")}
    ordered = _by_age(pods)

    complete = _job_condition(job, "Complete")
    failed = _job_condition(job, "Failed")
    live = [
        p
        for p in ordered
        if _pod_phase(p) not in ("Succeeded", "Failed") and not (p.get("metadata") or {}).get("deletionTimestamp")
    ]
    if (
        (complete or failed)
        and live
        and not any(_pod_phase(p) == ("Succeeded" if complete else "Failed") for p in ordered)
    ):
        return None  # the Job has concluded but its pod's final state (the result) has not reached us yet
    suspended = bool((job.get("spec") or {}).get("suspend"))
    # A pod's exit can seal the Job's fate before the Job controller records it (that takes seconds, minutes on a
    # busy control plane): the Job runs one pod to one completion, and the podFailurePolicy fails it on the worker's
    # non-retriable exit codes. Such a pod is reported at once; the Job's condition, when it comes, agrees.
    sealing = None if suspended or live else _sealing_pod(ordered)

    if complete or (sealing is not None and _pod_phase(sealing) == "Succeeded"):
        done = [p for p in ordered if _pod_phase(p) == "Succeeded"]
        result = worker_result(done[-1]) if done else None
        results = result.results.to_wire() if result and result.results else None
        degraded = bool(results and results.get("degraded"))
        reason: str = Reason.COMPLETED_DEGRADED if degraded else Reason.COMPLETED
        if result is None:
            # Never a silent success without results: say that they are missing and where the full record is.
            reason, message = Reason.RESULTS_UNREADABLE, _unreadable_message(done[-1] if done else None)
        else:
            message = f"{result.message} ({SHORTENED_NOTE})" if result.shortened else result.message
        return Observation(
            phase=Phase.SUCCEEDED,
            reason=reason,
            message=message,
            completion_time=_finished_at(sealing)
            or jstatus.get("completionTime")
            or (complete or {}).get("lastTransitionTime"),
            results=results,
            degraded=degraded,
            progress=progress_of(result, succeeded=True),
            **common,
        )

    if failed or sealing is not None:
        failed_pods = [p for p in ordered if (p.get("status") or {}).get("phase") == "Failed"]
        last = failed_pods[-1] if failed_pods else None
        result = worker_result(last) if last else None
        if result is not None:
            reason, message = result.reason, result.message
        elif last is not None and oom_message(last) is not None:
            reason, message = Reason.OOM_KILLED, str(oom_message(last))
        else:
            reason = (failed or {}).get("reason") or "JobFailed"
            message = (failed or {}).get("message") or ""
            if last is not None:
                message = f"{message}; {_fallback_message(last)}" if message else _fallback_message(last)
            if reason == Reason.DEADLINE_EXCEEDED:
                message = f"{message}; {DEADLINE_FIX}" if message else DEADLINE_FIX
        results = result.results.to_wire() if result and result.results else None
        return Observation(
            phase=Phase.FAILED,
            reason=reason,
            message=message,
            completion_time=_finished_at(sealing) or (failed or {}).get("lastTransitionTime"),
            results=results,
            progress=progress_of(result, succeeded=False),
            **common,
        )

    if suspended:
        queued = queueing.queued_reason(job, workload)
        if queued is not None:
            return Observation(phase=Phase.QUEUED, reason=queued[0], message=queued[1], **common)
        return Observation(
            phase=Phase.SUSPENDED,
            reason=Reason.SUSPENDED,
            message="the batch Job is suspended (spec.suspend)",
            **common,
        )

    running = [p for p in ordered if _pod_phase(p) == "Running"]
    if running:
        return Observation(
            phase=Phase.RUNNING,
            reason=Reason.POD_RUNNING,
            message=f"pod {running[-1]['metadata']['name']} is running",
            **common,
        )
    failed_pods = [p for p in ordered if _pod_phase(p) == "Failed"]
    if failed_pods:
        last = failed_pods[-1]
        if _job_condition(job, "FailureTarget") or _backoff_used_up(job, attempts=len(failed_pods)):
            return None  # the Job is about to fail: its Failed condition, with the same result, comes next
        # A retriable attempt failed and the Job has not: the Job controller starts (or has started) another pod.
        result = worker_result(last)
        why = f"{result.reason}: {result.message}" if result else _fallback_message(last)
        backoff = (job.get("spec") or {}).get("backoffLimit")
        message = f"attempt {len(failed_pods)} failed ({why}); retrying (backoffLimit {backoff})"
        return Observation(phase=Phase.RUNNING, reason=Reason.RETRYING, message=message[:1024], **common)
    if any(_pod_phase(p) == "Succeeded" for p in ordered):
        return None  # a finished quantizer beside a pod still starting: the Job's own condition decides
    why = next((w for w in map(_why_waiting, reversed(ordered)) if w), "")
    message = f"batch Job {name} created, waiting for its pod" + (f": {why}" if why else "")
    return Observation(phase=Phase.PENDING, reason=Reason.JOB_CREATED, message=message[:1024], **common)


def _sealing_pod(ordered: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The pod whose exit decides the Job: one that succeeded, or one that failed with a non-retriable exit code."""
    for pod in ordered[::-1]:
        if _pod_phase(pod) == "Succeeded":
            return pod
        if _pod_phase(pod) == "Failed" and (_terminated(pod) or {}).get("exitCode") in {int(c) for c in NON_RETRIABLE}:
            return pod
    return None


def _finished_at(pod: dict[str, Any] | None) -> str | None:
    return (_terminated(pod) or {}).get("finishedAt") if pod is not None else None


def exited_at(pod: dict[str, Any]) -> float | None:
    """When the pod's container ended (its finishedAt, whole seconds since the epoch), None while it runs."""
    stamp = _finished_at(pod)
    return epoch_seconds(stamp) if stamp else None


def epoch_seconds(stamp: str) -> float:
    """An API timestamp (RFC 3339, ``Z``) as seconds since the epoch."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _backoff_used_up(job: dict[str, Any], *, attempts: int) -> bool:
    """Every retry the backoffLimit allows has failed (the Job's Failed condition is next, unless a disruption did it)."""
    backoff = (job.get("spec") or {}).get("backoffLimit")
    return backoff is not None and attempts > int(backoff)


def _pod_phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


#: Container waiting reasons that mean a pod will not start by itself.
_STUCK_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


def _why_waiting(pod: dict[str, Any]) -> str:
    """What holds a pod back, as the scheduler or the kubelet says it (unschedulable, an image pull, its config)."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"not scheduled ({cond.get('reason') or 'Unschedulable'}): {cond.get('message') or ''}".rstrip(": ")
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _STUCK_WAITING:
            return f"{waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
    return ""


def pod_is_starting(pod: dict[str, Any]) -> bool:
    """A pod on its way to running: not finished, and neither the scheduler nor the kubelet says it is stuck
    (unschedulable, an image pull, its config). One the scheduler has not looked at yet is on its way."""
    return _pod_phase(pod) not in ("Succeeded", "Failed") and not _why_waiting(pod)


def job_fingerprint(job: dict[str, Any]) -> tuple[Any, ...]:
    """What of a batch Job the status depends on; an event that changes nothing here needs no refresh."""
    st = job.get("status") or {}
    conditions = tuple(sorted((c.get("type"), c.get("status")) for c in st.get("conditions") or []))
    return (
        bool((job.get("spec") or {}).get("suspend")),
        st.get("active"),
        st.get("succeeded"),
        st.get("failed"),
        st.get("startTime"),
        conditions,
    )


def fingerprint(kind: str, obj: dict[str, Any]) -> tuple[Any, ...]:
    """What of a Job, pod or (queued jobs) Kueue Workload the status depends on: an event that changes none needs no refresh."""
    if kind == "Workload":
        return queueing.workload_fingerprint(obj)
    return job_fingerprint(obj) if kind == "Job" else pod_fingerprint(obj)


def pod_fingerprint(pod: dict[str, Any]) -> tuple[Any, ...]:
    """What of a pod the status depends on: its phase and how its containers ended."""
    ended = tuple(
        (cs.get("name"), (cs.get("state") or {}).get("terminated", {}).get("exitCode"))
        for cs in (pod.get("status") or {}).get("containerStatuses") or []
        if (cs.get("state") or {}).get("terminated")
    )
    return (_pod_phase(pod), ended, pod_is_starting(pod))


# --------------------------------------------------------------------------- building the status


def set_condition(
    conditions: list[dict[str, Any]],
    ctype: ConditionType,
    cstatus: ConditionStatus,
    *,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> None:
    """Set one condition in place, keyed by type; lastTransitionTime moves only when its status does."""
    old = next((c for c in conditions if c.get("type") == ctype.value), None)
    since = (
        old["lastTransitionTime"]
        if old and old.get("status") == cstatus.value and old.get("lastTransitionTime")
        else now
    )
    new = {
        "type": ctype.value,
        "status": cstatus.value,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }
    if old is None:
        conditions.append(new)
    else:
        conditions[conditions.index(old)] = new


def _true_if(flag: bool) -> ConditionStatus:
    return ConditionStatus.TRUE if flag else ConditionStatus.FALSE


def set_conditions(conditions: list[dict[str, Any]], obs: Observation, *, generation: int, now: str) -> None:
    """Every condition type for this observation (kubectl wait --for=condition=Succeeded reads these)."""
    phase = obs.phase
    terminal = phase in (Phase.SUCCEEDED, Phase.FAILED)
    at: _ConditionStamp = {"generation": generation, "now": now}
    set_condition(
        conditions,
        ConditionType.RUNNING,
        _true_if(phase is Phase.RUNNING),
        reason=obs.reason,
        message=obs.message if phase is Phase.RUNNING else "",
        **at,
    )
    set_condition(
        conditions,
        ConditionType.SUCCEEDED,
        _true_if(phase is Phase.SUCCEEDED) if terminal else ConditionStatus.UNKNOWN,
        reason=obs.reason,
        message=obs.message if terminal else "",
        **at,
    )
    set_condition(
        conditions,
        ConditionType.FAILED,
        _true_if(phase is Phase.FAILED),
        reason=obs.reason,
        message=obs.message if phase is Phase.FAILED else "",
        **at,
    )
    if obs.degraded:
        set_condition(
            conditions,
            ConditionType.DEGRADED,
            ConditionStatus.TRUE,
            reason=Reason.COMPLETED_DEGRADED,
            message=DEGRADED_MESSAGE,
            **at,
        )
    else:
        set_condition(
            conditions,
            ConditionType.DEGRADED,
            ConditionStatus.FALSE,
            reason=Reason.WITHIN_BUDGET if phase is Phase.SUCCEEDED else obs.reason,
            message="",
            **at,
        )
    suspended = phase is Phase.SUSPENDED
    set_condition(
        conditions,
        ConditionType.SUSPENDED,
        _true_if(suspended),
        reason=obs.reason,
        message=obs.message if suspended else "",
        **at,
    )
    queued = phase is Phase.QUEUED
    if queued or any(c.get("type") == ConditionType.QUEUED.value for c in conditions):  # only on jobs that were queued
        set_condition(
            conditions,
            ConditionType.QUEUED,
            _true_if(queued),
            reason=obs.reason,
            message=obs.message if queued else "",
            **at,
        )


DEGRADED_MESSAGE = "the published artifact misses the acceptance budget or fell back down the degrade ladder"


def desired_status(previous: dict[str, Any], obs: Observation, *, generation: int, now: str) -> dict[str, Any]:
    """The full status for this observation, from a snapshot of the previous one."""
    conditions = copy.deepcopy(list(previous.get("conditions") or []))
    set_conditions(conditions, obs, generation=generation, now=now)
    return {
        "phase": obs.phase.value,
        "observedGeneration": generation,
        "conditions": conditions,
        "reason": obs.reason,
        "message": obs.message[:2048],
        "jobName": obs.job_name,
        "attempts": obs.attempts,
        "startTime": obs.start_time,
        "completionTime": obs.completion_time,
        "results": obs.results,
        "progress": obs.progress,
    }


def diff(previous: dict[str, Any], desired: dict[str, Any]) -> StatusChange:
    """A merge patch of the status (None removes a field) and the Events its transitions deserve."""
    moved = any(previous.get(k) != desired.get(k) for k in ("phase", "reason", "observedGeneration"))
    if not moved and desired.get("reason") in _QUIET_REASONS:
        return (
            StatusChange()
        )  # the pod count, start time or pod name of a waiting or running run: the next transition brings them
    patch = {key: value for key, value in desired.items() if previous.get(key) != value}
    change = StatusChange(patch=patch)
    phase = desired.get("phase")
    kind = "Warning" if phase == Phase.FAILED.value else "Normal"
    if moved:
        change.events.append(
            Transition(kind, str(desired.get("reason")), f"{phase}: {desired.get('message', '')}"[:1024])
        )
    elif (desired.get("attempts") or 0) > (previous.get("attempts") or 0) and desired.get("reason") == Reason.RETRYING:
        change.events.append(Transition("Warning", Reason.RETRYING.value, str(desired.get("message", ""))[:1024]))
    return change


#: Reasons whose status is rewritten only on a transition (phase, reason or generation): one write each.
_QUIET_REASONS = frozenset({Reason.JOB_CREATED.value, Reason.POD_RUNNING.value})


def settle(previous: dict[str, Any], obs: Observation, *, generation: int) -> bool:
    """Whether ``obs`` may replace ``previous``: a terminal status of this generation is final."""
    return not (
        previous.get("observedGeneration") == generation
        and previous.get("phase") in (Phase.SUCCEEDED.value, Phase.FAILED.value)
        and obs.phase not in (Phase.SUCCEEDED, Phase.FAILED)
    )


def invalid_spec(message: str) -> Observation:
    return Observation(phase=Phase.FAILED, reason=Reason.INVALID_SPEC, message=message)


def waiting_for_capacity(running: int, cap: int) -> Observation:
    return Observation(
        phase=Phase.PENDING,
        reason=Reason.WAITING_FOR_CAPACITY,
        message=f"{running} quantizer Jobs are running, the operator's cap is {cap}; this job starts when one finishes",
    )


def job_forbidden(message: str) -> Observation:
    return Observation(
        phase=Phase.PENDING,
        reason=Reason.JOB_FORBIDDEN,
        message=f"the API server refused the quantizer Job (retried): {message}"[:1024],
    )


def job_rejected(message: str) -> Observation:
    """A rendered Job the API server finds invalid: the spec slipped past the CRD (e.g. a bad affinity)."""
    return Observation(
        phase=Phase.FAILED,
        reason=Reason.INVALID_SPEC,
        message=f"the API server rejected the quantizer Job; fix the spec: {message}"[:1024],
    )


def policy_refused(message: str) -> Observation:
    """The spec breaks the cluster admin's policy (controller/policy.py): no Job is created until it changes."""
    return Observation(phase=Phase.FAILED, reason=Reason.POLICY_VIOLATION, message=message[:2048])
