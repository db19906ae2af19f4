"""Package layering is enforced by import-linter (.importlinter), run here so CI fails on a violation."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint), "--config", str(ROOT / ".importlinter")], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_other_backends_use_only_the_onnxruntime_public_surface() -> None:
    """pytorch/ and tensorrt/ import ONNX Runtime helpers from the package (its __init__ lists them), not its modules."""
    backends = ROOT / "operator" / "edgequant" / "backends"
    reaching = {
        f"{path.relative_to(backends)}: {module}"
        for package in ("pytorch", "tensorrt")
        for path in sorted((backends / package).glob("*.py"))
        for module in _imported_modules(path)
        if module.startswith("edgequant.backends.onnxruntime.")
    }
    assert reaching == set()
    from edgequant.backends import onnxruntime

    for name in onnxruntime.__all__:  # every public name resolves
        assert getattr(onnxruntime, name) is not None
    assert sorted(onnxruntime.__all__) == sorted(onnxruntime._PUBLIC)
