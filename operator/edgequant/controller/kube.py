"""Thin Kubernetes API access for the operator, with API errors translated once into kopf's terms.

Objects travel as plain camelCase dicts (as the API server sends them), so the
pure modules (render, status) never see client model classes. One ``KubeClient`` per operator process, made at
start-up and handed to the ``Reconciler``: no module-level client.
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
    body: dict[str, Any] = json.loads(response.data)
    return body


class Conflict(Exception):
    """The object changed since the resourceVersion a patch was computed against."""


class KubeClient:
    """The operator's calls to the API server, on one pooled client (in-cluster config in a pod, else KUBECONFIG)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._api = api_client

    @property
    def api_client(self) -> client.ApiClient:
        """The pooled client, for API groups this class does not wrap (the sweep controller's custom objects)."""
        return self._api

    @classmethod
    def from_environment(cls, *, connections: int) -> KubeClient:
        """Size the connection pool to the handler threads, so none opens its own."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = connections
        return cls(client.ApiClient(configuration))

    def get_quantization_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(
                client.CustomObjectsApi(self._api).get_namespaced_custom_object(
                    api.GROUP, api.VERSION, namespace, api.PLURAL, name, _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise translate(exc, f"reading QuantizationJob {namespace}/{name}") from exc

    def patch_status(
        self, namespace: str, name: str, status_patch: dict[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource, only if the object is still at ``resource_version`` (when given).

        Returns the patched object (None: it was deleted meanwhile); raises Conflict when it moved on.
        """
        body: dict[str, Any] = {"status": status_patch}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            return _json(
                client.CustomObjectsApi(self._api).patch_namespaced_custom_object_status(
                    api.GROUP, api.VERSION, namespace, api.PLURAL, name, body, _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 409 and resource_version:
                raise Conflict(
                    f"QuantizationJob {namespace}/{name} changed since resourceVersion {resource_version}"
                ) from exc
            raise translate(exc, f"patching the status of QuantizationJob {namespace}/{name}") from exc

    def read_job(self, namespace: str, job_name: str) -> dict[str, Any] | None:
        try:
            return _json(client.BatchV1Api(self._api).read_namespaced_job(job_name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise translate(exc, f"reading Job {namespace}/{job_name}") from exc

    def create_job(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the Job, or adopt the existing one of the same name. Returns (job, created)."""
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            return _json(
                client.BatchV1Api(self._api).create_namespaced_job(namespace, manifest, _preload_content=False)
            ), True
        except ApiException as exc:
            if exc.status in (400, 403, 422):
                raise JobRejected(int(exc.status), _reason(exc)) from exc
            if exc.status != 409:
                raise translate(exc, f"creating Job {namespace}/{name}") from exc
        existing = self.read_job(namespace, name)
        if existing is None:  # deleted between our create and read: let the retry create it
            raise kopf.TemporaryError(f"Job {namespace}/{name} vanished while being adopted", delay=1)
        return existing, False

    def patch_job_spec(self, namespace: str, job_name: str, spec_patch: dict[str, Any]) -> None:
        """Change a Job's mutable spec fields (suspend, ttlSecondsAfterFinished); already gone is fine."""
        try:
            client.BatchV1Api(self._api).patch_namespaced_job(job_name, namespace, {"spec": spec_patch})
        except ApiException as exc:
            if exc.status != 404:
                raise translate(exc, f"patching Job {namespace}/{job_name}") from exc

    def delete_job(self, namespace: str, job_name: str, *, wait_for_pods: bool = False) -> None:
        """Delete a Job; already gone is fine.

        ``wait_for_pods``: foreground deletion, so the Job stays (with a deletionTimestamp) until its pods are
        gone, and its DELETED event says that no process of it runs any more. Otherwise its pods go in the background.
        """
        policy = "Foreground" if wait_for_pods else "Background"
        try:
            client.BatchV1Api(self._api).delete_namespaced_job(
                job_name, namespace, body=client.V1DeleteOptions(propagation_policy=policy)
            )
        except ApiException as exc:
            if exc.status != 404:
                raise translate(exc, f"deleting Job {namespace}/{job_name}") from exc
