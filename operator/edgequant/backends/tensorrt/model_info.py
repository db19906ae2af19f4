"""What the build needs to know about the ONNX model, read on the CPU by the shared ONNX graph reader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgequant.backends.onnx_graph import OnnxNode, read_graph
from edgequant.backends.tensorrt.names import QUANTIZABLE_OPS
from edgequant.util.errors import InvalidInputError


@dataclass(frozen=True)
class OnnxModelInfo:
    input_name: str
    input_shape: tuple[int, ...]
    """-1 for symbolic or unknown dimensions."""
    input_dtype: str
    """numpy dtype name of the input."""
    nodes: tuple[OnnxNode, ...]

    @property
    def fixed_batch(self) -> int | None:
        return self.input_shape[0] if self.input_shape and self.input_shape[0] > 0 else None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.input_shape[1:]

    def quantizable_nodes(self) -> list[str]:
        return [n.name for n in self.nodes if n.op_type in QUANTIZABLE_OPS and n.name]


def read_model_info(path: Path) -> OnnxModelInfo:
    """Input and nodes of a single-input ONNX vision model; errors name the file and the fix."""
    graph = read_graph(path, fix="tensorrt-* methods take an .onnx file")
    if len(graph.inputs) != 1:
        raise InvalidInputError(
            f"{path.name}: the model has {len(graph.inputs)} inputs ({', '.join(i.name for i in graph.inputs)}); "
            "edgequant's TensorRT backend builds single-input vision models"
        )
    (only,) = graph.inputs
    dims = tuple(d if isinstance(d, int) else -1 for d in only.shape)
    if len(dims) < 2 or any(d <= 0 for d in dims[1:]):
        raise InvalidInputError(
            f"{path.name}: input {only.name!r} has shape {list(dims)}; only the batch dimension may be dynamic"
        )
    return OnnxModelInfo(input_name=only.name, input_shape=dims, input_dtype=only.elem_type, nodes=graph.nodes)
