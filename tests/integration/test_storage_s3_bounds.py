"""Bounded S3 transfers against moto's S3 server and a real silent socket: a hung endpoint ends in bounded time, a
download that would overflow the scratch disk stops before it starts, and an upload is checked against what the
server computed (issue 13, items 10, 11 and 16)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgequant.api import v1alpha1 as api
from edgequant.api.worker_contract import (
    S3_CONNECT_TIMEOUT_ENV,
    S3_MAX_ATTEMPTS_ENV,
    S3_READ_TIMEOUT_ENV,
    SCRATCH_LIMIT_ENV,
)
from edgequant.storage import StorageUnreachableError
from edgequant.storage.s3 import S3Store, expected_etag
from edgequant.util.errors import InvalidInputError

pytestmark = pytest.mark.integration


def _store(endpoint: str) -> S3Store:
    return S3Store(storage=api.Storage(endpoint=endpoint, path_style=True, region="us-east-1"))


@pytest.fixture
def silent_endpoint() -> Iterator[tuple[str, list[socket.socket]]]:
    """A TCP server that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    server.close()


def test_a_hung_endpoint_ends_as_storage_unavailable_within_the_configured_bound(
    s3_server: Any, silent_endpoint: tuple[str, list[socket.socket]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """s3_server only for its dummy credentials: requests are signed, then meet silence."""
    endpoint, accepted = silent_endpoint
    connect, read, attempts = 1.0, 1.0, 2
    monkeypatch.setenv(S3_CONNECT_TIMEOUT_ENV, str(connect))
    monkeypatch.setenv(S3_READ_TIMEOUT_ENV, str(read))
    monkeypatch.setenv(S3_MAX_ATTEMPTS_ENV, str(attempts))
    started = time.monotonic()
    with pytest.raises(StorageUnreachableError, match="no answer after 2 attempt") as err:
        _store(endpoint).download("s3://bucket/model.keras", tmp_path)
    elapsed = time.monotonic() - started
    assert "spec.storage.endpoint" in str(err.value)
    assert len(accepted) >= 1  # the connection was accepted: the silence, not a refusal, was the failure
    # attempts x read timeout, plus the SDK's retry backoff (at most 20 s per retry in standard mode) and slack.
    assert elapsed < attempts * (connect + read) + 20 * (attempts - 1) + 30
    assert not any(tmp_path.iterdir())


def test_the_default_timeouts_bound_a_hung_endpoint() -> None:
    from edgequant.storage.s3 import (
        DEFAULT_CONNECT_TIMEOUT,
        DEFAULT_MAX_ATTEMPTS,
        DEFAULT_READ_TIMEOUT,
        timeouts_from_env,
    )

    assert timeouts_from_env({}) == (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, DEFAULT_MAX_ATTEMPTS)
    assert DEFAULT_MAX_ATTEMPTS * (DEFAULT_CONNECT_TIMEOUT + DEFAULT_READ_TIMEOUT) <= 600


def test_a_download_that_would_overflow_the_scratch_disk_stops_before_it_starts(
    s3_server: Any, s3_bucket: str, s3_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "scratch"
    (workdir / "earlier").mkdir(parents=True)
    (workdir / "earlier" / "model.keras").write_bytes(b"m" * 600_000)  # already on the scratch disk
    monkeypatch.setenv("EDGEQUANT_WORKDIR", str(workdir))
    monkeypatch.setenv(SCRATCH_LIMIT_ENV, "1Mi")
    s3_client.put_object(Bucket=s3_bucket, Key="data/eval.npz", Body=b"x" * 500_000)
    for i in range(5):
        s3_client.put_object(Bucket=s3_bucket, Key=f"cal/c/{i}.png", Body=b"p" * 100_000)
    store = _store(s3_server.endpoint)
    for uri in (f"s3://{s3_bucket}/data/eval.npz", f"s3://{s3_bucket}/cal/"):
        with pytest.raises(InvalidInputError, match="spec.resources.scratchSize") as err:
            store.download(uri, workdir / "data")
        assert uri in str(err.value) and "1Mi" in str(err.value)
    assert not (workdir / "data").exists()  # nothing was written
    monkeypatch.setenv(SCRATCH_LIMIT_ENV, "2Mi")  # with room, the same downloads go through
    assert store.download(f"s3://{s3_bucket}/cal/", workdir / "data").is_dir()


def test_the_expected_etag_is_what_the_server_computes(
    s3_server: Any, s3_bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    store = _store(s3_server.endpoint)
    for size in (0, 1234, 8 * 1024 * 1024 + 5, 17 * 1024 * 1024):  # empty, one part, two parts, three parts
        path = tmp_path / f"f{size}"
        path.write_bytes(os.urandom(size))
        store.upload(path, f"s3://{s3_bucket}/etag/{size}")
        etag = s3_client.head_object(Bucket=s3_bucket, Key=f"etag/{size}")["ETag"].strip('"')
        assert etag == expected_etag(path, size=size), size
        if size < 8 * 1024 * 1024:
            assert etag == hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_an_upload_the_server_stored_differently_is_caught(
    s3_server: Any, s3_bucket: str, s3_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server holds other bytes of the same length, under the metadata we sent: only what the server computed
    (the ETag) shows it; the client-supplied sha256 metadata alone would not."""
    artifact = tmp_path / "model.tflite"
    artifact.write_bytes(os.urandom(300_000))
    store = _store(s3_server.endpoint)
    real_upload = store._client.upload_file

    def corrupting_upload(filename: str, bucket: str, key: str, **kwargs: Any) -> None:
        flipped = tmp_path / "flipped"
        data = bytearray(Path(filename).read_bytes())
        data[1000] ^= 0xFF
        flipped.write_bytes(bytes(data))
        real_upload(str(flipped), bucket, key, **kwargs)

    monkeypatch.setattr(store._client, "upload_file", corrupting_upload)
    with pytest.raises(StorageUnreachableError, match="does not match the uploaded file.*ETag"):
        store.upload(artifact, f"s3://{s3_bucket}/out/model.tflite")
    head = s3_client.head_object(Bucket=s3_bucket, Key="out/model.tflite")
    assert head["Metadata"]["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()  # the metadata agreed
