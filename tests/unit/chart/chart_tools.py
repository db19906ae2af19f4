"""Shared by the chart tests: where the repository is, and the real tools they drive (helm, kubectl, lua)."""

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
