"""QuantizationJob names up to 253 characters (a DNS subdomain): labels and Job names stay within 63, and the
operator still finds its Job and pods (issue 13, item 13)."""

from __future__ import annotations

import re

from edgequant.api import v1alpha1 as api
from edgequant.controller import cache, naming, plan, reconcile, render
from edgequant.controller.settings import OperatorSettings

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LONG = ("quantize-" + "resnet50-imagenet-team-vision-" * 9)[:252] + "a"
LONG_OTHER = LONG[:-1] + "b"
DOTTED = ("team.vision." * 22)[:250] + "x.y"


def _spec() -> api.QuantizationJobSpec:
    return api.QuantizationJobSpec.model_validate(
        {
            "method": "tflite-dynamic-range",
            "model": {"uri": "s3://models/cnn.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
            "output": {"uri": "s3://artifacts/mnist/"},
        }
    )


def _render(name: str, generation: int = 3) -> dict:
    owner = render.Owner(name=name, namespace="team-a", uid="qj-uid", generation=generation)
    return render.render_job(owner=owner, spec=_spec(), settings=OperatorSettings())


def test_a_253_character_name_renders_valid_labels_and_job_name() -> None:
    assert len(LONG) == 253 and DNS_SUBDOMAIN.match(LONG)
    for name in (LONG, DOTTED, "mnist", "a" * 63, "a" * 64):
        job = _render(name, generation=123456)
        for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
            for key, value in labels.items():
                assert len(value) <= 63 and LABEL_VALUE.match(value), (key, value)
        job_name = job["metadata"]["name"]
        assert len(job_name) <= 57, job_name  # pod names add "-xxxxx" and must stay a valid label value
        assert DNS_SUBDOMAIN.match(job_name) and LABEL_VALUE.match(job_name), job_name
        if "." not in name:
            assert DNS_LABEL.match(job_name), job_name
        assert job["metadata"]["annotations"][naming.ANNOTATION_JOB] == name
        assert job["spec"]["template"]["metadata"]["annotations"][naming.ANNOTATION_JOB] == name
    assert _render("mnist")["metadata"]["labels"][naming.LABEL_JOB] == "mnist"  # short names unchanged


def test_long_names_that_differ_only_at_the_end_stay_apart() -> None:
    assert naming.job_name(LONG, 1) != naming.job_name(LONG_OTHER, 1)
    assert naming.label_value(LONG) != naming.label_value(LONG_OTHER)
    assert naming.job_name(LONG, 1) == naming.job_name(LONG, 1) != naming.job_name(LONG, 2)


def test_the_operator_finds_the_job_and_pods_of_a_long_name(reconciler: reconcile.Reconciler) -> None:
    job = _render(LONG, generation=2)
    job["metadata"]["uid"] = "job-uid"
    job["status"] = {"active": 1}
    key, _ = cache.job_entry(job) or (None, None)
    assert key == ("team-a", LONG)
    found = plan.plan_jobs([job], name=LONG, uid="qj-uid", generation=2, previous_status={})
    assert found.current is job and found.obsolete == []
    pod_meta = dict(
        job["spec"]["template"]["metadata"], namespace="team-a", uid="pod-uid", name=job["metadata"]["name"] + "-abcde"
    )
    request = reconciler.refresh_request(
        {"metadata": pod_meta, "status": {"phase": "Running"}}, kind="Pod", deleted=False
    )
    assert request is not None and request.key == ("team-a", LONG)
    # Jobs made before the annotation existed are still found by their label.
    assert naming.quantization_job_of({"labels": {naming.LABEL_JOB: "mnist"}}) == "mnist"
