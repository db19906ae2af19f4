"""Operator settings from EDGEQUANT_OPERATOR_* env and flags; RBAC declared as data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from edgequant.api import v1alpha1 as api
from edgequant.controller import rbac
from edgequant.controller.settings import DEFAULT_IMAGES, OperatorSettings, settings_from_env


def test_defaults() -> None:
    s = settings_from_env({})
    assert s == OperatorSettings()
    assert s.namespaces == [] and s.max_concurrent_jobs == 0 and s.peering_name is None
    assert s.liveness_port == 8080 and s.metrics_port == 9090 and s.log_format == "json"
    assert set(s.images) == {f.value for f in api.MethodFamily}


def test_env_values_are_parsed_per_field_type() -> None:
    s = settings_from_env(
        {
            "EDGEQUANT_OPERATOR_NAMESPACES": "team-a, team-b,",
            "EDGEQUANT_OPERATOR_IMAGES": json.dumps({"tflite": "reg/tfl:9"}),
            "EDGEQUANT_OPERATOR_MAX_CONCURRENT_JOBS": "4",
            "EDGEQUANT_OPERATOR_DEFAULT_REQUESTS": '{"cpu": "2"}',
            "EDGEQUANT_OPERATOR_GPU_TOLERATIONS": '[{"key": "gpu", "operator": "Exists"}]',
            "EDGEQUANT_OPERATOR_PEERING_NAME": "eq",
            "EDGEQUANT_OPERATOR_LOG_FORMAT": "plain",
            "EDGEQUANT_OPERATOR_METRICS_PORT": "",  # empty = default
        }
    )
    assert s.namespaces == ["team-a", "team-b"]
    assert s.images == {**DEFAULT_IMAGES, "tflite": "reg/tfl:9"}
    assert s.max_concurrent_jobs == 4 and s.default_requests == {"cpu": "2"}
    assert s.gpu_tolerations == [{"key": "gpu", "operator": "Exists"}]
    assert s.peering_name == "eq" and s.log_format == "plain" and s.metrics_port == 9090


def test_flags_override_env() -> None:
    s = settings_from_env({"EDGEQUANT_OPERATOR_MAX_CONCURRENT_JOBS": "4"}, max_concurrent_jobs=9, namespaces=None)
    assert s.max_concurrent_jobs == 9


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"EDGEQUANT_OPERATOR_MAX_CONCURRENT_JOBS": "many"}, "EDGEQUANT_OPERATOR_MAX_CONCURRENT_JOBS"),
        ({"EDGEQUANT_OPERATOR_IMAGES": "{not json"}, "EDGEQUANT_OPERATOR_IMAGES"),
        ({"EDGEQUANT_OPERATOR_IMAGES": '{"caffe": "x"}'}, "EDGEQUANT_OPERATOR_IMAGES"),
        ({"EDGEQUANT_OPERATOR_LOG_FORMAT": "xml"}, "EDGEQUANT_OPERATOR_LOG_FORMAT"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        settings_from_env(env)


def test_cli_prints_effective_settings_and_rejects_bad_ones() -> None:
    run = [sys.executable, "-m", "edgequant.cli.main", "operator"]
    env = {"PATH": "/usr/bin:/bin", "EDGEQUANT_OPERATOR_NAMESPACES": "x"}
    done = subprocess.run(
        [*run, "--print-settings", "-n", "a", "-n", "b", "--image", "torch=reg/t:1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["namespaces"] == ["a", "b"] and printed["images"]["torch"] == "reg/t:1"
    bad = subprocess.run(
        [*run, "--print-settings", "--image", "torch"], capture_output=True, text=True, env=env, timeout=60
    )
    assert bad.returncode == 2 and "FAMILY=IMAGE" in bad.stderr
    worse = subprocess.run(
        [*run, "--print-settings"],
        capture_output=True,
        text=True,
        env={**env, "EDGEQUANT_OPERATOR_WORKERS": "0"},
        timeout=60,
    )
    assert worse.returncode == 2 and "EDGEQUANT_OPERATOR_WORKERS" in worse.stderr


def test_rbac_rules_grant_what_the_operator_uses_and_no_secrets() -> None:
    doc = yaml.safe_load(rbac.as_yaml())
    rules = doc["servedNamespaces"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    for need in [
        ("edgequant.io", "quantizationjobs", "watch"),
        ("edgequant.io", "quantizationjobs", "patch"),
        ("edgequant.io", "quantizationjobs/status", "patch"),
        ("batch", "jobs", "create"),
        ("batch", "jobs", "delete"),
        ("batch", "jobs", "watch"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "events", "create"),
    ]:
        assert need in granted, need
    assert not any(r in ("secrets", "*") for rule in rules for r in rule["resources"])
    assert not any(v == "*" for rule in rules for v in rule["verbs"])
    assert doc["peeringClusterWide"][0]["resources"] == ["clusterkopfpeerings"]
    assert doc["peeringNamespaced"][0]["resources"] == ["kopfpeerings"]
