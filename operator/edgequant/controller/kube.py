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

_API: client.ApiClient | None = None
_CONNECTIONS = 10


def configure(*, connections: int) -> None:
    """Size the connection pool to the handler threads (before the first call), so none opens its own."""
    global _CONNECTIONS
    _CONNECTIONS = connections


def api_client() -> client.ApiClient:
    """One shared client: in-cluster config in a pod, else KUBECONFIG."""
    global _API
    if _API is None:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = _CONNECTIONS
        _API = client.ApiClient(configuration)
    return _API


class JobRejected(Exception):
    """The API server refused a Job we rendered: ``status`` 400/422 (invalid) or 403 (RBAC, quota, admission)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def translate(exc: ApiException, what: str) -> kopf.TemporaryError | kopf.PermanentError:
    """The one mapping of API failures: conflicts, throttling and server trouble are retried; the rest is permanent."""
    reason = _reason(exc)
    if exc.status in (409, 429) or (exc.status or 0) >= 500 or not exc.status:
        return kopf.TemporaryError(f"{what}: {exc.status} {reason}", delay=5)
    return kopf.PermanentError(f"{what}: {exc.status} {reason}")


@contextmanager
def api_errors(what: str) -> Iterator[None]:
    try:
        yield
    except ApiException as exc:
        raise translate(exc, what) from exc


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
        raise translate(exc, f"reading QuantizationJob {namespace}/{name}") from exc


class Conflict(Exception):
    """The object changed since the resourceVersion a patch was computed against."""


def patch_status(namespace: str, name: str, status_patch: dict[str, Any], *, resource_version: str | None = None) -> dict[str, Any] | None:
    """Merge-patch the status subresource, only if the object is still at ``resource_version`` (when given).

    Returns the patched object (None: it was deleted meanwhile); raises Conflict when it moved on.
    """
    body: dict[str, Any] = {"status": status_patch}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    try:
        return _json(
            client.CustomObjectsApi(api_client()).patch_namespaced_custom_object_status(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, body, _preload_content=False
            )
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        if exc.status == 409 and resource_version:
            raise Conflict(f"QuantizationJob {namespace}/{name} changed since resourceVersion {resource_version}") from exc
        raise translate(exc, f"patching the status of QuantizationJob {namespace}/{name}") from exc


def read_job(namespace: str, job_name: str) -> dict[str, Any] | None:
    try:
        return _json(client.BatchV1Api(api_client()).read_namespaced_job(job_name, namespace, _preload_content=False))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise translate(exc, f"reading Job {namespace}/{job_name}") from exc


def create_job(manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create the Job, or adopt the existing one of the same name. Returns (job, created)."""
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    batch = client.BatchV1Api(api_client())
    try:
        return _json(batch.create_namespaced_job(namespace, manifest, _preload_content=False)), True
    except ApiException as exc:
        if exc.status in (400, 403, 422):
            raise JobRejected(int(exc.status), _reason(exc)) from exc
        if exc.status != 409:
            raise translate(exc, f"creating Job {namespace}/{name}") from exc
    existing = read_job(namespace, name)
    if existing is None:  # deleted between our create and read: let the retry create it
        raise kopf.TemporaryError(f"Job {namespace}/{name} vanished while being adopted", delay=1)
    return existing, False


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
            raise translate(exc, f"deleting Job {namespace}/{job_name}") from exc
