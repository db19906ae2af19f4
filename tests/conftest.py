"""Fixtures shared by every suite: an S3-protocol server, Fashion-MNIST, dataset writers.

- ``s3_server``: moto in server mode on a free loopback port (session-wide). boto3
  reaches it over HTTP exactly as it reaches MinIO in production. The fixture sets
  dummy AWS_* env vars for the session; ``s3_client`` gives a boto3 client on it,
  ``s3_bucket`` a fresh empty bucket per test.
- ``fashion_mnist``: real labelled images from Debian's dataset-fashion-mnist package.
- ``imagefolder_writer`` / ``npz_writer``: turn arrays into the two dataset layouts.
- ``s3_upload_tree``: put a local folder under an S3 prefix.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `tests.*` helpers import from the checkout however pytest is run
    sys.path.insert(0, str(ROOT))

#: Credentials the moto server accepts while auth is off; never real ones.
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "edgequant-test-key",
    "AWS_SECRET_ACCESS_KEY": "edgequant-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# --------------------------------------------------------------------------- S3 (moto server mode)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    """http://127.0.0.1:<port>"""

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    @contextlib.contextmanager
    def enforce_auth(self) -> Iterator[None]:
        """Make the server check credentials (moto's IAM), so unknown keys get InvalidAccessKeyId / 403."""
        previous = self._reset_auth("0")
        try:
            yield
        finally:
            self._reset_auth(previous)

    def _reset_auth(self, count: str) -> str:
        """Set how many requests pass before moto checks credentials ("inf": never); returns the previous value."""
        import json

        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.loads(response.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1:<free port>, for the whole session; dummy AWS_* env set meanwhile."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in (*DUMMY_AWS_ENV, "AWS_PROFILE", "AWS_SESSION_TOKEN")}
    os.environ.update(DUMMY_AWS_ENV)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(key, None)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(endpoint=f"http://{host}:{port}")
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_client(s3_server: S3Server) -> Any:
    return s3_server.client()


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """A fresh bucket per test (names are unique, so tests never see each other's objects)."""
    name = f"t-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=name)
    return name


def upload_tree(client: Any, root: Path, bucket: str, prefix: str) -> int:
    """Upload every file below ``root`` to s3://bucket/prefix..., keeping relative paths; returns the count."""
    count = 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, prefix + path.relative_to(root).as_posix())
            count += 1
    return count


@pytest.fixture
def s3_upload_tree(s3_client: Any) -> Callable[[Path, str, str], int]:
    return lambda root, bucket, prefix: upload_tree(s3_client, root, bucket, prefix)


# --------------------------------------------------------------------------- real images


@dataclass(frozen=True)
class LabelledImages:
    train_x: np.ndarray
    """uint8 [60000, 28, 28]"""
    train_y: np.ndarray
    test_x: np.ndarray
    """uint8 [10000, 28, 28]"""
    test_y: np.ndarray
    classes: tuple[str, ...]


@pytest.fixture(scope="session")
def fashion_mnist() -> LabelledImages:
    """Fashion-MNIST from /usr/share/datasets/fashion-mnist (`make test-data` installs it)."""
    from edgequant.data.idx import FASHION_MNIST_CLASSES, load_fashion_mnist

    train_x, train_y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    return LabelledImages(train_x, train_y, test_x, test_y, FASHION_MNIST_CLASSES)


@pytest.fixture
def imagefolder_writer() -> Callable[..., Path]:
    """``write(root, images, labels, classes=None, suffix='.png')``: root/<NN_class>/<index>.png (edgequant.data.export)."""
    from edgequant.data.export import write_imagefolder

    return write_imagefolder


@pytest.fixture
def npz_writer() -> Callable[..., Path]:
    """``write(path, images, labels, classes=None)``: an .npz with x, y (and classes)."""
    from edgequant.data.export import write_npz

    return write_npz
