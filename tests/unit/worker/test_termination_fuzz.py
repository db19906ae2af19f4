"""The termination message stays under Kubernetes' 4096-byte cap and parses back, whatever the worker puts in it
within the API's bounds (issue 13, item 14). A seeded random search over pathological inputs; hypothesis is not a dependency."""

from __future__ import annotations

import random

from edgequant.api import v1alpha1 as api
from edgequant.api.exitcodes import REASONS, ExitCode
from edgequant.api.result import TERMINATION_MESSAGE_LIMIT, WorkerResult

KUBERNETES_CAP = 4096
# Characters that grow when JSON-escaped: quotes, backslashes, controls, non-ASCII, astral (surrogate pairs).
NASTY = ['"', "\\", "\n", "\x00", "\x1f", "é", "漢", "\u2028", "😀", "/", "a", "-", "…"]


def _text(rng: random.Random, longest: int) -> str:
    size = rng.choice([0, 1, 63, 64, 255, longest // 2, longest])
    alphabet = rng.choice([NASTY, ["a"], ["😀"], ['"', "\\"], NASTY + list("abc")])
    return "".join(rng.choices(alphabet, k=size))


def _uri(rng: random.Random) -> str:
    return "s3://bucket/" + _text(rng, api.MAX_STATUS_URI - len("s3://bucket/"))


def _results(rng: random.Random) -> api.Results:
    names = [_text(rng, api.MAX_LAYER_NAME) for _ in range(rng.choice([0, 1, 10, 50]))]
    return api.Results(
        artifact=api.ArtifactInfo(uri=_uri(rng), sha256="f" * 64, size_bytes=rng.randrange(1, 1 << 40)),
        method=rng.choice(list(api.Method)),
        baseline=api.ModelMeasurement(
            accuracy=rng.random(), size_bytes=rng.randrange(1 << 40), latency_ms=rng.random()
        ),
        quantized=api.ModelMeasurement(
            accuracy=rng.random(), size_bytes=rng.randrange(1 << 40), latency_ms=rng.random()
        ),
        compression_ratio=rng.random() * 10,
        accuracy_drop=rng.random(),
        sensitive_layers=names,
        pinned_layers=names[::-1],
        degraded=rng.random() < 0.5,
        report_uri=_uri(rng),
        input_contract=api.ArtifactInputContract(
            dtype="uint8",
            shape=[1, 224, 224, 3],
            layout=api.Layout.NHWC,
            value_range=[0.0, 255.0],
            preprocessing=_text(rng, api.MAX_STATUS_URI),
        ),
        warnings=[_text(rng, api.MAX_STATUS_URI) for _ in range(rng.choice([0, 5, 40]))],
    )


def test_fuzzed_results_always_fit_and_parse_back() -> None:
    rng = random.Random(20261129)
    outcomes = set()
    for case in range(200):
        code = rng.choice(list(ExitCode))
        results = _results(rng) if rng.random() < 0.8 else None
        original = WorkerResult.for_exit(code, _text(rng, 50_000), results)
        text = original.to_termination_message()
        assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT < KUBERNETES_CAP, (case, len(text.encode()))
        back = WorkerResult.from_termination_message(text)
        assert (back.exit_code, back.reason) == (int(code), REASONS[code]), case
        outcomes.add("whole" if not back.shortened else "no results" if back.results is None else "shortened")
        if not back.shortened:
            assert back == original, case  # nothing is ever left out silently
        elif back.results is not None and back.results.artifact is not None:
            assert back.results.artifact == original.results.artifact, case  # kept parts are exact, never cut
    assert outcomes == {"whole", "shortened", "no results"}  # the search reached every rung of the ladder


def test_a_result_that_fits_is_sent_whole() -> None:
    small = WorkerResult.for_exit(
        ExitCode.SUCCESS, "published", api.Results(sensitive_layers=["conv1"], report_uri="s3://b/r.json")
    )
    back = WorkerResult.from_termination_message(small.to_termination_message())
    assert back == small and not back.shortened


def test_two_longest_uris_drop_the_report_uri_first_and_keep_the_artifact() -> None:
    uri = "s3://b/" + "p" * 1800
    results = api.Results(
        artifact=api.ArtifactInfo(uri=uri + "/m.tflite", sha256="a" * 64, size_bytes=1), report_uri=uri + "/report.json"
    )
    back = WorkerResult.from_termination_message(
        WorkerResult.for_exit(ExitCode.SUCCESS, "ok", results).to_termination_message()
    )
    assert back.shortened and back.results is not None
    assert back.results.artifact == results.artifact and back.results.report_uri is None


def test_the_flag_is_sent_only_when_set() -> None:
    """Operators that predate the flag parse every result that was not shortened (extra fields are refused)."""
    text = WorkerResult.for_exit(ExitCode.SUCCESS, "published").to_termination_message()
    assert "shortened" not in text
