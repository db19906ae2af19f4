"""Reconciliation of a QuantizationSweep: its cells as child QuantizationJobs, then one report Job, then status.

Idempotent like the QuantizationJob reconcile: a child's name is a function of the sweep and the cell, creation
of an existing child is a no-op, and the status is recomputed each time from the children as the API server
shows them. The combined report is written by a batch Job (``edgequant sweep-report``) that mounts the sweep's
storage credentials the way quantizer pods do, because the operator never reads Secrets.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from edgequant.api import sweep as sweep_api
from edgequant.api import v1alpha1 as api
from edgequant.api import worker_contract as contract
from edgequant.controller import kube, naming, render
from edgequant.controller.settings import OperatorSettings
from edgequant.sweep import plan
from edgequant.sweep import report as sweep_report

#: Label of the report Job, naming its sweep; not the quantizer Jobs' labels, so the QuantizationJob handlers skip it.
LABEL_REPORT = "edgequant.io/sweep-report"

_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_GUARD = threading.Lock()


def _lock(namespace: str, name: str) -> threading.Lock:
    with _GUARD:
        return _LOCKS.setdefault((namespace, name), threading.Lock())


def forget(namespace: str, name: str) -> None:
    with _GUARD:
        _LOCKS.pop((namespace, name), None)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _objects(kube_client: kube.KubeClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_client.api_client)


def sweep_of(meta: dict[str, Any]) -> str | None:
    """The sweep a child QuantizationJob or the report Job belongs to (full name from the annotation)."""
    return (meta.get("annotations") or {}).get(plan.ANNOTATION_SWEEP) or None


# --------------------------------------------------------------------------- pure parts


def report_job_name(sweep_name: str, generation: int) -> str:
    return naming.job_name(f"{sweep_name}-report", generation)


def render_report_job(
    *,
    body: dict[str, Any],
    sweep: sweep_api.QuantizationSweep,
    cell: plan.Cell,
    status: dict[str, Any],
    settings: OperatorSettings,
) -> dict[str, Any]:
    """The batch Job that writes report.html and sweep.json under the sweep's output URI.

    Rendered as a cell's quantizer Job (same image, storage credentials by secretKeyRef, security context), on the
    CPU, with the sweep's figures in its environment, labelled and owned as the sweep's own.
    """
    meta = body["metadata"]
    spec = plan.cell_spec(sweep.spec, cell)
    spec = spec.model_copy(
        update={"resources": spec.resources.model_copy(update={"accelerator": api.Accelerator.CPU}), "suspend": False}
    )
    generation = int(meta.get("generation") or 1)
    owner = render.Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], generation=generation)
    job = render.render_job(owner=owner, spec=spec, settings=settings)
    labels = {LABEL_REPORT: naming.label_value(meta["name"]), "app.kubernetes.io/name": "edgequant-sweep-report"}
    annotations = {plan.ANNOTATION_SWEEP: meta["name"]}
    job["metadata"].update(name=report_job_name(meta["name"], generation), labels=labels, annotations=annotations)
    job["metadata"]["ownerReferences"] = [
        {
            "apiVersion": api.API_VERSION,
            "kind": sweep_api.KIND,
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    job["spec"]["backoffLimit"] = 1
    job["spec"].pop("podFailurePolicy", None)
    job["spec"]["template"]["metadata"] = {"labels": dict(labels), "annotations": dict(annotations)}
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["command"] = list(contract.SWEEP_REPORT_COMMAND)
    document = {
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": sweep.spec.to_wire(),
        "status": status,
    }
    env = [e for e in container["env"] if e["name"] != contract.SPEC_ENV]
    container["env"] = [
        {"name": contract.SWEEP_ENV, "value": json.dumps(document, separators=(",", ":"), sort_keys=True)},
        *env,
    ]
    return job


def _job_finished(job: dict[str, Any] | None) -> str | None:
    """'Complete' or 'Failed' once the batch Job says so, else None."""
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


def _condition(
    previous: list[dict[str, Any]], kind: str, state: bool, reason: str, message: str, generation: int
) -> dict[str, Any]:
    value = "True" if state else "False"
    old = next((c for c in previous if c.get("type") == kind), None)
    since = old["lastTransitionTime"] if old and old.get("status") == value else _now()
    return {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message[: api.MAX_TEXT],
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def desired_status(
    *,
    previous: dict[str, Any],
    generation: int,
    aggregate: dict[str, Any] | None,
    skipped: list[dict[str, Any]],
    report: str | None,
    report_uri: str | None,
    started: bool = False,
    invalid: str | None = None,
) -> dict[str, Any]:
    """The sweep's whole status from what one reconcile saw. ``report``: the report Job's end ('Complete', 'Failed', None)."""
    conditions = list(previous.get("conditions") or [])
    if invalid is not None:
        return {
            "phase": sweep_api.SweepPhase.FAILED.value,
            "observedGeneration": generation,
            "reason": "InvalidSpec",
            "message": invalid,
            "conditions": [
                _condition(conditions, sweep_api.SweepCondition.COMPLETED, False, "InvalidSpec", invalid, generation),
                _condition(conditions, sweep_api.SweepCondition.FAILED, True, "InvalidSpec", invalid, generation),
            ],
        }
    assert aggregate is not None
    done = aggregate["finished"] == aggregate["cells"] and report is not None
    if done:
        phase = sweep_api.SweepPhase.COMPLETED
        reason = "Completed" if aggregate["passed"] else "NoCandidatePassed"
        message = f"{aggregate['passed']} of {aggregate['cells']} cells within the budget"
        if report == "Failed":
            message += "; the combined report was not written (see the report Job's logs)"
    else:
        phase = sweep_api.SweepPhase.RUNNING if started else sweep_api.SweepPhase.PENDING
        reason = "CellsRunning" if aggregate["finished"] < aggregate["cells"] else "WritingReport"
        message = f"{aggregate['finished']} of {aggregate['cells']} cells finished"
    status = dict(aggregate)
    status.update(
        phase=phase.value,
        observedGeneration=generation,
        reason=reason,
        message=message,
        skipped=skipped,
        conditions=[
            _condition(conditions, sweep_api.SweepCondition.COMPLETED, done, reason, message, generation),
            _condition(conditions, sweep_api.SweepCondition.FAILED, False, reason, message, generation),
        ],
    )
    if report_uri is not None:
        status["reportUri"] = report_uri
    return status


def changed_fields(previous: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The merge patch: fields whose value differs; fields no longer desired set to null."""
    patch = {k: v for k, v in desired.items() if previous.get(k) != v}
    patch.update({k: None for k in previous if k not in desired})
    return patch


