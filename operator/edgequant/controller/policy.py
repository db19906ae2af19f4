"""The cluster admin's policy for QuantizationJobs: what a job may name beyond itself. Pure: no I/O.

A job author controls the spec; the admin controls the operator's settings. A job may send its credentials only to
an allowed S3 endpoint (AWS's own, or one the admin lists), run only an allowed image, run only as an allowed
ServiceAccount, and read only an allowed Secret. The operator checks this before it creates a Job (the source of
truth); the chart renders the same lists into a ValidatingAdmissionPolicy so that ``kubectl apply`` refuses a
violating job at once (``charts/edgequant/templates/admission-policy.yaml``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from edgequant.api import v1alpha1 as api
from edgequant.api.uri_credentials import refusal
from edgequant.controller.settings import OperatorSettings

#: AWS's S3 endpoints (global, regional, dual-stack, FIPS, China): allowed without listing them.
AWS_S3_HOST = re.compile(r"^s3(-fips)?(\.dualstack)?(\.[a-z0-9-]+)?\.amazonaws\.com(\.cn)?$")
#: The chart value of each setting, named in messages so the admin knows what to change.
CHART_VALUES = {
    "allowed_s3_endpoints": "policy.allowedS3Endpoints",
    "allowed_image_repositories": "policy.allowedImageRepositories",
    "allowed_service_accounts": "policy.allowedServiceAccounts",
    "allowed_credentials_secrets": "policy.allowedCredentialsSecrets",
}


@dataclass(frozen=True)
class Violation:
    """One field of the spec that the policy refuses, the setting that refuses it, and the fix."""

    field: str
    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message} (policy {CHART_VALUES.get(self.setting, self.setting)})"


def endpoint_origin(url: str) -> str:
    """``scheme://host:port`` of an endpoint URL, lower-cased, with the scheme's default port filled in."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = None
    return f"{scheme}://{host}:{port}"


def is_aws_endpoint(url: str) -> bool:
    parts = urlsplit(url.strip())
    return parts.scheme.lower() == "https" and AWS_S3_HOST.match((parts.hostname or "").lower()) is not None


def endpoint_allowed(url: str | None, allowed: list[str]) -> bool:
    """No endpoint (AWS, chosen by the SDK) and AWS's own are always allowed; others only if listed
    (``scheme://host:port``; ``scheme://host:*`` allows the host on any port)."""
    if url is None or is_aws_endpoint(url):
        return True
    origin = endpoint_origin(url)
    for entry in allowed:
        if entry.endswith(":*"):  # this host on any port
            if origin.rsplit(":", 1)[0] == endpoint_origin(entry[:-2]).rsplit(":", 1)[0]:
                return True
        elif endpoint_origin(entry) == origin:
            return True
    return False


def image_repository(image: str) -> str:
    """``registry/path/name`` of an image reference, without its tag or digest."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def image_allowed(image: str, allowed: list[str], defaults: list[str]) -> bool:
    """The repository equals an allowed one (or one of the operator's own images'), or lies below an entry ending in '/'."""
    repository = image_repository(image)
    for entry in [*allowed, *(image_repository(d) for d in defaults)]:
        if entry.endswith("/") and repository.startswith(entry) and len(repository) > len(entry):
            return True
        if repository == entry:
            return True
    return False


def secret_allowed(name: str, patterns: list[str]) -> bool:
    """A pattern is a name, a prefix ending in '*', or '*' (the admission policy's CEL matches the same way)."""
    return any(p == name or (p.endswith("*") and name.startswith(p[:-1])) for p in patterns)


def mounts_api_token(service_account: str | None, settings: OperatorSettings) -> bool:
    """Only a ServiceAccount the admin lists in token_service_accounts gets a Kubernetes API token in the pod."""
    return service_account is not None and service_account in settings.token_service_accounts


def _uris(spec: api.QuantizationJobSpec) -> list[tuple[str, str]]:
    uris = [("spec.model.uri", spec.model.uri), ("spec.output.uri", spec.output.uri)]
    for role in ("calibration", "training", "evaluation"):
        section = getattr(spec, role)
        if section is not None:
            uris.append((f"spec.{role}.dataset.uri", section.dataset.uri))
    if spec.calibration is not None and spec.calibration.cache_uri:
        uris.append(("spec.calibration.cacheUri", spec.calibration.cache_uri))
    if spec.storage.endpoint:
        uris.append(("spec.storage.endpoint", spec.storage.endpoint))
    return uris


def violations(spec: api.QuantizationJobSpec, settings: OperatorSettings) -> list[Violation]:
    """Every way ``spec`` breaks the admin's policy; empty when it may run. Messages never repeat a credential."""
    found: list[Violation] = []
    for field, uri in _uris(spec):
        message = refusal(field, uri)
        if message is not None:
            found.append(Violation(field, "uri_credentials", message.removeprefix(f"{field} ")))
    storage = spec.storage
    if (
        storage.endpoint is not None
        and not any(v.field == "spec.storage.endpoint" for v in found)
        and not endpoint_allowed(storage.endpoint, settings.allowed_s3_endpoints)
    ):
        listed = ", ".join(settings.allowed_s3_endpoints) or "none"
        found.append(
            Violation(
                "spec.storage.endpoint",
                "allowed_s3_endpoints",
                f"endpoint {endpoint_origin(storage.endpoint)} is not allowed (allowed: AWS S3 and {listed}); use an allowed "
                "endpoint, or ask the cluster admin to add it to policy.allowedS3Endpoints",
            )
        )
    secret = storage.credentials_secret
    if secret is not None and not secret_allowed(secret.name, settings.allowed_credentials_secrets):
        found.append(
            Violation(
                "spec.storage.credentialsSecret.name",
                "allowed_credentials_secrets",
                f"Secret {secret.name!r} is not allowed (allowed: {', '.join(settings.allowed_credentials_secrets) or 'none'}); "
                "name an allowed Secret, or ask the cluster admin to allow it in policy.allowedCredentialsSecrets",
            )
        )
    account = storage.service_account_name
    if (
        account is not None
        and account != settings.worker_service_account
        and account not in settings.allowed_service_accounts
    ):
        allowed = [a for a in [settings.worker_service_account, *settings.allowed_service_accounts] if a]
        found.append(
            Violation(
                "spec.storage.serviceAccountName",
                "allowed_service_accounts",
                f"ServiceAccount {account!r} is not allowed (allowed: {', '.join(allowed) or 'none'}); drop the field to run "
                "as the default worker service account, or ask the cluster admin to add it to policy.allowedServiceAccounts",
            )
        )
    image = spec.execution.image
    if image is not None and not image_allowed(
        image, settings.allowed_image_repositories, list(settings.images.values())
    ):
        allowed = sorted(
            {*settings.allowed_image_repositories, *(image_repository(d) for d in settings.images.values())}
        )
        found.append(
            Violation(
                "spec.execution.image",
                "allowed_image_repositories",
                f"image repository {image_repository(image)!r} is not allowed (allowed: {', '.join(allowed)}); drop the field to "
                "use the operator's quantizer image, or ask the cluster admin to add it to policy.allowedImageRepositories",
            )
        )
    return found


def describe(found: list[Violation]) -> str:
    """One status message for all violations."""
    return "refused by the cluster's QuantizationJob policy: " + "; ".join(str(v) for v in found)
