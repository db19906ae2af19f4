"""Kueue: who decides a batch Job's ``suspend``, and what a queued job's status says. Pure: no I/O.

A QuantizationJob with ``spec.queueName`` gets a Job labelled ``kueue.x-k8s.io/queue-name`` and created suspended;
from then on Kueue alone flips ``Job.spec.suspend`` (admission starts it, preemption or deactivation stops it) and the
operator only reflects that: phase ``Queued``, with the reason and message of the Kueue Workload that stands for the
Job. While ``spec.suspend`` is true the Job is created without the label, so Kueue leaves it alone and the operator
keeps it suspended; setting ``spec.suspend`` to false is a new generation, whose Job joins the queue.
"""

from __future__ import annotations

from typing import Any

from edgequant.api.conditions import Reason
from edgequant.controller import plan

QUEUE_NAME_LABEL = "kueue.x-k8s.io/queue-name"
#: Kueue labels the Workload it creates for a Job with that Job's uid.
WORKLOAD_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"
WORKLOADS = "workloads"


def queue_labels(queue_name: str | None, *, suspend: bool) -> dict[str, str]:
    """Labels that hand the rendered Job to Kueue: none without a queue, or while spec.suspend holds the job back."""
    return {QUEUE_NAME_LABEL: queue_name} if queue_name and not suspend else {}


def job_suspended_at_creation(queue_name: str | None, *, suspend: bool) -> bool:
    """A queued Job starts suspended: it runs when Kueue admits it."""
    return suspend or bool(queue_name)


def queue_of(job: dict[str, Any]) -> str | None:
    """The Kueue LocalQueue a Job was handed to (None: the operator owns its ``suspend``)."""
    return ((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_NAME_LABEL) or None


def suspend_to_enforce(job: dict[str, Any] | None, *, spec_suspend: bool) -> bool | None:
    """The ``suspend`` value the operator must write on the Job, or None to leave it as it is.

    Never on a Job handed to Kueue (its suspend is Kueue's decision), nor on a finished one.
    """
    if job is None or plan.is_finished(job) or queue_of(job) is not None:
        return None
    return spec_suspend if bool((job.get("spec") or {}).get("suspend")) != spec_suspend else None


def _conditions(workload: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {str(c.get("type")): c for c in ((workload or {}).get("status") or {}).get("conditions") or []}


def queued_reason(job: dict[str, Any], workload: dict[str, Any] | None) -> tuple[str, str] | None:
    """(reason, message) of a suspended Job waiting in Kueue, or None when the Job is not Kueue's.

    The Workload's conditions say why, most telling first: an eviction (preemption, deactivation), quota not
    reserved (Kueue's "Pending" or "Inadmissible" with the missing quota), quota reserved while admission checks
    run, admitted (the Job is about to be started). Without a Workload, Kueue has not picked the Job up yet.
    """
    queue = queue_of(job)
    if queue is None:
        return None
    conditions = _conditions(workload)
    evicted, reserved, admitted = conditions.get("Evicted"), conditions.get("QuotaReserved"), conditions.get("Admitted")
    for cond, wanted in ((evicted, "True"), (reserved, "False"), (admitted, "True"), (reserved, "True")):
        if cond is not None and cond.get("status") == wanted and cond.get("reason"):
            message = str(cond.get("message") or "")
            return str(
                cond["reason"]
            ), f"Kueue, LocalQueue {queue}: {message}" if message else f"Kueue, LocalQueue {queue}"
    waiting = (
        f"the batch Job waits for Kueue to admit it from LocalQueue {queue} (no Workload yet: is Kueue running, "
        f"and does LocalQueue {queue} exist in this namespace?)"
    )
    return Reason.QUEUED.value, waiting


def workload_fingerprint(workload: dict[str, Any]) -> tuple[Any, ...]:
    """What of a Workload a queued job's status depends on: its conditions."""
    conditions = ((workload.get("status") or {}).get("conditions")) or []
    return tuple(sorted((str(c.get("type")), c.get("status"), c.get("reason"), c.get("message")) for c in conditions))


def workload_job_uid(workload: dict[str, Any]) -> str | None:
    """The uid of the Job a Workload stands for: Kueue's label, else the controlling owner reference to a Job."""
    meta = workload.get("metadata") or {}
    uid = (meta.get("labels") or {}).get(WORKLOAD_JOB_UID_LABEL)
    if uid:
        return str(uid)
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "Job" and str(ref.get("apiVersion", "")).startswith("batch/") and ref.get("controller"):
            return str(ref.get("uid"))
    return None


def newest(workloads: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One Job normally has one Workload; while Kueue replaces one, the newest speaks for the Job."""
    live = [w for w in workloads if not (w.get("metadata") or {}).get("deletionTimestamp")] or workloads
    return max(
        live,
        key=lambda w: (
            (w.get("metadata") or {}).get("creationTimestamp") or "",
            (w.get("metadata") or {}).get("name") or "",
        ),
        default=None,
    )
