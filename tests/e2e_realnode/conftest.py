"""The real-node suite: the control plane of tests/harness with a real kubelet, containerd and runc node
(tests/harness/realnode.py) running the images `make images` built. It needs root, Debian's containerd, runc and
containernetworking-plugins, the kubelet in .tools/bin and the images loaded; a machine without them FAILS every
test with a message naming what is missing (never a skip)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.harness import realnode  # noqa: E402
from tests.harness.cluster import Cluster, ClusterError  # noqa: E402

#: Credentials the moto server accepts while auth is off; never real ones.
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "edgequant-test-key",
    "AWS_SECRET_ACCESS_KEY": "edgequant-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One control plane + real node for the session; stopping it must leave no process, mount or netns."""
    cluster = Cluster(state_dir=tmp_path_factory.mktemp("realnode"), node="real", start_timeout=240)
    problem = None
    try:
        cluster.start()
    except (realnode.RealNodeUnavailable, ClusterError) as exc:
        problem = str(exc)
    if problem is not None:
        pytest.fail(f"the real node did not start: {problem}", pytrace=False)
    yield cluster
    cluster.stop()
    left = realnode.Leftovers.find(cluster.state_dir / "node", cluster.started_at)
    assert not left and not cluster.teardown_problems, f"the real node left {left} {cluster.teardown_problems}"


@pytest.fixture(scope="session")
def node_s3(real_cluster: Cluster) -> Iterator[str]:
    """moto's S3 server on the pod bridge's host address, where pods on the real node reach it; its endpoint."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in DUMMY_AWS_ENV}
    os.environ.update(DUMMY_AWS_ENV)
    server = ThreadedMotoServer(ip_address=realnode.GATEWAY, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
