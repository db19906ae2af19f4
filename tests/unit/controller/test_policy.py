"""The admin's QuantizationJob policy (controller/policy.py): pure decisions, no cluster."""

from __future__ import annotations

from typing import Any

import pytest

from edgequant.api import v1alpha1 as api
from edgequant.api.uri_credentials import embedded_credentials
from edgequant.controller import policy
from edgequant.controller.settings import OperatorSettings, settings_from_env

SECRET_VALUE = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"


def spec_of(**overrides: Any) -> api.QuantizationJobSpec:
    spec: dict[str, Any] = {
        "method": "tflite-dynamic-range",
        "model": {"uri": "s3://models/cnn.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
        "output": {"uri": "s3://artifacts/mnist/"},
    }
    spec.update(overrides)
    return api.QuantizationJobSpec.model_validate(spec)


def fields(spec: api.QuantizationJobSpec, settings: OperatorSettings | None = None) -> list[str]:
    return [v.field for v in policy.violations(spec, settings or OperatorSettings())]


def test_a_plain_aws_job_breaks_no_policy() -> None:
    assert fields(spec_of()) == []
    assert (
        fields(spec_of(storage={"endpoint": "https://s3.eu-west-1.amazonaws.com", "credentialsSecret": {"name": "s3"}}))
        == []
    )
    assert fields(spec_of(storage={"endpoint": "https://s3.dualstack.us-east-1.amazonaws.com"})) == []


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://attacker.example:9000",
        "https://s3.amazonaws.com.attacker.example",
        "http://s3.amazonaws.com",
        "https://bucket.attacker.example/s3.amazonaws.com",
        "http://127.0.0.1:9000",
    ],
)
def test_an_endpoint_the_admin_did_not_list_is_refused_naming_the_policy_and_the_fix(endpoint: str) -> None:
    found = policy.violations(
        spec_of(storage={"endpoint": endpoint, "credentialsSecret": {"name": "s3"}}), OperatorSettings()
    )
    assert [v.field for v in found] == ["spec.storage.endpoint"]
    message = policy.describe(found)
    assert "policy.allowedS3Endpoints" in message and "ask the cluster admin" in message


def test_listed_endpoints_match_by_scheme_host_and_port() -> None:
    settings = OperatorSettings(allowed_s3_endpoints=["http://minio.storage.svc:9000", "https://ceph.example"])
    for endpoint in ("http://minio.storage.svc:9000", "http://MINIO.storage.svc:9000/", "https://ceph.example:443/x"):
        assert fields(spec_of(storage={"endpoint": endpoint}), settings) == [], endpoint
    for endpoint in ("http://minio.storage.svc:9001", "https://minio.storage.svc:9000", "http://ceph.example"):
        assert fields(spec_of(storage={"endpoint": endpoint}), settings) == ["spec.storage.endpoint"], endpoint


def test_images_must_come_from_allowed_repositories() -> None:
    defaults = OperatorSettings()
    assert fields(spec_of(execution={"image": "ghcr.io/edgequant/quantizer-tflite:0.2.0"}), defaults) == []
    assert fields(spec_of(execution={"image": "ghcr.io/edgequant/quantizer-torch@sha256:" + "a" * 64}), defaults) == []
    for image in (
        "docker.io/attacker/miner:1",
        "ghcr.io/edgequant/quantizer-tflite-evil:1",
        "ghcr.io/edgequant/quantizer-tflite/x:1",
    ):
        found = policy.violations(spec_of(execution={"image": image}), defaults)
        assert [v.field for v in found] == ["spec.execution.image"], image
        assert "policy.allowedImageRepositories" in str(found[0]) and "drop the field" in str(found[0])
    below = OperatorSettings(allowed_image_repositories=["registry.corp:5000/ml/", "quay.io/team/quantizer"])
    assert fields(spec_of(execution={"image": "registry.corp:5000/ml/quantizer:3"}), below) == []
    assert fields(spec_of(execution={"image": "quay.io/team/quantizer:latest"}), below) == []
    assert fields(spec_of(execution={"image": "registry.corp:5000/mlx/quantizer:3"}), below) == ["spec.execution.image"]
    assert policy.image_repository("registry.corp:5000/ml/q:3") == "registry.corp:5000/ml/q"
    assert policy.image_repository("registry.corp:5000/ml/q") == "registry.corp:5000/ml/q"


def test_service_accounts_and_api_tokens_are_the_admins_choice() -> None:
    assert fields(spec_of(storage={"serviceAccountName": "cluster-admin-ish"})) == ["spec.storage.serviceAccountName"]
    settings = OperatorSettings(worker_service_account="quantizer", allowed_service_accounts=["s3-reader"])
    assert fields(spec_of(storage={"serviceAccountName": "quantizer"}), settings) == []
    assert fields(spec_of(storage={"serviceAccountName": "s3-reader"}), settings) == []
    found = policy.violations(spec_of(storage={"serviceAccountName": "default"}), settings)
    assert "quantizer, s3-reader" in str(found[0]) and "policy.allowedServiceAccounts" in str(found[0])
    assert not policy.mounts_api_token("s3-reader", settings) and not policy.mounts_api_token(None, settings)
    assert policy.mounts_api_token("s3-reader", OperatorSettings(token_service_accounts=["s3-reader"]))


