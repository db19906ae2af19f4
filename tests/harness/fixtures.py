"""pytest plugin: a real control plane per test session and a fresh namespace per test.

Use it from a conftest.py::

    from tests.harness.fixtures import *  # noqa: F401,F403  (fixtures and the report hook)

or, from the top-level conftest only, ``pytest_plugins = ["tests.harness.fixtures"]``.

Fixtures
--------
``k8s_cluster`` (session): a started :class:`tests.harness.cluster.Cluster` with
    ``.kubeconfig`` (Path, admin), ``.bin_dir`` (Path with kubectl, helm, ...), ``.server``,
    ``.kubectl(*args, input=None, check=True, timeout=60)`` -> CompletedProcess,
    ``.api_client(token=None)`` -> ``kubernetes.client.ApiClient``,
    ``.client_configuration(token=None)``, ``.env()`` (os.environ plus KUBECONFIG and PATH),
    ``.logs`` (component -> log file), ``.pods_dir`` (container output, per pod),
    ``.server_version``.
``namespace`` (function): name of a new namespace whose ``default`` ServiceAccount exists;
    deleted (in the background) after the test.

When a test that uses ``k8s_cluster`` fails, the report gets the tail of every component's log
and, with ``namespace``, the container output of its pods and ``kubectl get all,events``.

Environment
-----------
``EDGEQUANT_TEST_CLUSTER=<state dir>``: use the cluster that ``make cluster-up`` started there
(e.g. ``.cache/cluster``) instead of starting one; it is left running.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import Cluster

__all__ = ["k8s_cluster", "namespace", "pytest_runtest_makereport"]

_ACTIVE: list[Cluster] = []


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    existing = os.environ.get("EDGEQUANT_TEST_CLUSTER")
    if existing:
        cluster = Cluster.attach(Path(existing).absolute())
        if not cluster.running():
            raise RuntimeError(
                f"EDGEQUANT_TEST_CLUSTER={existing}: no cluster is running there (start one with `make cluster-up`)"
            )
        _ACTIVE.append(cluster)
        yield cluster
        _ACTIVE.remove(cluster)
        return
    cluster = Cluster(state_dir=tmp_path_factory.mktemp("k8s"))
    _ACTIVE.append(cluster)
    try:
        cluster.start()
        yield cluster
    finally:
        _ACTIVE.remove(cluster)
        cluster.stop()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-") or "test"


@pytest.fixture
def namespace(k8s_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    name = f"{_slug(request.node.name)}-{uuid.uuid4().hex[:6]}"
    api = k8s_cluster.api_client()
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name, "labels": {"edgequant.io/test": "true"}}})
    deadline = time.monotonic() + 60
    while True:  # the ServiceAccount admission plugin rejects pods until `default` exists
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise
        api.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and _ACTIVE and "k8s_cluster" in getattr(item, "fixturenames", ()):
        funcargs = getattr(item, "funcargs", {})
        ns = funcargs.get("namespace") if isinstance(funcargs.get("namespace"), str) else None
        try:
            for title, text in _ACTIVE[-1].diagnostics(ns):
                report.sections.append((title, text))
        except Exception as e:  # noqa: BLE001 - diagnostics must never hide the failure
            report.sections.append(("control plane diagnostics", f"unavailable: {e!r}"))
    return report
