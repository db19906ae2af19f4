"""Method -> backend, from the method catalogue's lazily imported "module:factory" entry points.

The worker asks for a method's backend; only then is its module (and its
framework) imported. A backend that moves files itself (TensorRT's calibration
cache) declares a ``stores`` keyword and is built with the run's ``Stores``
(the job file's base dir for relative ``file://`` URIs, the spec's storage
settings), so no backend makes its own. A test imports every entry.
"""

from __future__ import annotations

import importlib
import inspect

from edgequant.api import v1alpha1 as api
from edgequant.backends.base import Backend
from edgequant.storage import Stores


def backend_for(method: api.Method, *, stores: Stores) -> Backend:
    """The backend serving ``method``, built with the run's stores."""
    entry = method.row.backend
    module_name, _, factory_name = entry.partition(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    wants_stores = "stores" in inspect.signature(factory).parameters
    backend = factory(stores=stores) if wants_stores else factory()
    if not isinstance(backend, Backend):
        raise TypeError(f"{entry} does not implement the Backend protocol")
    if method not in backend.methods:
        raise TypeError(f"{entry} does not serve {method.value}, which the method catalogue gives it")
    return backend
