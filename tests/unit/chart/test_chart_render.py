"""The chart as helm renders it: lint, defaults, non-default values, the values schema, CRDs identical to crds/.

These run the real helm binary (make cluster-bins) without a cluster; tests/e2e/test_chart*.py apply the
same renders to the real control plane.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import yaml
from chart_tools import ROOT

from edgequant.api import v1alpha1 as api

CHART = ROOT / "charts" / "edgequant"

NON_DEFAULT = [
    "--set",
    "replicaCount=2",
    "--set",
    "operator.watchNamespaces={team-a,team-b}",
    "--set",
    "image.repository=registry.example/edge/operator",
    "--set",
    "image.tag=1.2.3",
    "--set",
    "quantizerImages.tflite.repository=registry.example/edge/tflite",
    "--set",
    "quantizerImages.tflite.tag=2.21",
    "--set",
    "quantizerImages.tensorrt.tag=trt-10",
    "--set",
    "metrics.service.enabled=true",
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.serviceMonitor.labels.release=prom",
    "--set",
    "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/edgequant",
    "--set",
    "nodeSelector.kubernetes\\.io/os=linux",
    "--set",
    "operator.logFormat=plain",
    "--set",
    "jobs.maxConcurrent=4",
    "--set",
    "jobs.serviceAccountName=quantizer",
    "--set-string",
    "jobs.defaultResources.requests.cpu=2",
    "--set",
    "operator.resyncSeconds=0",
    "--set",
    "kueue.enabled=true",
]


def render(helm: str, *args: str, release: str = "eq", namespace: str = "edgequant-system") -> list[dict[str, Any]]:
    done = subprocess.run(
        [helm, "template", release, str(CHART), "--namespace", namespace, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_lint_strict_with_default_and_non_default_values(helm: str) -> None:
    for args in ([], NON_DEFAULT):
        done = subprocess.run([helm, "lint", "--strict", str(CHART), *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "0 chart(s) failed" in done.stdout


def test_default_render_is_one_cluster_wide_operator(helm: str) -> None:
    kinds = by_kind(render(helm))
    assert sorted(kinds) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    deployment = kinds["Deployment"][0]
    assert deployment["metadata"]["namespace"] == "edgequant-system"
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == kinds["ServiceAccount"][0]["metadata"]["name"]
    binding = kinds["ClusterRoleBinding"][0]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": kinds["ClusterRole"][0]["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "edgequant-system"}
    ]
    env = env_of(deployment)
    assert env["EDGEQUANT_OPERATOR_NAMESPACES"] == ""
    assert env["EDGEQUANT_OPERATOR_PEERING_NAME"] == ""
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert pod["containers"][0]["image"] == f"edgequant/operator:{version}"
    assert json.loads(env["EDGEQUANT_OPERATOR_IMAGES"]) == {
        f.value: f"edgequant/quantizer-{f.value}:{version}" for f in api.MethodFamily
    }


def test_operator_pod_is_locked_down_and_probed(helm: str) -> None:
    deployment = by_kind(render(helm))["Deployment"][0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe["path"] == "/healthz" and ports[probe["port"]] == int(
        env_of(deployment)["EDGEQUANT_OPERATOR_LIVENESS_PORT"]
    )
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_non_default_render_is_namespaced_peered_and_monitored(helm: str) -> None:
    kinds = by_kind(render(helm, *NON_DEFAULT))
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    assert sorted(r["metadata"]["namespace"] for r in kinds["Role"]) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in kinds["RoleBinding"]) == ["team-a", "team-b"]
    sa = kinds["ServiceAccount"][0]
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/edgequant"}
    for binding in kinds["RoleBinding"]:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "edgequant-system"}
        ]
        assert binding["roleRef"]["kind"] == "Role"
    peerings = kinds["KopfPeering"]
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert "ClusterKopfPeering" not in kinds
    deployment = kinds["Deployment"][0]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/edge/operator:1.2.3"
    env = env_of(deployment)
    assert env["EDGEQUANT_OPERATOR_NAMESPACES"] == "team-a,team-b"
    assert env["EDGEQUANT_OPERATOR_PEERING_NAME"] == peerings[0]["metadata"]["name"]
    assert env["EDGEQUANT_OPERATOR_LOG_FORMAT"] == "plain"
    images = json.loads(env["EDGEQUANT_OPERATOR_IMAGES"])
    assert images["tflite"] == "registry.example/edge/tflite:2.21"
    assert images["tensorrt"] == "edgequant/quantizer-tensorrt:trt-10"
    service = kinds["Service"][0]
    monitor = kinds["ServiceMonitor"][0]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_single_replica_can_still_peer_cluster_wide(helm: str) -> None:
    kinds = by_kind(render(helm, "--set", "peering.enabled=true", "--set", "peering.name=eq-peers"))
    assert [p["metadata"]["name"] for p in kinds["ClusterKopfPeering"]] == ["eq-peers"]
    assert env_of(kinds["Deployment"][0])["EDGEQUANT_OPERATOR_PEERING_NAME"] == "eq-peers"


def test_settings_change_rolls_the_pods(helm: str) -> None:
    def checksum(*args: str) -> str:
        return by_kind(render(helm, *args))["Deployment"][0]["spec"]["template"]["metadata"]["annotations"][
            "checksum/settings"
        ]

    assert checksum() == checksum()
    assert checksum() != checksum("--set", "quantizerImages.torch.tag=9.9")


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--set", "operator.watchNamespaces={Team_A}"], "/operator/watchNamespaces/0"),
        (["--set", "operator.logFormat=xml"], "/operator/logFormat"),
        (["--set", "jobs.runAsUser=0"], "/jobs/runAsUser"),
        (
            ["--set", "operator.extraEnv[0].name=X", "--set", "operator.extraEnv[0].value=1"],
            "/operator/extraEnv/0/value",
        ),
        (["--set", "quantizerImages.tflite.repository="], "/quantizerImages/tflite/repository"),
        (["--set", "quantizerImages.openvino.repository=x"], "openvino"),
        (["--set", "replicaCount=-1"], "/replicaCount"),
        (["--set", "metrics.serviceMonitor.enabled=true"], "metrics.service.enabled"),
        (["--set", "serviceAccount.create=false"], "serviceAccount.name is required"),
    ],
)
def test_bad_values_are_refused_naming_the_field(helm: str, args: list[str], complaint: str) -> None:
    done = subprocess.run([helm, "template", "eq", str(CHART), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert complaint in done.stderr, done.stderr


def test_quantizer_images_cover_every_method_family() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["quantizerImages"]) == {f.value for f in api.MethodFamily}
    for family, image in values["quantizerImages"].items():
        assert image["repository"].endswith(f"quantizer-{family}")
        assert (ROOT / "images" / f"quantizer-{family}" / "Dockerfile").is_file()
    assert (
        values["image"]["repository"].endswith("/operator") and (ROOT / "images" / "operator" / "Dockerfile").is_file()
    )


@pytest.mark.parametrize("name", ["edgequant.io_quantizationjobs.yaml", "edgequant.io_quantizationsweeps.yaml"])
def test_chart_crd_is_the_generated_crd_byte_for_byte(name: str) -> None:
    """`make chart-crds` copies crds/ into the chart; run it when this fails."""
    generated = ROOT / "crds" / name
    shipped = CHART / "crds" / generated.name
    assert shipped.read_bytes() == generated.read_bytes(), "run `make crd chart-crds` and commit charts/edgequant/crds/"


def test_rendered_crds_are_ours_and_kopfs_peering(helm: str) -> None:
    docs = render(helm, "--include-crds")
    crds = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {
        f"{api.PLURAL}.{api.GROUP}",
        f"quantizationsweeps.{api.GROUP}",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    assert crds[f"{api.PLURAL}.{api.GROUP}"] == yaml.safe_load(
        (ROOT / "crds" / "edgequant.io_quantizationjobs.yaml").read_text()
    )
    assert crds[f"quantizationsweeps.{api.GROUP}"] == yaml.safe_load(
        (ROOT / "crds" / "edgequant.io_quantizationsweeps.yaml").read_text()
    )
    assert crds["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    assert crds["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"


READ = {"get", "list", "watch"}


def granted_rules(helm: str, *args: str) -> list[dict[str, Any]]:
    return [rule for d in render(helm, *args) if d["kind"] in ("ClusterRole", "Role") for rule in d["rules"]]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--set", "replicaCount=3"],
        ["--set", "operator.watchNamespaces={team-a}", "--set", "peering.enabled=true"],
        ["--set", "kueue.enabled=true"],
    ],
    ids=["cluster-wide", "cluster-wide-peered", "namespaced-peered", "kueue"],
)
def test_rbac_grants_only_what_the_operator_uses(helm: str, args: list[str]) -> None:
    rules = granted_rules(helm, *args)
    allowed: dict[tuple[str, str], set[str]] = {
        (api.GROUP, api.PLURAL): READ | {"patch", "create"},  # create: a sweep's cells
        (api.GROUP, f"{api.PLURAL}/status"): {"get", "patch"},
        (api.GROUP, "quantizationsweeps"): READ | {"patch"},
        (api.GROUP, "quantizationsweeps/status"): {"get", "patch"},
        (api.GROUP, f"{api.PLURAL}/finalizers"): {"update"},  # blockOwnerDeletion on the Jobs it creates
        ("batch", "jobs"): READ | {"create", "delete", "patch"},
        ("", "pods"): READ,
        ("", "events"): {"create", "patch"},
        ("kopf.dev", "clusterkopfpeerings"): READ | {"patch"},
        ("kopf.dev", "kopfpeerings"): READ | {"patch"},
        ("kueue.x-k8s.io", "workloads"): READ,
    }
    seen = set()
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert resource != "secrets", "the operator never reads Secrets: Jobs reference them by name"
                assert (group, resource) in allowed, f"unexpected grant on {group}/{resource}"
                assert set(rule["verbs"]) <= allowed[(group, resource)], f"{group}/{resource}: {rule['verbs']}"
                seen.add((group, resource))
    for needed in [
        (api.GROUP, api.PLURAL),
        (api.GROUP, f"{api.PLURAL}/status"),
        (api.GROUP, f"{api.PLURAL}/finalizers"),
        (api.GROUP, "quantizationsweeps"),
        ("batch", "jobs"),
        ("", "pods"),
        ("", "events"),
    ]:
        assert needed in seen, f"{needed} is not granted"


def test_peering_is_granted_only_with_peering_and_in_the_right_scope(helm: str) -> None:
    def resources(*args: str) -> set[str]:
        return {r for rule in granted_rules(helm, *args) for r in rule["resources"]}

    assert not resources() & {"clusterkopfpeerings", "kopfpeerings"}
    assert resources("--set", "replicaCount=2") & {"clusterkopfpeerings", "kopfpeerings"} == {"clusterkopfpeerings"}
    namespaced = resources("--set", "replicaCount=2", "--set", "operator.watchNamespaces={team-a}")
    assert namespaced & {"clusterkopfpeerings", "kopfpeerings"} == {"kopfpeerings"}


def test_the_operator_reads_exactly_what_the_chart_sets(helm: str) -> None:
    """The real settings parser (`edgequant operator --print-settings`) fed the rendered env, defaults and not."""
    from edgequant.controller.settings import ENV_PREFIX, OperatorSettings

    for args in ([], NON_DEFAULT):
        deployment = by_kind(render(helm, *args))["Deployment"][0]
        env = {k: v for k, v in env_of(deployment).items() if isinstance(v, str)}
        ours = {k for k in env if k.startswith(ENV_PREFIX)}
        # Left to the operator on purpose: each replica draws its own peering priority, so replicas never tie.
        left_out = {"peering_priority"}
        expected = {ENV_PREFIX + field.upper() for field in OperatorSettings.model_fields if field not in left_out}
        assert ours == expected, "the chart must set every operator setting (or say here why not)"
        done = subprocess.run(
            [sys.executable, "-m", "edgequant.cli.main", "operator", "--print-settings"],
            env={"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        settings = json.loads(done.stdout)
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        if args:
            assert settings["namespaces"] == ["team-a", "team-b"]
            assert settings["peering_name"] == "eq-edgequant"
            assert settings["max_concurrent_jobs"] == 4 and settings["worker_service_account"] == "quantizer"
            assert settings["default_requests"] == {"cpu": "2", "memory": "2Gi"}
            assert settings["images"]["tflite"] == "registry.example/edge/tflite:2.21"
            assert settings["log_format"] == "plain"
            assert settings["resync_seconds"] == 0
            assert settings["kueue"] is True
        else:
            assert settings["namespaces"] == [] and settings["peering_name"] is None
            assert settings["kueue"] is values["kueue"]["enabled"] is False
            assert settings["worker_service_account"] is None
            assert settings["default_requests"] == values["jobs"]["defaultResources"]["requests"]
            assert settings["default_limits"] == values["jobs"]["defaultResources"]["limits"]
            assert settings["gpu_tolerations"] == values["jobs"]["gpu"]["tolerations"]
            assert settings["images"] == {
                f: f"{i['repository']}:{yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']}"
                for f, i in values["quantizerImages"].items()
            }
        assert settings["liveness_port"] == values["liveness"]["port"]
        assert settings["metrics_port"] == values["metrics"]["port"]
        assert settings["run_as_user"] == values["jobs"]["runAsUser"]
        assert settings["workers"] == values["operator"]["workers"]
        if not args:
            assert settings["resync_seconds"] == values["operator"]["resyncSeconds"]
        assert settings["peering_priority"] is None


def test_chart_rbac_is_generated_from_what_the_operator_declares(helm: str) -> None:
    """`make chart-rbac` writes files/rbac-rules.yaml from edgequant.controller.rbac; run it when this fails."""
    from edgequant.controller import rbac

    shipped = (CHART / "files" / "rbac-rules.yaml").read_text()
    header, _, body = shipped.partition("\n")
    assert header.startswith("# Generated by `make chart-rbac`")
    assert body == rbac.as_yaml(), "run `make chart-rbac` and commit charts/edgequant/files/rbac-rules.yaml"
    assert granted_rules(helm) == rbac.RULES
    assert granted_rules(helm, "--set", "replicaCount=2") == rbac.RULES + rbac.PEERING_CLUSTER_WIDE
    assert (
        granted_rules(helm, "--set", "replicaCount=2", "--set", "operator.watchNamespaces={a}")
        == rbac.RULES + rbac.PEERING_NAMESPACED
    )
    assert granted_rules(helm, "--set", "kueue.enabled=true") == rbac.RULES + rbac.KUEUE
    assert (
        granted_rules(helm, "--set", "kueue.enabled=true", "--set", "operator.watchNamespaces={a}")
        == rbac.RULES + rbac.KUEUE
    )
