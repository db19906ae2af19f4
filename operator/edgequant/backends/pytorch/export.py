"""PyTorch -> ONNX with the dynamo exporter (``torch.onnx.export(..., dynamo=True)``).

The dynamo exporter is torch's current exporter and the one that takes PT2E
models: it translates torchao's quantize/dequantize ops into ONNX
QuantizeLinear/DequantizeLinear. The TorchScript exporter (dynamo=False)
refuses a PT2E GraphModule (docs/torch-qat.md).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from edgequant.util.errors import InvalidInputError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def example_batch(sample_shape: tuple[int, ...], *, fixed_batch: int | None) -> Any:
    """A zero batch for tracing: two samples unless the batch is fixed (one would specialise the batch to 1)."""
    import torch

    return torch.zeros((fixed_batch or 2, *sample_shape), dtype=torch.float32)


def export_onnx(module: Any, *, example: Any, path: Path, dynamic_batch: bool) -> Path:
    """Write ``module`` as ONNX with one input named 'input' (dynamic batch when the source has one)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        # The exporter reports its steps with print(): keep stdout for the CLI's table.
        with contextlib.redirect_stdout(sys.stderr):
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                verbose=False,
            )
    except Exception as exc:
        raise InvalidInputError(
            f"torch.onnx.export (dynamo) could not export {path.stem}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        ) from exc
    if program is None:
        raise InvalidInputError(f"torch.onnx.export (dynamo) returned no program for {path.stem}")
    model = program.model_proto
    strip_debug_info(model)
    import onnx

    onnx.save(model, str(path))
    return path


def strip_debug_info(model: Any) -> None:
    """Drop the exporter's per-node metadata (stack traces, module paths) and doc strings: over a third of a small model's file."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.graph.doc_string = ""
