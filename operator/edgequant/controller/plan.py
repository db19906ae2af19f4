"""What reconciliation must do with the batch Jobs it finds. Pure: decided from API objects, no I/O.

The Job of a generation has a deterministic name, so "create or adopt" is a
name lookup; everything else labelled as ours (older generations, or a deleted
namesake's Job still waiting for garbage collection) is obsolete. A new Job is
created only once no other Job of this name is left, not even one being deleted:
the operator deletes obsolete Jobs in the foreground (the Job goes after its
pods), so an old generation's pod can no longer upload once the new one starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgequant.api.conditions import Phase
from edgequant.controller import naming

TERMINAL_PHASES = frozenset({Phase.SUCCEEDED.value, Phase.FAILED.value})


@dataclass(frozen=True)
class JobPlan:
    current: dict[str, Any] | None
    """The Job of this generation, owned by this very object (None: none exists)."""
    obsolete: list[str] = field(default_factory=list)
    """Names of Jobs to delete: other generations, or owned by a deleted namesake."""
    already_finished: bool = False
    """The status already reports this generation terminal: never start it again (its Job may be TTL-deleted)."""
    stale: bool = False
    """A Job of a newer generation exists: the object was read before a spec change."""
    leaving: list[str] = field(default_factory=list)
    """Names of Jobs being deleted: their pods may still run. Their DELETED events reconcile again."""

    @property
    def must_create(self) -> bool:
        return (
            self.current is None
            and not self.already_finished
            and not self.stale
            and not self.obsolete
            and not self.leaving
        )


def controller_uid(obj: dict[str, Any]) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def is_finished(job: dict[str, Any]) -> bool:
    """The Job controller has concluded (Complete or Failed; the interim *Target conditions do not count)."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return True
    return False


def is_running(job: dict[str, Any]) -> bool:
    """Counts against the operator's concurrency cap: not finished and not suspended."""
    return not is_finished(job) and not (job.get("spec") or {}).get("suspend")


def finished_for_generation(previous_status: dict[str, Any], generation: int) -> bool:
    return previous_status.get("observedGeneration") == generation and previous_status.get("phase") in TERMINAL_PHASES


def _generation(job: dict[str, Any]) -> int:
    value = ((job.get("metadata") or {}).get("labels") or {}).get(naming.LABEL_GENERATION, "")
    return int(value) if str(value).isdigit() else 0


def plan_jobs(
    jobs: list[dict[str, Any]], *, name: str, uid: str, generation: int, previous_status: dict[str, Any]
) -> JobPlan:
    """Sort the Jobs labelled with this QuantizationJob's name into the current one and the obsolete ones.

    A Job of a newer generation than ``generation`` means the object was read before a spec change: such a Job is
    never obsolete, and ``stale`` tells the caller to read the object again.
    """
    wanted = naming.job_name(name, generation)
    current = None
    obsolete: list[str] = []
    leaving: list[str] = []
    stale = False
    for job in sorted(jobs, key=lambda j: j["metadata"]["name"]):
        job_name = job["metadata"]["name"]
        owned = controller_uid(job) == uid
        if owned and _generation(job) > generation:
            stale = True
        elif (job.get("metadata") or {}).get("deletionTimestamp") is not None:
            leaving.append(job_name)
        elif job_name == wanted and owned:
            current = job
        else:
            obsolete.append(job_name)
    return JobPlan(
        current=current,
        obsolete=obsolete,
        already_finished=finished_for_generation(previous_status, generation),
        stale=stale,
        leaving=leaving,
    )