# --------------------------------------------------------------------------- API access


def _get(kube_client: kube.KubeClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = _objects(kube_client).get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, sweep_api.PLURAL, name
        )
        return body
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _children(kube_client: kube.KubeClient, namespace: str, name: str, uid: str) -> dict[str, dict[str, Any]]:
    """Child QuantizationJobs owned by this sweep, by name."""
    label = naming.label_value(name)
    items = _objects(kube_client).list_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, label_selector=f"{plan.LABEL_SWEEP}={label}"
    )["items"]
    return {
        i["metadata"]["name"]: i
        for i in items
        if any(o.get("uid") == uid for o in i["metadata"].get("ownerReferences") or [])
    }


class CellRejected(Exception):
    """The API server refused a cell's QuantizationJob (invalid, forbidden): the sweep cannot run as written."""


def _create_child(kube_client: kube.KubeClient, manifest: dict[str, Any]) -> None:
    try:
        _objects(kube_client).create_namespaced_custom_object(
            api.GROUP, api.VERSION, manifest["metadata"]["namespace"], api.PLURAL, manifest
        )
    except ApiException as exc:
        if exc.status in (400, 403, 422):
            raise CellRejected(
                f"the API server refused the QuantizationJob of cell {manifest['metadata']['name']}: {exc.status} {kube._reason(exc)}"
            ) from exc
        if exc.status != 409:  # 409: already there, created by an earlier reconcile
            raise


