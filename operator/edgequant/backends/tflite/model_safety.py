"""Refuse model files that would run their author's Python code when edgequant loads or runs them.

A ``.keras`` archive or ``.h5`` file can carry a Lambda layer (marshalled Python bytecode) or name any importable
class or function as a "custom object"; a legacy (tf_keras) SavedModel carries Lambda bytecode in
``keras_metadata.pb``; any SavedModel graph can contain ops that call Python or touch files. Keras' ``safe_mode``
covers part of this and has been bypassed before (CVE-2025-9905, CVE-2025-9906), so the model's configuration is
read here as data (JSON from the zip / HDF5 attributes, protobuf from the SavedModel) and checked *before* any
loader sees it. Graph-only SavedModels (``model.export(dir)``) carry no Python and are the recommended way out.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgequant.api import v1alpha1 as api
from edgequant.util.errors import InvalidInputError

#: Keras modules whose functions change how loading behaves (e.g. keras.config.enable_unsafe_deserialization).
_LOADER_MODULES = ("keras.config", "keras.saving", "keras.utils", "keras.src.saving", "keras.src.utils")
#: Graph ops that call back into Python or read/write files: never part of an image classifier.
UNSAFE_GRAPH_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc", "WriteFile", "ReadFile", "MatchingFiles"})

_HOW_TO_EXPORT = (
    "edgequant loads built-in Keras layers only and never runs Python code from a model file: rebuild the model "
    "from built-in layers (Rescaling, Reshape, Activation, ...) and save it again, or export a graph-only SavedModel "
    "with model.export('dir/') and point model.uri at that folder"
)


def _is_keras_module(module: str) -> bool:
    return (module == "keras" or module.startswith("keras.")) and not module.startswith(_LOADER_MODULES)


def python_in_config(config: Any) -> Iterator[str]:
    """What in a Keras model configuration would run Python code of the file's author. Pure."""
    if isinstance(config, dict):
        class_name = config.get("class_name")
        if isinstance(class_name, str):
            module, registered = config.get("module"), config.get("registered_name")
            inner = config.get("config")
            name = inner.get("name") if isinstance(inner, dict) else None
            if class_name == "Lambda":
                yield f"a Lambda layer ({name!r})" if name else "a Lambda layer"
            elif isinstance(module, str) and not _is_keras_module(module):
                yield f"the custom object {module}.{class_name}"
            elif isinstance(registered, str) and ">" in registered:
                yield f"the custom object {registered}"
        for value in config.values():
            yield from python_in_config(value)
    elif isinstance(config, list):
        for value in config:
            yield from python_in_config(value)


def _refuse(where: str, found: list[str]) -> None:
    if found:
        listed = ", ".join(dict.fromkeys(found))
        raise InvalidInputError(f"{where}: the model contains {listed}; {_HOW_TO_EXPORT}")


def _keras_config(path: Path, fmt: api.ModelFormat) -> Any:
    try:
        if fmt is api.ModelFormat.KERAS:
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        import h5py

        with h5py.File(path, "r") as h5:
            raw = h5.attrs.get("model_config")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(
            f"{path.name}: not a readable {fmt.value} model file ({type(exc).__name__}: {exc})"
        ) from exc
    if raw is None:
        raise InvalidInputError(
            f"{path.name}: the .h5 file has no model configuration (weights only?); save the whole model with model.save('model.keras')"
        )
    return json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))


def check_keras_file(path: Path, fmt: api.ModelFormat) -> None:
    """InvalidInputError before loading a .keras / .h5 file that holds Lambda layers or custom objects."""
    _refuse(path.name, list(python_in_config(_keras_config(path, fmt))))


def _legacy_keras_metadata(path: Path) -> list[Any]:
    """The layer configurations tf_keras stored beside a SavedModel (keras_metadata.pb), as JSON."""
    file = path / "keras_metadata.pb"
    if not file.is_file():
        return []
    try:
        from tf_keras.protobuf import saved_metadata_pb2
    except ImportError:
        from tensorflow.python.keras.protobuf import saved_metadata_pb2
    metadata = saved_metadata_pb2.SavedMetadata()
    try:
        metadata.ParseFromString(file.read_bytes())
        return [json.loads(node.metadata) for node in metadata.nodes if node.metadata]
    except Exception as exc:  # protobuf and json raise several types for a corrupt file
        raise InvalidInputError(
            f"{path.name}: keras_metadata.pb is not readable ({type(exc).__name__}); export the model again"
        ) from exc


def unsafe_graph_ops(path: Path) -> list[str]:
    """'Op (in function)' for every op of UNSAFE_GRAPH_OPS in the SavedModel's graphs and function library."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    found = []
    for meta_graph in saved.meta_graphs:
        found += [f"{n.op} (node {n.name!r})" for n in meta_graph.graph_def.node if n.op in UNSAFE_GRAPH_OPS]
        for function in meta_graph.graph_def.library.function:
            found += [f"{n.op} (in {function.signature.name})" for n in function.node_def if n.op in UNSAFE_GRAPH_OPS]
    return found


def check_saved_model(path: Path) -> None:
    """InvalidInputError before loading a SavedModel with Lambda layers / custom objects or ops that call Python or touch files."""
    _refuse(path.name, [item for config in _legacy_keras_metadata(path) for item in python_in_config(config)])
    ops = unsafe_graph_ops(path)
    if ops:
        raise InvalidInputError(
            f"{path.name}: the SavedModel's graph runs {', '.join(dict.fromkeys(ops))}, which call Python or read/write "
            "files; edgequant runs image classifiers only: export the model without them (no tf.py_function / "
            "tf.io file ops in the model) with model.export('dir/')"
        )
