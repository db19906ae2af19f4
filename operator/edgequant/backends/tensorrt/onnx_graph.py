"""What the build needs to know about the ONNX model, read with the onnx package on the CPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgequant.backends.tensorrt.names import QUANTIZABLE_OPS, OnnxNode
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
    import onnx
    from onnx import helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InvalidInputError(f"{path.name}: not a readable ONNX model ({exc}); tensorrt-* methods take an .onnx file") from exc
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise InvalidInputError(
            f"{path.name}: the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
            "edgequant's TensorRT backend builds single-input vision models"
        )
    tensor_type = inputs[0].type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor_type.shape.dim)
    if len(dims) < 2 or any(d <= 0 for d in dims[1:]):
        raise InvalidInputError(
            f"{path.name}: input {inputs[0].name!r} has shape {list(dims)}; only the batch dimension may be dynamic"
        )
    dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    nodes = tuple(OnnxNode(name=n.name, op_type=n.op_type, outputs=tuple(n.output)) for n in model.graph.node)
    return OnnxModelInfo(input_name=inputs[0].name, input_shape=dims, input_dtype=dtype, nodes=nodes)