def test_credentials_secrets_can_be_limited_by_name_or_prefix() -> None:
    settings = OperatorSettings(allowed_credentials_secrets=["s3-credentials", "team-a-s3-*"])
    assert fields(spec_of(storage={"credentialsSecret": {"name": "s3-credentials"}}), settings) == []
    assert fields(spec_of(storage={"credentialsSecret": {"name": "team-a-s3-prod"}}), settings) == []
    assert fields(spec_of(storage={"credentialsSecret": {"name": "db-password"}}), settings) == [
        "spec.storage.credentialsSecret.name"
    ]
    assert fields(spec_of(storage={"credentialsSecret": {"name": "anything"}})) == []  # default "*"


def test_all_violations_are_reported_at_once() -> None:
    spec = spec_of(storage={"endpoint": "http://evil:1", "serviceAccountName": "x"}, execution={"image": "evil/img:1"})
    assert fields(spec) == ["spec.storage.endpoint", "spec.storage.serviceAccountName", "spec.execution.image"]


@pytest.mark.parametrize(
    "uri",
    [
        f"s3://AKIAEXAMPLE:{SECRET_VALUE}@bucket/m.keras",
        f"https://{SECRET_VALUE}@host/x",
        f"s3://b/m.keras?X-Amz-Signature={SECRET_VALUE}",
        f"s3://b/m.keras?x=1&X-Amz-Credential={SECRET_VALUE}",
        f"https://h/x?sig={SECRET_VALUE}",
        f"s3://b/k?AWSAccessKeyId={SECRET_VALUE}",
    ],
)
def test_credentials_in_a_uri_are_refused_without_echoing_them(uri: str) -> None:
    assert embedded_credentials(uri) is not None
    field = "spec.model.uri" if uri.startswith("s3://") else "spec.storage.endpoint"
    document = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "spec": {
            "method": "tflite-dynamic-range",
            "output": {"uri": "s3://b/o/"},
            "model": {
                "uri": uri if field == "spec.model.uri" else "s3://b/m.keras",
                "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"},
            },
            **({"storage": {"endpoint": uri}} if field == "spec.storage.endpoint" else {}),
        },
    }
    from edgequant.api import validation

    _, problems = validation.validate_document(document)
    assert [p.field for p in problems] == [field]
    assert SECRET_VALUE not in str(problems[0]) and "credentialsSecret" in str(problems[0])


def test_uris_without_credentials_are_not_mistaken_for_them() -> None:
    for uri in ("s3://b/data@2024/x.npz", "s3://b/k?versionId=3", "https://minio:9000", "file:///data/a@b/c.npz"):
        assert embedded_credentials(uri) is None, uri


def test_policy_settings_come_from_env_as_comma_lists() -> None:
    s = settings_from_env(
        {
            "EDGEQUANT_OPERATOR_ALLOWED_S3_ENDPOINTS": "http://minio:9000, https://ceph.example",
            "EDGEQUANT_OPERATOR_ALLOWED_IMAGE_REPOSITORIES": "registry.corp/ml/",
            "EDGEQUANT_OPERATOR_ALLOWED_SERVICE_ACCOUNTS": "s3-reader",
            "EDGEQUANT_OPERATOR_TOKEN_SERVICE_ACCOUNTS": "",
            "EDGEQUANT_OPERATOR_DEFAULT_ACTIVE_DEADLINE_SECONDS": "7200",
            "EDGEQUANT_OPERATOR_SCRATCH_SIZE": "40Gi",
        }
    )
    assert s.allowed_s3_endpoints == ["http://minio:9000", "https://ceph.example"]
    assert s.allowed_image_repositories == ["registry.corp/ml/"] and s.allowed_service_accounts == ["s3-reader"]
    assert s.token_service_accounts == [] and s.allowed_credentials_secrets == ["*"]
    assert s.default_active_deadline_seconds == 7200 and s.scratch_size == "40Gi"


def test_a_host_may_be_allowed_on_any_port() -> None:
    settings = OperatorSettings(allowed_s3_endpoints=["http://127.0.0.1:*"])
    assert fields(spec_of(storage={"endpoint": "http://127.0.0.1:40123"}), settings) == []
    assert fields(spec_of(storage={"endpoint": "http://127.0.0.1"}), settings) == []
    assert fields(spec_of(storage={"endpoint": "https://127.0.0.1:40123"}), settings) == ["spec.storage.endpoint"]
    assert fields(spec_of(storage={"endpoint": "http://127.0.0.10:40123"}), settings) == ["spec.storage.endpoint"]
