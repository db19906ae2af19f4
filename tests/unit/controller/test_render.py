"""The batch/v1 Job rendered from a QuantizationJob: pure, no cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgequant.api import exitcodes
from edgequant.api import v1alpha1 as api
from edgequant.api import worker_contract as contract
from edgequant.controller import naming, render
from edgequant.controller.settings import OperatorSettings

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))
OWNER = render.Owner(name="mnist", namespace="team-a", uid="0b6f-uid", generation=3)


def spec_of(**overrides: Any) -> api.QuantizationJobSpec:
    spec: dict[str, Any] = {
        "method": "tflite-dynamic-range",
        "model": {"uri": "s3://models/cnn.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
        "output": {"uri": "s3://artifacts/mnist/"},
    }
    spec.update(overrides)
    return api.QuantizationJobSpec.model_validate(spec)


def rendered(
    spec: api.QuantizationJobSpec, settings: OperatorSettings | None = None, owner: render.Owner = OWNER
) -> dict[str, Any]:
    return render.render_job(owner=owner, spec=spec, settings=settings or OperatorSettings())


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(job)["env"]}


def test_rendering_is_deterministic_and_named_after_name_and_generation() -> None:
    spec = spec_of()
    first, second = rendered(spec), rendered(spec)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert first["metadata"]["name"] == "mnist-g3"
    assert first["metadata"]["namespace"] == "team-a"
    assert (
        rendered(spec, owner=render.Owner(name="mnist", namespace="team-a", uid="u", generation=4))["metadata"]["name"]
        == "mnist-g4"
    )


def test_owner_reference_makes_the_job_garbage_collected_with_its_quantizationjob() -> None:
    (ref,) = rendered(spec_of())["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationJob",
        "name": "mnist",
        "uid": "0b6f-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_labels_on_job_and_pod_template() -> None:
    job = rendered(spec_of(method="tflite-float16"))
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels[naming.LABEL_JOB] == "mnist"
        assert labels[naming.LABEL_GENERATION] == "3"
        assert labels[naming.LABEL_METHOD] == "tflite-float16"
        assert labels[naming.LABEL_MANAGED_BY] == naming.MANAGED_BY


@pytest.mark.parametrize("method", list(api.Method))
def test_image_per_method_family_from_settings(method: api.Method) -> None:
    images = {"tflite": "reg/tfl:1", "torch": "reg/torch:2", "onnx": "reg/onnx:4", "tensorrt": "reg/trt:3"}
    settings = OperatorSettings(images=images)
    expected = images[method.family.value]
    example = next(p for p in EXAMPLES if yaml.safe_load(p.read_text())["spec"]["method"] == method.value)
    spec = api.QuantizationJob.model_validate(yaml.safe_load(example.read_text())).spec
    assert container(rendered(spec, settings))["image"] == expected


def test_spec_image_override_wins() -> None:
    job = rendered(spec_of(execution={"image": "mine/quantizer:dev"}))
    assert container(job)["image"] == "mine/quantizer:dev"


def test_worker_command_and_spec_in_env_round_trip() -> None:
    spec = spec_of(
        acceptance={"maxAccuracyDrop": 0.02}, evaluation={"dataset": {"uri": "s3://d/eval/", "layout": "imagefolder"}}
    )
    job = rendered(spec)
    assert container(job)["command"] == ["edgequant-worker"]
    document = json.loads(env_of(job)[contract.SPEC_ENV]["value"])
    assert document["metadata"] == {"name": "mnist", "namespace": "team-a", "generation": 3}
    again = api.QuantizationJob.model_validate(document)
    assert again.spec == spec


def test_the_worker_reads_the_spec_from_the_rendered_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from edgequant.worker import main as worker_main
    from edgequant.worker.runner import spec_from_document

    spec = spec_of(acceptance={"maxAccuracyDrop": 0.02})
    env = env_of(rendered(spec))
    for name, entry in env.items():
        if "value" in entry:
            monkeypatch.setenv(name, entry["value"])
    args = argparse.Namespace(spec=None, spec_file=None)
    assert spec_from_document(worker_main._read_document(args)) == (spec, "mnist", "team-a")


def test_cpu_job_gets_no_gpu_and_default_resources() -> None:
    job = rendered(spec_of())
    pod = job["spec"]["template"]["spec"]
    res = container(job)["resources"]
    assert res == {"requests": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "20Gi"}, "limits": {"memory": "8Gi"}}
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_user_resources_override_defaults() -> None:
    job = rendered(spec_of(resources={"requests": {"cpu": "500m"}, "limits": {"cpu": "2", "memory": "3Gi"}}))
    assert container(job)["resources"] == {
        "requests": {"cpu": "500m", "memory": "2Gi", "ephemeral-storage": "20Gi"},
        "limits": {"cpu": "2", "memory": "3Gi"},
    }


@pytest.mark.parametrize("method", ["tensorrt-fp16", "tensorrt-int8", "tensorrt-mixed"])
def test_tensorrt_methods_request_a_gpu_and_land_on_gpu_nodes(method: str) -> None:
    overrides: dict[str, Any] = {
        "method": method,
        "model": {"uri": "s3://m/m.onnx", "input": {"shape": [3, 32, 32], "layout": "NCHW"}},
    }
    if method != "tensorrt-fp16":
        overrides["calibration"] = {"dataset": {"uri": "s3://d/cal/", "layout": "imagefolder"}}
    job = rendered(spec_of(**overrides, resources={"gpus": 2}))
    pod = job["spec"]["template"]["spec"]
    res = container(job)["resources"]
    assert res["requests"]["nvidia.com/gpu"] == "2" and res["limits"]["nvidia.com/gpu"] == "2"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_accelerator_gpu_puts_a_tflite_job_on_a_gpu_node_and_keeps_user_scheduling() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
            }
        }
    }
    job = rendered(
        spec_of(
            resources={"accelerator": "gpu"},
            scheduling={
                "nodeSelector": {"pool": "quant"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
                "affinity": affinity,
                "priorityClassName": "batch-low",
            },
        )
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true", "pool": "quant"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]
    assert pod["affinity"] == affinity
    assert pod["priorityClassName"] == "batch-low"
    assert container(job)["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_gpu_settings_are_configurable() -> None:
    settings = OperatorSettings(
        gpu_resource="amd.com/gpu",
        gpu_node_selector={"gpu": "yes"},
        gpu_tolerations=[{"key": "gpu", "operator": "Exists"}],
    )
    job = rendered(spec_of(resources={"accelerator": "gpu"}), settings)
    pod = job["spec"]["template"]["spec"]
    assert container(job)["resources"]["limits"]["amd.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"gpu": "yes"} and pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]


def test_job_knobs() -> None:
    job = rendered(
        spec_of(
            execution={"backoffLimit": 4, "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 600}, suspend=True
        )
    )
    assert job["spec"]["backoffLimit"] == 4
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    assert "ttlSecondsAfterFinished" not in job["spec"]  # set by the operator once the status holds the result
    assert job["spec"]["suspend"] is True
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    plain = rendered(spec_of())["spec"]
    assert "ttlSecondsAfterFinished" not in plain and plain["suspend"] is False
    # A hung run ends: the operator's default deadline (6 h) applies when the spec gives none; 0 turns it off.
    assert plain["activeDeadlineSeconds"] == 6 * 3600
    assert (
        rendered(spec_of(), OperatorSettings(default_active_deadline_seconds=600))["spec"]["activeDeadlineSeconds"]
        == 600
    )
    assert (
        "activeDeadlineSeconds" not in rendered(spec_of(), OperatorSettings(default_active_deadline_seconds=0))["spec"]
    )


def test_pod_failure_policy_maps_the_worker_exit_codes() -> None:
    rules = rendered(spec_of())["spec"]["podFailurePolicy"]["rules"]
    fail_job = [r for r in rules if r["action"] == "FailJob"]
    assert len(fail_job) == 1
    on_codes = fail_job[0]["onExitCodes"]
    assert on_codes["operator"] == "In" and on_codes["containerName"] == naming.CONTAINER_NAME
    assert set(on_codes["values"]) == {int(c) for c in exitcodes.NON_RETRIABLE}
    retriable = set(exitcodes.ExitCode) - set(exitcodes.NON_RETRIABLE)
    assert not retriable & set(on_codes["values"])  # storage outages, crashes count against backoffLimit
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
    assert 0 not in on_codes["values"]  # the API server rejects 0 in an In rule


def test_security_context_is_locked_down_with_a_scratch_volume() -> None:
    job = rendered(spec_of())
    pod = job["spec"]["template"]["spec"]
    sc = container(job)["securityContext"]
    assert (
        sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    )
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"
    }
    assert {"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}} in pod["volumes"]
    assert {"name": "scratch", "mountPath": contract.SCRATCH_DIR} in container(job)["volumeMounts"]
    env = env_of(job)
    for var in ("TMPDIR", "HOME", contract.WORKDIR_ENV):
        assert env[var]["value"] == contract.SCRATCH_DIR
    assert container(job)["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["automountServiceAccountToken"] is False


def test_s3_credentials_come_from_the_secret_by_reference_only() -> None:
    job = rendered(
        spec_of(
            storage={"endpoint": "http://minio:9000", "credentialsSecret": {"name": "s3", "sessionTokenKey": "token"}}
        )
    )
    env = env_of(job)
    assert env["AWS_ACCESS_KEY_ID"] == {
        "name": "AWS_ACCESS_KEY_ID",
        "valueFrom": {"secretKeyRef": {"name": "s3", "key": "AWS_ACCESS_KEY_ID"}},
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "s3", "key": "token"}
    assert all("value" not in e for name, e in env.items() if name.startswith("AWS_"))
    without = env_of(rendered(spec_of()))
    assert not any(name.startswith("AWS_") for name in without)


def test_ca_bundle_configmap_is_mounted_and_named_to_the_worker() -> None:
    job = rendered(
        spec_of(storage={"endpoint": "https://s3.internal", "caBundle": {"configMap": "corp-ca", "key": "bundle.pem"}})
    )
    pod = job["spec"]["template"]["spec"]
    assert {"name": "ca-bundle", "configMap": {"name": "corp-ca"}} in pod["volumes"]
    assert {"name": "ca-bundle", "mountPath": contract.CA_BUNDLE_DIR, "readOnly": True} in container(job)[
        "volumeMounts"
    ]
    assert env_of(job)[contract.CA_BUNDLE_ENV]["value"] == f"{contract.CA_BUNDLE_DIR}/bundle.pem"


def test_service_account_for_workload_identity_without_an_api_token() -> None:
    pod = rendered(spec_of(storage={"serviceAccountName": "s3-reader"}))["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "s3-reader" and pod["automountServiceAccountToken"] is False
    default = rendered(spec_of(), OperatorSettings(worker_service_account="quantizer"))["spec"]["template"]["spec"]
    assert default["serviceAccountName"] == "quantizer" and default["automountServiceAccountToken"] is False
    # Only a ServiceAccount the admin lists in token_service_accounts gets the Kubernetes API token.
    listed = OperatorSettings(worker_service_account="quantizer", token_service_accounts=["quantizer"])
    assert rendered(spec_of(), listed)["spec"]["template"]["spec"]["automountServiceAccountToken"] is True


def test_scratch_disk_is_bounded_requested_and_told_to_the_worker() -> None:
    job = rendered(spec_of(resources={"scratchSize": "50Gi"}))
    pod = job["spec"]["template"]["spec"]
    assert {"name": "scratch", "emptyDir": {"sizeLimit": "50Gi"}} in pod["volumes"]
    assert container(job)["resources"]["requests"]["ephemeral-storage"] == "50Gi"
    assert env_of(job)[contract.SCRATCH_LIMIT_ENV]["value"] == "50Gi"
    small = rendered(spec_of(), OperatorSettings(scratch_size="5Gi"))
    assert {"name": "scratch", "emptyDir": {"sizeLimit": "5Gi"}} in small["spec"]["template"]["spec"]["volumes"]
    assert env_of(small)[contract.SCRATCH_LIMIT_ENV]["value"] == "5Gi"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_renders_a_job_with_credentials_by_reference(example: Path) -> None:
    qj = api.QuantizationJob.model_validate(yaml.safe_load(example.read_text()))
    job = rendered(qj.spec)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    for var in env_of(job).values():
        assert not (var["name"].startswith("AWS_") and "value" in var), var
    assert len(job["metadata"]["name"]) <= 63


def test_the_worker_learns_its_memory_budget_from_the_containers_limit() -> None:
    job = rendered(spec_of())  # the operator's default limit (memory 8Gi)
    assert container(job)["resources"]["limits"]["memory"] == "8Gi"
    ref = env_of(job)[contract.MEMORY_BUDGET_ENV]["valueFrom"]["resourceFieldRef"]
    assert ref == {"containerName": naming.CONTAINER_NAME, "resource": "limits.memory"}
    # no memory limit at all: the worker reads its cgroup (or a default), never the node's allocatable memory
    unlimited = rendered(spec_of(), OperatorSettings(default_limits={}))
    assert "memory" not in container(unlimited)["resources"]["limits"] and contract.MEMORY_BUDGET_ENV not in env_of(
        unlimited
    )
