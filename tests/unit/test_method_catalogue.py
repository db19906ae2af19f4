"""The method catalogue (api/methods.py) is the one place a method is described.

The main test adds a method to a copy of the package by editing only api/methods.py and writing its backend
(backends/dummy/, and its options model in api/backend_options.py), then sees it everywhere: the CRD's enum and
CEL rules, Python validation, the registry (with the run's Stores injected), the backend options, the operator's
image, the layer tool, the degrade ladder and the docs table. The
checklists in docs/architecture.md name the same files.
"""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgequant.api import methods
from edgequant.api import v1alpha1 as api

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "edgequant"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

DUMMY_ROW = """
    DUMMY_INT8 = MethodSpec(
        name="dummy-int8", family=MethodFamily.TORCH, backend="edgequant.backends.dummy.backend:DummyBackend",
        formats=ONNX_FORMATS, artifact_suffix="dummy-int8", summary="a test method", calibration=True, gpu=True,
        layer_tool="edgequant.backends.dummy.backend:layer_tool", keeps_layers_float=True, float16_rung=OWN_FLOAT16,
    )
"""

DUMMY_BACKEND = '''"""A backend for the catalogue test: it records what the registry gave it."""

from pathlib import Path

from edgequant.api.methods import methods_served_by
from edgequant.storage import Stores


class DummyBackend:
    name = "dummy"
    methods = methods_served_by(__name__)

    def __init__(self, *, stores: Stores) -> None:
        self.stores = stores

    def quantize(self, request):
        raise NotImplementedError

    def load(self, path: Path, *, options):
        raise NotImplementedError


class DummyLayers:
    layers = ["only"]


def layer_tool(request, backend):
    return DummyLayers()
'''

DUMMY_OPTIONS = """
class DummyBackendOptions(_Options):
    backend: Literal["dummy"] = "dummy"
    calibration: Calibration | None

    @classmethod
    def from_spec(cls, spec: QuantizationJobSpec, method: Method) -> Self:
        return cls(method=method, calibration=spec.calibration)


"""

PROBE = r"""
import json, sys
from pathlib import Path

from edgequant.analysis.layer_tools import layer_tool_for
from edgequant.api import methods, v1alpha1 as api
from edgequant.api.backend_options import backend_options
from edgequant.api.crd import build_crd
from edgequant.backends.base import QuantizeRequest
from edgequant.backends.registry import backend_for
from edgequant.controller.settings import OperatorSettings
from edgequant.storage import Stores

dummy = api.Method("dummy-int8")
crd = build_crd()
spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
rules = {r["fieldPath"]: r["rule"] for r in spec_schema["x-kubernetes-validations"]}
base = {
    "method": "dummy-int8",
    "model": {"uri": "s3://m/model.onnx", "input": {"shape": [3, 8, 8], "layout": "NCHW"}},
    "output": {"uri": "s3://out/"},
}
try:
    api.QuantizationJobSpec.model_validate({**base, "resources": {"accelerator": "cpu"}})
    refused = ""
except ValueError as exc:
    refused = str(exc)
stores = Stores(storage=api.Storage(), base_dir=Path("/jobs"))
backend = backend_for(dummy, stores=stores)
spec = api.QuantizationJobSpec.model_validate({**base, "calibration": {"dataset": {"uri": "s3://d/", "layout": "imagefolder"}}})
request = QuantizeRequest(options=backend_options(spec, dummy), model_path=Path("m.onnx"), workdir=Path("w"))
print(json.dumps({
    "enum": spec_schema["properties"]["method"]["enum"],
    "rules": rules,
    "refused": refused,
    "backend": type(backend).__name__,
    "stores_injected": backend.stores is stores,
    "options": [type(request.options).__name__, request.options.backend, request.method.value],
    "image": OperatorSettings().image_for(dummy),
    "layers": layer_tool_for(request, backend).layers,
    "ranks": dummy.ranks_layers and dummy.has_own_layer_tool and dummy.keeps_layers_float,
    "float16_rung": dummy.float16_rung.value,
    "table": methods.markdown_table(),
}))
"""


