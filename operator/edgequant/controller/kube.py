"""Thin Kubernetes API access for the operator, with API errors translated once into kopf's terms.

Objects travel as plain camelCase dicts (as the API server sends them), so the
pure modules (render, status) never see client model classes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from edgequant.api import v1alpha1 as api
from edgequant.controller import naming

_API: client.ApiClient | None = None


def api_client() -> client.ApiClient:
    """One shared client: in-cluster config in a pod, else KUBECONFIG."""
    global _API
    if _API is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        _API = client.ApiClient()
    return _API


@contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Map API failures: conflicts and server trouble are retried, client errors are permanent."""
    try:
        yield
    except ApiException as exc:
        reason = _reason(exc)
        if exc.status in (409, 429) or (exc.status or 0) >= 500 or exc.status is None:
            raise kopf.TemporaryError(f"{what}: {exc.status} {reason}", delay=5) from exc
        raise kopf.PermanentError(f"{what}: {exc.status} {reason}") from exc


def _reason(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def _json(response: Any) -> dict[str, Any]:
    return json.loads(response.data)  # type: ignore[no-any-return]


def get_quantization_job(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return _json(
            client.CustomObjectsApi(api_client()).get_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, _preload_content=False
            )
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def patch_status(namespace: str, name: str, status_patch: dict[str, Any]) -> None:
    """Merge-patch the status subresource; an object deleted meanwhile is not an error."""
    try:
        client.CustomObjectsApi(api_client()).patch_namespaced_custom_object_status(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name, {"status": status_patch}
        )
    except ApiException as exc:
        if exc.status == 404:
            return
        with api_errors(f"patching status of {namespace}/{name}"):
            raise


def list_jobs(namespace: str | None, selector: str) -> list[dict[str, Any]]:
    batch = client.BatchV1Api(api_client())
    with api_errors("listing batch Jobs"):
        if namespace is None:
            data = _json(batch.list_job_for_all_namespaces(label_selector=selector, _preload_content=False))
        else:
            data = _json(batch.list_namespaced_job(namespace, label_selector=selector, _preload_content=False))
    return list(data.get("items") or [])


def jobs_of(namespace: str, qj_name: str) -> list[dict[str, Any]]:
    return list_jobs(namespace, f"{naming.LABEL_JOB}={qj_name},{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY}")


def pods_of_job(namespace: str, job_name: str) -> list[dict[str, Any]]:
    with api_errors(f"listing pods of Job {namespace}/{job_name}"):
        data = _json(
            client.CoreV1Api(api_client()).list_namespaced_pod(
                namespace, label_selector=f"job-name={job_name}", _preload_content=False
            )
        )
    return list(data.get("items") or [])


def create_job(manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create the Job, or adopt the existing one of the same name. Returns (job, created)."""
    namespace = manifest["metadata"]["namespace"]
    batch = client.BatchV1Api(api_client())
    try:
        return _json(batch.create_namespaced_job(namespace, manifest, _preload_content=False)), True
    except ApiException as exc:
        if exc.status != 409:
            with api_errors(f"creating Job {namespace}/{manifest['metadata']['name']}"):
                raise
    with api_errors(f"reading Job {namespace}/{manifest['metadata']['name']}"):
        return _json(batch.read_namespaced_job(manifest["metadata"]["name"], namespace, _preload_content=False)), False


def set_job_suspended(namespace: str, job_name: str, suspend: bool) -> None:
    with api_errors(f"suspending Job {namespace}/{job_name}"):
        client.BatchV1Api(api_client()).patch_namespaced_job(job_name, namespace, {"spec": {"suspend": suspend}})


def delete_job(namespace: str, job_name: str) -> None:
    """Delete a Job and (in the background) its pods; already gone is fine."""
    try:
        client.BatchV1Api(api_client()).delete_namespaced_job(
            job_name, namespace, body=client.V1DeleteOptions(propagation_policy="Background")
        )
    except ApiException as exc:
        if exc.status != 404:
            with api_errors(f"deleting Job {namespace}/{job_name}"):
                raise
