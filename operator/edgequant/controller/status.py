"""QuantizationJob status: the one place that decides it, from the batch Job and its pods. Pure.

``observe`` turns what the API server shows into a desired status; ``diff``
says what changed (one patch, only if something did) and which transitions
deserve an Event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from edgequant.api.conditions import ConditionStatus, ConditionType, Phase, Reason
from edgequant.api.result import WorkerResult

_CONDITION_TYPES = (
    ConditionType.RUNNING,
    ConditionType.SUCCEEDED,
    ConditionType.FAILED,
    ConditionType.DEGRADED,
    ConditionType.SUSPENDED,
)


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


def _by_age(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(pods, key=lambda p: ((p.get("metadata") or {}).get("creationTimestamp") or "", (p.get("metadata") or {}).get("name") or ""))


def _fallback_message(pod: dict[str, Any]) -> str:
    state = _terminated(pod) or {}
    text = (state.get("message") or "").strip()
    code = state.get("exitCode")
    tail = text.splitlines()[-1] if text else ""
    return f"quantizer exited with code {code}" + (f": {tail}" if tail else "")


def observe_job(job: dict[str, Any], pods: list[dict[str, Any]]) -> Observation:
    """Decide phase, reason, message and results from a batch Job and its pods."""
    name = (job.get("metadata") or {}).get("name")
    jstatus = job.get("status") or {}
    counted = int(jstatus.get("failed") or 0) + int(jstatus.get("succeeded") or 0) + int(jstatus.get("active") or 0)
    attempts = max(counted, len(pods))
    common = {"job_name": name, "attempts": attempts, "start_time": jstatus.get("startTime")}
    ordered = _by_age(pods)

    complete = _job_condition(job, "Complete")
    if complete:
        done = [p for p in ordered if (p.get("status") or {}).get("phase") == "Succeeded"]
        result = worker_result(done[-1]) if done else None
        results = result.results.to_wire() if result and result.results else None
        degraded = bool(results and results.get("degraded"))
        message = result.message if result else "quantization finished"
        return Observation(
            phase=Phase.SUCCEEDED,
            reason=Reason.COMPLETED_DEGRADED if degraded else Reason.COMPLETED,
            message=message,
            completion_time=jstatus.get("completionTime") or complete.get("lastTransitionTime"),
            results=results,
            degraded=degraded,
            **common,
        )

    failed = _job_condition(job, "Failed")
    if failed:
        failed_pods = [p for p in ordered if (p.get("status") or {}).get("phase") == "Failed"]
        last = failed_pods[-1] if failed_pods else None
        result = worker_result(last) if last else None
        if result is not None:
            reason, message = result.reason, result.message
        else:
            reason = failed.get("reason") or "JobFailed"
            message = failed.get("message") or ""
            if last is not None:
                message = f"{message}; {_fallback_message(last)}" if message else _fallback_message(last)
        results = result.results.to_wire() if result and result.results else None
        return Observation(
            phase=Phase.FAILED,
            reason=reason,
            message=message,
            completion_time=failed.get("lastTransitionTime"),
            results=results,
            **common,
        )

    if (job.get("spec") or {}).get("suspend"):
        return Observation(phase=Phase.SUSPENDED, reason=Reason.SUSPENDED, message="the batch Job is suspended (spec.suspend)", **common)

    running = [p for p in ordered if (p.get("status") or {}).get("phase") == "Running"]
    if running:
        return Observation(phase=Phase.RUNNING, reason=Reason.POD_RUNNING, message=f"pod {running[-1]['metadata']['name']} is running", **common)
    finished = [p for p in ordered if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
    if finished and int(jstatus.get("active") or 0) == 0:
        # The pod is done but the Job controller has not concluded yet: still running, not back to pending.
        last = finished[-1]
        return Observation(phase=Phase.RUNNING, reason=Reason.POD_RUNNING, message=f"pod {last['metadata']['name']} finished; waiting for the Job to conclude", **common)
    if finished:
        result = worker_result(finished[-1])
        why = f"{result.reason}: {result.message}" if result else _fallback_message(finished[-1])
        return Observation(phase=Phase.PENDING, reason=Reason.JOB_CREATED, message=f"retrying after a failed attempt ({why})"[:1024], **common)
    return Observation(phase=Phase.PENDING, reason=Reason.JOB_CREATED, message=f"batch Job {name} created, waiting for its pod", **common)


# --------------------------------------------------------------------------- building the status


def _condition_states(obs: Observation) -> dict[str, tuple[ConditionStatus, str, str]]:
    """Desired (status, reason, message) for every condition type."""
    phase = obs.phase
    states: dict[str, tuple[ConditionStatus, str, str]] = {}
    states[ConditionType.RUNNING] = (
        ConditionStatus.TRUE if phase is Phase.RUNNING else ConditionStatus.FALSE,
        obs.reason,
        obs.message,
    )
    if phase is Phase.SUCCEEDED:
        states[ConditionType.SUCCEEDED] = (ConditionStatus.TRUE, obs.reason, obs.message)
        states[ConditionType.FAILED] = (ConditionStatus.FALSE, obs.reason, "")
    elif phase is Phase.FAILED:
        states[ConditionType.SUCCEEDED] = (ConditionStatus.FALSE, obs.reason, obs.message)
        states[ConditionType.FAILED] = (ConditionStatus.TRUE, obs.reason, obs.message)
    else:
        states[ConditionType.SUCCEEDED] = (ConditionStatus.UNKNOWN, obs.reason, "")
        states[ConditionType.FAILED] = (ConditionStatus.FALSE, obs.reason, "")
    degraded_msg = "the published artifact misses the acceptance budget or fell back down the degrade ladder" if obs.degraded else ""
    states[ConditionType.DEGRADED] = (
        ConditionStatus.TRUE if obs.degraded else ConditionStatus.FALSE,
        Reason.COMPLETED_DEGRADED if obs.degraded else Reason.WITHIN_BUDGET if phase is Phase.SUCCEEDED else obs.reason,
        degraded_msg,
    )
    states[ConditionType.SUSPENDED] = (
        ConditionStatus.TRUE if phase is Phase.SUSPENDED else ConditionStatus.FALSE,
        obs.reason,
        obs.message if phase is Phase.SUSPENDED else "",
    )
    return states


def desired_status(previous: dict[str, Any], obs: Observation, *, generation: int, now: str) -> dict[str, Any]:
    """The full status for this observation; lastTransitionTime only moves when a condition's status does."""
    old_conditions = {c.get("type"): c for c in previous.get("conditions") or []}
    conditions = []
    for ctype, (cstatus, reason, message) in _condition_states(obs).items():
        old = old_conditions.get(ctype)
        since = old["lastTransitionTime"] if old and old.get("status") == cstatus.value and old.get("lastTransitionTime") else now
        conditions.append(
            {
                "type": ctype.value if hasattr(ctype, "value") else ctype,
                "status": cstatus.value,
                "reason": reason,
                "message": message[:1024],
                "lastTransitionTime": since,
                "observedGeneration": generation,
            }
        )
    status: dict[str, Any] = {
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
    }
    return status


def diff(previous: dict[str, Any], desired: dict[str, Any]) -> StatusChange:
    """A merge patch of the status (None removes a field) and the Events for phase transitions."""
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if previous.get(key) != value:
            patch[key] = value
    change = StatusChange(patch=patch)
    if previous.get("phase") != desired.get("phase") or (
        previous.get("observedGeneration") != desired.get("observedGeneration")
    ):
        phase = desired.get("phase")
        kind = "Warning" if phase == Phase.FAILED.value else "Normal"
        change.events.append(Transition(kind, str(desired.get("reason")), f"{phase}: {desired.get('message', '')}"[:1024]))
    return change


def invalid_spec(message: str) -> Observation:
    return Observation(phase=Phase.FAILED, reason=Reason.INVALID_SPEC, message=message)


def waiting_for_capacity(running: int, cap: int) -> Observation:
    return Observation(
        phase=Phase.PENDING,
        reason=Reason.WAITING_FOR_CAPACITY,
        message=f"{running} quantizer Jobs are running, the operator's cap is {cap}; this job starts when one finishes",
    )