def _patch_status(kube_client: kube.KubeClient, namespace: str, name: str, patch: dict[str, Any]) -> None:
    try:
        _objects(kube_client).patch_namespaced_custom_object_status(
            api.GROUP, api.VERSION, namespace, sweep_api.PLURAL, name, {"status": patch}
        )
    except ApiException as exc:
        if exc.status != 404:
            raise


# --------------------------------------------------------------------------- reconcile


def reconcile(
    namespace: str, name: str, *, kube_client: kube.KubeClient, settings: OperatorSettings, logger: kopf.Logger
) -> None:
    """Bring the sweep's children, report Job and status in line with its spec and what its children report."""
    with _lock(namespace, name):
        body = _get(kube_client, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        meta = body["metadata"]
        generation = int(meta.get("generation") or 1)
        previous = dict(body.get("status") or {})
        try:
            sweep = plan.parse(body)
        except plan.SweepSpecError as exc:
            _fail(kube_client, namespace, name, previous, generation, str(exc), logger)
            return
        cells, skipped = plan.expand(name, sweep.spec)
        children = _children(kube_client, namespace, name, meta["uid"])
        statuses = {n: (c.get("status") or {}) for n, c in children.items()}
        for cell in plan.next_cells(cells, statuses, sweep.spec.concurrency):
            try:
                _create_child(
                    kube_client,
                    plan.child_manifest(
                        sweep_name=name, namespace=namespace, uid=meta["uid"], spec=sweep.spec, cell=cell
                    ),
                )
            except CellRejected as exc:
                _fail(kube_client, namespace, name, previous, generation, str(exc), logger)
                return
            statuses[cell.name] = {}
            logger.info(
                "created QuantizationJob %s (%s)",
                cell.name,
                ", ".join(filter(None, [cell.target, cell.method.value, *cell.options.values()])),
            )
        aggregate = plan.aggregate(cells, statuses, sweep.spec)
        report, report_uri = None, previous.get("reportUri")
        if aggregate["finished"] == aggregate["cells"]:
            report, report_uri = _report(
                kube_client,
                body,
                sweep,
                cells,
                {**aggregate, "skipped": [s.to_wire() for s in skipped]},
                settings=settings,
            )
        desired = desired_status(
            previous=previous,
            generation=generation,
            aggregate=aggregate,
            skipped=[s.to_wire() for s in skipped],
            report=report,
            report_uri=report_uri,
            started=bool(statuses),
        )
        patch = changed_fields(previous, desired)
        if patch:
            _patch_status(kube_client, namespace, name, patch)


def _fail(
    kube_client: kube.KubeClient,
    namespace: str,
    name: str,
    previous: dict[str, Any],
    generation: int,
    message: str,
    logger: kopf.Logger,
) -> None:
    """The sweep cannot run as written: Failed, with the message naming the field or the cell (no retry loop)."""
    logger.warning("QuantizationSweep cannot run: %s", message)
    desired = desired_status(
        previous=previous,
        generation=generation,
        aggregate=None,
        skipped=[],
        report=None,
        report_uri=None,
        invalid=message,
    )
    patch = changed_fields(previous, desired)
    if patch:
        _patch_status(kube_client, namespace, name, patch)


def _report(
    kube_client: kube.KubeClient,
    body: dict[str, Any],
    sweep: sweep_api.QuantizationSweep,
    cells: list[plan.Cell],
    status: dict[str, Any],
    *,
    settings: OperatorSettings,
) -> tuple[str | None, str | None]:
    """Create the report Job once every cell finished; ('Complete' | 'Failed' | None, reportUri once written)."""
    meta = body["metadata"]
    name = report_job_name(meta["name"], int(meta.get("generation") or 1))
    job = kube_client.read_job(meta["namespace"], name)
    if job is None:
        manifest = render_report_job(body=body, sweep=sweep, cell=cells[0], status=status, settings=settings)
        try:
            job, _ = kube_client.create_job(manifest)
        except kube.JobRejected as exc:
            logging.getLogger(__name__).warning("report Job rejected: %s", exc.message)
            return "Failed", None
    end = _job_finished(job)
    uri = sweep.spec.output.uri + sweep_report.REPORT_HTML if end == "Complete" else None
    return end, uri
