"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

JOBS_BY_PHASE = Gauge(
    "edgequant_quantizationjobs", "QuantizationJobs by phase, as last seen by this operator", ["phase"]
)
RUN_DURATION = Histogram(
    "edgequant_run_duration_seconds",
    "Wall time of finished quantizer runs (Job start to completion)",
    ["method", "phase"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 3600, 7200, 21600),
)
RECONCILE_ERRORS = Counter("edgequant_reconcile_errors_total", "Reconciliations that raised", ["handler"])
JOBS_CREATED = Counter("edgequant_batch_jobs_created_total", "Quantizer batch Jobs created")
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160)
REFRESH_WAIT = Histogram(
    "edgequant_status_refresh_wait_seconds",
    "From a Job/pod event to the start of the status refresh it asked for (debounce plus queue)",
    buckets=_LATENCY_BUCKETS,
)
REFRESH_WORK = Histogram(
    "edgequant_status_refresh_seconds",
    "Duration of a status refresh (cache reads, at most one status patch)",
    buckets=_LATENCY_BUCKETS,
)

RESULT_LATENCY = Histogram(
    "edgequant_result_latency_seconds",
    "From a pod's exit to its QuantizationJob's terminal status, by step: exit_to_event (the container's finishedAt"
    " to the operator's pod event), event_to_refresh (debounce and queue), refresh (lock, cache reads, the patch),"
    " status_patch (the PATCH alone), exit_to_status (finishedAt to the terminal status written). Steps from"
    " finishedAt read a timestamp in whole seconds: half a second high on average",
    ["step"],
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 60, 120),
)


def serve(port: int) -> None:
    if port:
        start_http_server(port)