def _add_dummy_method(root: Path) -> Path:
    """A copy of the package with one method added: one catalogue row, plus its backend. Returns the package."""
    package = root / "edgequant"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    catalogue = package / "api" / "methods.py"
    text = catalogue.read_text()
    anchor = "\n    @property\n    def family(self)"
    assert text.count(anchor) == 1
    catalogue.write_text(text.replace(anchor, DUMMY_ROW + anchor))
    options = package / "api" / "backend_options.py"
    text, union = options.read_text(), "AnyBackendOptions = "
    members = "| TensorRTBackendOptions\n"
    assert text.count(union) == 1 and text.count(members) == 1
    options.write_text(
        text.replace(union, DUMMY_OPTIONS + union).replace(members, "| TensorRTBackendOptions | DummyBackendOptions\n")
    )
    (package / "backends" / "dummy").mkdir()
    (package / "backends" / "dummy" / "__init__.py").write_text('"""The catalogue test\'s backend."""\n')
    (package / "backends" / "dummy" / "backend.py").write_text(DUMMY_BACKEND)
    return package


def _changed(left: Path, right: Path) -> list[str]:
    """Files that differ or exist on one side only, relative to the package roots."""
    found: list[str] = []

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        found.extend(prefix + name for name in cmp.diff_files + cmp.left_only + cmp.right_only if name != "__pycache__")
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(left, right, ignore=["__pycache__"]), "")
    return sorted(found)


def test_a_method_added_in_the_catalogue_reaches_every_consumer(tmp_path: Path) -> None:
    package = _add_dummy_method(tmp_path)
    assert _changed(PACKAGE, package) == ["api/backend_options.py", "api/methods.py", "backends/dummy"]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout)
    assert "dummy-int8" in seen["enum"]
    assert "'dummy-int8'" in seen["rules"][".resources.accelerator"]
    assert "'dummy-int8'" in seen["rules"][".calibration"]
    assert "'dummy-int8'" not in seen["rules"][".training"]
    assert "'dummy-int8'" in seen["rules"][".model.format"]
    assert "spec.resources.accelerator" in seen["refused"] and "dummy-int8" in seen["refused"]
    assert "spec.calibration" in seen["refused"]
    assert seen["backend"] == "DummyBackend" and seen["stores_injected"]
    assert seen["options"] == ["DummyBackendOptions", "dummy", "dummy-int8"]
    assert seen["image"] == "ghcr.io/edgequant/quantizer-torch:0.1.0"
    assert seen["layers"] == ["only"] and seen["ranks"]
    assert seen["float16_rung"] == "dummy-int8"
    assert (
        "| `dummy-int8` | torch | dummy | onnx | yes |  | yes | own | own conversion | `.dummy-int8.` | a test method |"
        in seen["table"]
    )


def test_the_docs_method_table_is_the_catalogue() -> None:
    """docs/architecture.md carries ``methods.markdown_table()`` between its markers; regenerate it when this fails."""
    text = ARCHITECTURE.read_text()
    begin, end = "<!-- methods:begin (generated by edgequant.api.methods.markdown_table) -->\n", "<!-- methods:end -->"
    assert text[text.index(begin) + len(begin) : text.index(end)] == methods.markdown_table()


def test_every_entry_point_imports_and_serves_its_methods() -> None:
    """Each backend and layer tool the catalogue names exists; each backend claims exactly the methods naming it."""
    import importlib

    for method in api.Method:
        for entry in filter(None, (method.row.backend, method.row.layer_tool)):
            module, _, factory = entry.partition(":")
            try:
                loaded = importlib.import_module(module)
            except ModuleNotFoundError as exc:  # a framework this environment lacks (TensorRT, pycuda)
                assert exc.name in {"tensorrt", "pycuda"}, exc
                continue
            assert callable(getattr(loaded, factory)), entry
        backend_class = getattr(
            importlib.import_module(method.row.backend.partition(":")[0]), method.row.backend.partition(":")[2]
        )
        assert method in backend_class.methods


@pytest.mark.parametrize("method", list(api.Method))
def test_rows_are_consistent(method: api.Method) -> None:
    row = method.row
    assert row.name == method.value and row.formats and row.artifact_suffix
    assert not row.layer_tool_proxy or row.layer_tool is not None
    assert method.keeps_layers_float or not method.has_own_layer_tool  # an own tool builds pinned artifacts
    if method.float16_rung is not None and method.float16_rung is not method:
        assert method.float16_rung.float16_rung is None  # the rung is already float16
