"""The chart's ValidatingAdmissionPolicy is rendered from the same values as the operator's settings, and its
patterns are the operator's (tests/e2e/test_faults.py runs it on the real API server)."""

from __future__ import annotations

import json
import re
from typing import Any

from test_chart_render import by_kind, env_of, render

from edgequant.api.uri_credentials import CREDENTIAL_QUERY_KEYS
from edgequant.controller import policy
from edgequant.controller.settings import settings_from_env

POLICY = [
    "--set",
    "policy.allowedS3Endpoints={http://minio.storage:9000}",
    "--set",
    "policy.allowedImageRepositories={registry.corp/ml/}",
    "--set",
    "policy.allowedServiceAccounts={s3-reader}",
    "--set",
    "policy.tokenServiceAccounts={s3-reader}",
    "--set",
    "policy.allowedCredentialsSecrets={s3-*}",
    "--set",
    "jobs.serviceAccountName=quantizer",
]


def _cel(vap: dict[str, Any]) -> str:
    spec = vap["spec"]
    return "\n".join([v["expression"] for v in spec["variables"]] + [v["expression"] for v in spec["validations"]])


def test_the_admission_policy_and_the_operator_get_the_same_lists(helm: str) -> None:
    kinds = by_kind(render(helm, *POLICY))
    (vap,), (binding,) = kinds["ValidatingAdmissionPolicy"], kinds["ValidatingAdmissionPolicyBinding"]
    assert binding["spec"]["policyName"] == vap["metadata"]["name"] and binding["spec"]["validationActions"] == ["Deny"]
    assert "matchResources" not in binding["spec"]  # cluster-wide install: every namespace
    cel = _cel(vap)
    assert '["http://minio.storage:9000"]' in cel and '["s3-*"]' in cel
    assert '["s3-reader","quantizer"]' in cel
    assert '"registry.corp/ml/"' in cel and '"edgequant/quantizer-tflite"' in cel
    settings = settings_from_env({k: str(v) for k, v in env_of(kinds["Deployment"][0]).items() if isinstance(v, str)})
    assert settings.allowed_s3_endpoints == ["http://minio.storage:9000"]
    assert settings.allowed_image_repositories == ["registry.corp/ml/"]
    assert settings.allowed_service_accounts == ["s3-reader"] and settings.token_service_accounts == ["s3-reader"]
    assert settings.allowed_credentials_secrets == ["s3-*"] and settings.worker_service_account == "quantizer"
    assert settings.default_active_deadline_seconds == 21600 and settings.scratch_size == "20Gi"
    # Only a changed spec is judged, so the operator's metadata updates of an older object are never refused.
    assert [c["name"] for c in vap["spec"]["matchConditions"]] == ["spec-is-new"]


def test_namespaced_install_binds_the_policy_to_the_served_namespaces_only(helm: str) -> None:
    kinds = by_kind(render(helm, "--set", "operator.watchNamespaces={team-a,team-b}"))
    (binding,) = kinds["ValidatingAdmissionPolicyBinding"]
    (expr,) = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert expr == {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
    assert "ValidatingAdmissionPolicy" not in by_kind(render(helm, "--set", "policy.admissionPolicy.enabled=false"))


def test_the_cel_patterns_are_the_operators(helm: str) -> None:
    cel = _cel(by_kind(render(helm))["ValidatingAdmissionPolicy"][0])
    assert json.dumps(policy.AWS_S3_HOST.pattern) in cel
    (query,) = re.findall(r'lowerAscii\(\)\.matches\("(\[\?&\]\(([^)]*)\)=)"\)', cel)
    assert set(query[1].split("|")) == set(CREDENTIAL_QUERY_KEYS)
