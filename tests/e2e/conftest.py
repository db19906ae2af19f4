"""End-to-end tests run against a real control plane (tests/harness, docs/control-plane.md)."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # `tests.harness` is imported from the checkout, however pytest is run
    sys.path.insert(0, _ROOT)

from tests.harness.fixtures import *  # noqa: E402,F403  (k8s_cluster, namespace, report hook)
