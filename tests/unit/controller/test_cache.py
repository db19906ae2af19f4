"""Index entries the operator keeps of its Jobs and pods (pure parts of cache.py)."""

from __future__ import annotations

from edgequant.controller import cache

from .conftest import batch_job, pod


def test_job_entry_is_keyed_by_quantizationjob_and_keeps_what_reconcile_reads() -> None:
    job = batch_job("mnist-g2", active=1)
    job["metadata"]["labels"] = {"edgequant.io/quantizationjob": "mnist", "edgequant.io/generation": "2"}
    job["metadata"]["managedFields"] = [{"manager": "kube-controller-manager"}]
    job["spec"]["template"] = {"spec": {"containers": [{"env": [{"name": "EDGEQUANT_SPEC", "value": "{...}"}]}]}}
    entry = cache.job_entry(job)
    assert entry is not None
    key, value = entry
    assert key == ("team-a", "mnist")
    assert value["metadata"]["name"] == "mnist-g2" and value["metadata"]["ownerReferences"][0]["uid"] == "qj-uid"
    assert value["spec"] == {"suspend": False, "backoffLimit": 2} and value["status"]["active"] == 1
    assert "managedFields" not in value["metadata"]  # memory: the cache keeps no templates or field managers
    assert cache.job_entry(batch_job()) is None  # not labelled with a QuantizationJob


def test_pod_entry_is_keyed_by_its_job_uid() -> None:
    p = pod("mnist-g2-abcde", "Failed", exit_code=11, message="{}")
    p["metadata"].update(namespace="team-a", labels={cache.POD_JOB_UID_LABEL: "job-uid"}, uid="pod-uid")
    p["spec"] = {
        "containers": [
            {
                "name": "quantizer",
                "env": [{"name": "EDGEQUANT_SPEC", "value": "{...}"}],
                "resources": {"limits": {"memory": "3Gi", "cpu": "2"}, "requests": {"cpu": "1"}},
            }
        ],
        "nodeName": "node-1",
    }
    key, value = cache.pod_entry(p) or (None, None)
    assert key == ("team-a", "job-uid")
    assert value == {
        "metadata": {"name": "mnist-g2-abcde", "uid": "pod-uid", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {**p["status"], "conditions": []},
        # only the memory limit of the spec: an OOMKilled status names it
        "spec": {"containers": [{"name": "quantizer", "resources": {"limits": {"memory": "3Gi"}}}]},
    }


def test_cache_reads_snapshots_and_counts_running_jobs() -> None:
    done = batch_job("b-g1", uid="u2", succeeded=1, conditions=[("Complete", "CompletionsReached", "")])
    jobs = {
        ("ns", "a"): [batch_job("a-g1", uid="u1", active=1)],
        ("ns", "b"): [done],
        ("ns", "c"): [batch_job("c-g1", uid="u3", suspend=True)],
    }
    pods = {("ns", "u1"): [pod("a-g1-x", "Running")]}
    qjs = {("ns", "a"): [{"metadata": {"name": "a", "uid": "qa"}}]}
    c = cache.Cache(quantization_jobs=qjs, jobs=jobs, pods=pods)
    assert (
        c.quantization_job("ns", "a") == {"metadata": {"name": "a", "uid": "qa"}}
        and c.quantization_job("ns", "b") is None
    )
    assert [j["metadata"]["name"] for j in c.jobs_of("ns", "a")] == ["a-g1"]
    assert c.jobs_of("ns", "zzz") == []
    assert [p["metadata"]["name"] for p in c.pods_of({"metadata": {"namespace": "ns", "uid": "u1"}})] == ["a-g1-x"]
    assert c.pods_of({"metadata": {"namespace": "ns", "uid": "u2"}}) == []
    assert c.job_states() == {("ns", "a-g1"): True, ("ns", "b-g1"): False, ("ns", "c-g1"): False}


def test_quantization_job_entry_keeps_what_a_refresh_needs() -> None:
    body = {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationJob",
        "metadata": {
            "name": "a",
            "namespace": "ns",
            "uid": "u",
            "generation": 2,
            "resourceVersion": "77",
            "annotations": {"x": "y"},
        },
        "spec": {
            "method": "tflite-int8",
            "model": {"uri": "s3://m/m.keras"},
            "execution": {"backoffLimit": 2, "ttlSecondsAfterFinished": 60},
        },
        "status": {"phase": "Running"},
    }
    key, value = cache.quantization_job_entry(body)
    assert key == ("ns", "a")
    assert value == {
        "apiVersion": "edgequant.io/v1alpha1",
        "kind": "QuantizationJob",
        "metadata": {"name": "a", "namespace": "ns", "uid": "u", "generation": 2, "resourceVersion": "77"},
        "spec": {"method": "tflite-int8", "execution": {"ttlSecondsAfterFinished": 60}},
        "status": {"phase": "Running"},
    }
