"""Fixtures of the chart tests: the helm and kubectl binaries the project builds (make cluster-bins)."""

from __future__ import annotations

import pytest
from chart_tools import find_tool


@pytest.fixture(scope="session")
def helm() -> str:
    return find_tool("helm", "cluster-bins")


@pytest.fixture(scope="session")
def kubectl() -> str:
    return find_tool("kubectl", "cluster-bins")
