"""The PyTorch model file torch-qat takes: a torch.export program (.pt2), and why not the others.

A model crosses object storage as a file that must rebuild the network with
none of its author's Python code on the worker:

- ``torch.export.save`` (.pt2) holds the graph (ATen ops) and the weights:
  ``torch.export.load(f).module()`` gives a GraphModule that PT2E QAT
  (torchao.quantization.pt2e) prepares directly. This is the format edgequant takes.
- TorchScript (``torch.jit.save``) also survives the trip, but a ScriptModule
  cannot be re-traced by torch.export, so PT2E cannot quantize it, and
  TorchScript is in maintenance mode.
- ``torch.save`` of a module or a state_dict is a pickle: unpickling a module
  needs its class's code, and a state_dict holds weights without a graph.

``archive_kind`` tells them apart from the zip's member names (pure);
``load_program`` loads a .pt2 or raises an error that says how to make one.
"""

from __future__ import annotations

import enum
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgequant.api import v1alpha1 as api
from edgequant.backends.onnx_graph import Dim
from edgequant.backends.onnxruntime import check_input_shape
from edgequant.util.errors import InvalidInputError

HOW_TO_EXPORT = (
    "export the model with torch.export and save the program: "
    "torch.export.save(torch.export.export(model.eval(), (example_batch,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)), 'model.pt2')"
)


class ArchiveKind(enum.StrEnum):
    EXPORTED_PROGRAM = "torch.export program"
    TORCHSCRIPT = "TorchScript"
    PICKLE = "torch.save pickle"
    OTHER_ZIP = "zip archive"
    NOT_ZIP = "not a zip archive"


def archive_kind(names: Sequence[str]) -> ArchiveKind:
    """What a PyTorch zip archive holds, from its member names (one top-level folder, any name)."""
    inner = {name.split("/", 1)[1] if "/" in name else name for name in names}
    if "archive_format" in inner:
        return ArchiveKind.EXPORTED_PROGRAM
    if "constants.pkl" in inner and any(n.startswith("code/") for n in inner):
        return ArchiveKind.TORCHSCRIPT
    if "data.pkl" in inner:
        return ArchiveKind.PICKLE
    return ArchiveKind.OTHER_ZIP


def file_kind(path: Path) -> ArchiveKind:
    if not zipfile.is_zipfile(path):
        return ArchiveKind.NOT_ZIP
    with zipfile.ZipFile(path) as archive:
        return archive_kind(archive.namelist())


def refusal(kind: ArchiveKind, file: str) -> str:
    """Why a file of this kind cannot be used, and how to make one that can."""
    why = {
        ArchiveKind.TORCHSCRIPT: "is TorchScript, which torch.export cannot re-trace, so PT2E quantization-aware training cannot prepare it",
        ArchiveKind.PICKLE: "is a torch.save pickle (a state_dict or a pickled module): it cannot be rebuilt without the model's Python code",
        ArchiveKind.OTHER_ZIP: "is a zip archive but not a torch.export program",
        ArchiveKind.NOT_ZIP: "is not a PyTorch archive",
    }[kind]
    return f"{file} {why}; torch-qat takes a torch.export program (.pt2): {HOW_TO_EXPORT}"


@dataclass
class TorchSource:
    path: Path
    program: Any
    """torch.export.ExportedProgram"""
    input_name: str
    input_shape: tuple[Dim, ...]
    """Symbolic dimensions as their names (e.g. 'batch' or 's77')."""
    input_dtype: str

    @property
    def dynamic_batch(self) -> bool:
        return not isinstance(self.input_shape[0], int)


def load_program(path: Path) -> TorchSource:
    """A torch.export program with one tensor input and one tensor output; clear errors for anything else."""
    kind = file_kind(path)
    if kind is not ArchiveKind.EXPORTED_PROGRAM:
        raise InvalidInputError(refusal(kind, path.name))
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise InvalidInputError(
            f"{path.name}: torch.export.load failed ({type(exc).__name__}: {str(exc)[:200]}); {HOW_TO_EXPORT}"
        ) from exc
    user_inputs = list(program.graph_signature.user_inputs)
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    if len(user_inputs) != 1 or len(program.graph_signature.user_outputs) != 1:
        raise InvalidInputError(
            f"{path.name}: the program takes {len(user_inputs)} input(s) and returns {len(program.graph_signature.user_outputs)} output(s); "
            "edgequant quantizes single-input, single-output image classifiers"
        )
    value = placeholders[user_inputs[0]].meta.get("val")
    shape = tuple(int(d) if isinstance(d, int) else str(d) for d in getattr(value, "shape", ()))
    dtype = str(getattr(value, "dtype", "unknown")).removeprefix("torch.")
    return TorchSource(path=path, program=program, input_name=user_inputs[0], input_shape=shape, input_dtype=dtype)


def check_source_input(source: TorchSource, contract: api.InputContract) -> None:
    check_input_shape(
        file=source.path.name,
        name=source.input_name,
        shape=source.input_shape,
        dtype=source.input_dtype,
        contract=contract,
    )
