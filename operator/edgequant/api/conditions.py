"""Phases, condition types and reasons of QuantizationJob status (constants live beside the API)."""

from __future__ import annotations

import enum


class Phase(enum.StrEnum):
    """A one-word summary for humans; automation should read conditions."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    QUEUED = "Queued"  # the batch Job waits in a Kueue LocalQueue (spec.queueName) for admission


class ConditionType(enum.StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    RUNNING = "Running"
    DEGRADED = "Degraded"
    SUSPENDED = "Suspended"
    QUEUED = "Queued"  # set only on queued jobs; its reason is Kueue's (e.g. Pending, Preempted)


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason(enum.StrEnum):
    """CamelCase reasons. Worker failure reasons come from ``exitcodes.REASONS``."""

    JOB_CREATED = "JobCreated"
    WAITING_FOR_CAPACITY = "WaitingForCapacity"
    POD_RUNNING = "PodRunning"
    RETRYING = "Retrying"
    COMPLETED = "Completed"
    COMPLETED_DEGRADED = "CompletedDegraded"
    RESULTS_UNREADABLE = "ResultsUnreadable"
    WITHIN_BUDGET = "WithinBudget"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    INVALID_SPEC = "InvalidSpec"
    JOB_FORBIDDEN = "JobForbidden"
    POLICY_VIOLATION = "PolicyViolation"
    OOM_KILLED = "OOMKilled"
    SUSPENDED = "Suspended"
    SPEC_CHANGED = "SpecChanged"
    QUEUED = "Queued"  # queued, and Kueue has not said why yet (no Workload for the Job)
