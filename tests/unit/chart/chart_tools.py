"""Locating the real tools the chart tests drive (helm, kubectl, lua): missing ones fail with the make target to run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TOOLS_BIN = ROOT / ".tools" / "bin"


def find_tool(name: str, make_target: str) -> str:
    """The project's own build first (.tools/bin), then PATH; never a silent skip."""
    local = TOOLS_BIN / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found in {TOOLS_BIN} or on PATH: run `make {make_target}`")
    return found


@pytest.fixture(scope="session")
def helm() -> str:
    return find_tool("helm", "cluster-bins")


@pytest.fixture(scope="session")
def kubectl() -> str:
    return find_tool("kubectl", "cluster-bins")
