"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

JOBS_BY_PHASE = Gauge("edgequant_quantizationjobs", "QuantizationJobs by phase, as last seen by this operator", ["phase"])
RUN_DURATION = Histogram(
    "edgequant_run_duration_seconds",
    "Wall time of finished quantizer runs (Job start to completion)",
    ["method", "phase"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 3600, 7200, 21600),
)
RECONCILE_ERRORS = Counter("edgequant_reconcile_errors_total", "Reconciliations that raised", ["handler"])
JOBS_CREATED = Counter("edgequant_batch_jobs_created_total", "Quantizer batch Jobs created")


def serve(port: int) -> None:
    if port:
        start_http_server(port)
