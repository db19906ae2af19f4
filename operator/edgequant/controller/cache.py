"""Batch Jobs and pods as the operator's own watches show them (kopf indices).

A status refresh reads the QuantizationJob, its Job and pods from here instead of the API server, so it costs
at most one PATCH, made conditional on the resourceVersion it was computed from (a stale view costs a GET and
a second try, never a wrong status). kopf fills the indices before any handler runs (also after a restart),
and updates an object's index entry before that object's handlers run, so the refresh caused by the last event
of a Job or pod always sees both at least as new as that event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgequant.controller import naming, plan, queueing

#: kopf passes each index to handlers as a keyword argument named after its function (handlers.py).
QUANTIZATION_JOBS_INDEX = "edgequant_quantizationjobs"
JOBS_INDEX = "edgequant_jobs"
PODS_INDEX = "edgequant_pods"
WORKLOADS_INDEX = "edgequant_workloads"
POD_JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"

Key = tuple[str, str]


def _pick(mapping: Mapping[str, Any] | None, *keys: str) -> dict[str, Any]:
    return {k: mapping[k] for k in keys if mapping and k in mapping}


def quantization_job_entry(body: Mapping[str, Any]) -> tuple[Key, dict[str, Any]]:
    """Index key (namespace, name) and what a status refresh reads of a QuantizationJob (not its whole spec)."""
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace")), str(meta.get("name"))), {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": _pick(meta, "name", "namespace", "uid", "generation", "resourceVersion"),
        "spec": {
            **_pick(body.get("spec"), "method"),
            "execution": _pick((body.get("spec") or {}).get("execution"), "ttlSecondsAfterFinished"),
        },
        "status": dict(body.get("status") or {}),
    }


def job_entry(body: Mapping[str, Any]) -> tuple[Key, dict[str, Any]] | None:
    """Index key (namespace, QuantizationJob name) and the parts of a batch Job that reconcile and status read."""
    meta = body.get("metadata") or {}
    qj_name = naming.quantization_job_of(meta)
    if not qj_name:
        return None
    return (str(meta.get("namespace")), str(qj_name)), {
        "metadata": _pick(
            meta, "name", "namespace", "uid", "labels", "annotations", "ownerReferences", "deletionTimestamp"
        ),
        "spec": _pick(body.get("spec"), "suspend", "backoffLimit", "ttlSecondsAfterFinished"),
        "status": dict(body.get("status") or {}),
    }


def pod_entry(body: Mapping[str, Any]) -> tuple[Key, dict[str, Any]] | None:
    """Index key (namespace, uid of the owning Job) and the parts of a pod that status reads."""
    meta = body.get("metadata") or {}
    job_uid = (meta.get("labels") or {}).get(POD_JOB_UID_LABEL)
    if not job_uid:
        return None
    return (str(meta.get("namespace")), str(job_uid)), {
        "metadata": _pick(meta, "name", "uid", "creationTimestamp", "deletionTimestamp"),
        # The memory limit, which an OOMKilled status names (status.oom_message).
        "spec": {
            "containers": [
                {
                    "name": c.get("name"),
                    "resources": {"limits": _pick((c.get("resources") or {}).get("limits"), "memory")},
                }
                for c in (body.get("spec") or {}).get("containers") or []
            ]
        },
        "status": {
            **_pick(body.get("status"), "phase", "containerStatuses"),
            # Only why it is not scheduled, for the Pending message (not every condition of every pod).
            "conditions": [
                c
                for c in (body.get("status") or {}).get("conditions") or []
                if c.get("type") == "PodScheduled" and c.get("status") == "False"
            ],
        },
    }


def workload_entry(body: Mapping[str, Any]) -> tuple[Key, dict[str, Any]] | None:
    """Index key (namespace, uid of the Job it stands for) and the parts of a Kueue Workload that status reads."""
    meta = body.get("metadata") or {}
    job_uid = queueing.workload_job_uid(dict(body))
    if not job_uid:
        return None
    return (str(meta.get("namespace")), job_uid), {
        "metadata": _pick(meta, "name", "namespace", "uid", "creationTimestamp", "deletionTimestamp"),
        "status": _pick(body.get("status"), "conditions"),
    }


def _values(index: Mapping[Key, Iterable[dict[str, Any]]], key: Key) -> list[dict[str, Any]]:
    """A snapshot of one index entry. Handlers run in threads while kopf updates indices in its loop."""
    for _ in range(5):
        try:
            return list(index[key]) if key in index else []
        except (KeyError, RuntimeError):  # the entry went, or changed while copied: look again
            continue
    return []


@dataclass(frozen=True)
class Cache:
    quantization_jobs: Mapping[Key, Iterable[dict[str, Any]]]
    jobs: Mapping[Key, Iterable[dict[str, Any]]]
    pods: Mapping[Key, Iterable[dict[str, Any]]]
    workloads: Mapping[Key, Iterable[dict[str, Any]]] = field(default_factory=dict)
    """Kueue Workloads by (namespace, Job uid); empty unless the operator watches Kueue (settings.kueue)."""

    def quantization_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """As last seen by the watch: possibly behind the API server (status patches carry its resourceVersion)."""
        found = _values(self.quantization_jobs, (namespace, name))
        return found[0] if len(found) == 1 else None

    def jobs_of(self, namespace: str, qj_name: str) -> list[dict[str, Any]]:
        return _values(self.jobs, (namespace, qj_name))

    def pods_of(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        return _values(self.pods, (str(job["metadata"]["namespace"]), str(job["metadata"]["uid"])))

    def workload_of(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """The Kueue Workload standing for a queued Job (None for other Jobs, or before Kueue made one)."""
        if queueing.queue_of(job) is None:
            return None
        return queueing.newest(
            _values(self.workloads, (str(job["metadata"]["namespace"]), str(job["metadata"]["uid"])))
        )

    def quantization_job_of_job_uid(self, namespace: str, job_uid: str) -> str | None:
        """The QuantizationJob whose batch Job has this uid (a Workload names its Job only by uid)."""
        for key in list(self.jobs):
            if key[0] == namespace and any(str(j["metadata"].get("uid")) == job_uid for j in _values(self.jobs, key)):
                return key[1]
        return None

    def job_states(self) -> dict[Key, bool]:
        """(namespace, Job name) of every Job of ours -> whether it counts against the concurrency cap."""
        states: dict[Key, bool] = {}
        for key in list(self.jobs):
            for job in _values(self.jobs, key):
                states[(key[0], str(job["metadata"]["name"]))] = plan.is_running(job) and not job["metadata"].get(
                    "deletionTimestamp"
                )
        return states
