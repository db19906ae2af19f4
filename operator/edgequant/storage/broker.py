"""Storage through a broker process: the process that runs the user's model holds no storage credentials.

The worker's parent process keeps the credentials and moves objects; its child (conversion, evaluation, analysis:
everything that loads and runs the model) asks it over a socket, one JSON line per request. The parent answers
only for the URIs the spec names: downloads of the model, the datasets and the calibration cache, uploads below
the output prefix and the calibration cache. ``Stores`` routes through the broker when EDGEQUANT_STORAGE_BROKER_FD
names the child's end of the socket (worker/sandbox.py sets it up).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any, Protocol

from edgequant.api.worker_contract import BROKER_FD_ENV
from edgequant.storage.base import ObjectNotFoundError, StorageAccessError, StorageUnreachableError, UploadedObject
from edgequant.util.errors import EdgequantError, InvalidInputError, StorageUnavailableError

#: The errors that cross the socket by name; anything else arrives as StorageUnreachableError.
_ERRORS: dict[str, type[EdgequantError]] = {
    cls.__name__: cls
    for cls in (
        ObjectNotFoundError,
        StorageAccessError,
        StorageUnreachableError,
        InvalidInputError,
        StorageUnavailableError,
    )
}


class _Stores(Protocol):
    def download(self, uri: str, dest: Path, *, sha256: str | None = None, sha256_field: str = "sha256") -> Path: ...

    def upload(self, path: Path, uri: str, *, content_type: str | None = None) -> UploadedObject: ...


def _under(uri: str, prefixes: list[str]) -> bool:
    return (
        any(uri == p or (p.endswith("/") and uri.startswith(p)) for p in prefixes)
        and "/../" not in uri
        and not uri.endswith("/..")
    )


#: Where a file the child asks to upload may lie (resolved, links followed): never the kernel's views of processes.
_NEVER = (Path("/proc"), Path("/sys"), Path("/dev"))


def uploadable(path: Path, roots: list[Path]) -> bool:
    """A regular file inside one of ``roots`` once links are resolved, and not a view of a process (/proc/<parent>/environ
    would hand the child the keys it must not see)."""
    real = Path(os.path.realpath(path))
    if any(real == n or real.is_relative_to(n) for n in _NEVER):
        return False
    return real.is_file() and any(real.is_relative_to(Path(os.path.realpath(r))) for r in roots)


def serve(
    conn: socket.socket, stores: _Stores, *, reads: list[str], writes: list[str], roots: list[Path] | None = None
) -> None:
    """Answer the child's requests until it closes its end; only ``reads`` may be downloaded (a URI or a prefix
    ending in '/'), only ``writes`` uploaded, and only files below ``roots`` (the scratch folder)."""
    with conn, conn.makefile("rwb") as stream:
        for line in stream:
            try:
                request = json.loads(line)
                reply = _handle(request, stores, reads=reads, writes=writes, roots=roots or [])
            except EdgequantError as exc:
                reply = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
            except Exception as exc:  # never crash the parent on one bad request
                reply = {
                    "ok": False,
                    "error": "StorageUnreachableError",
                    "message": f"storage broker: {type(exc).__name__}: {exc}",
                }
            stream.write(json.dumps(reply).encode() + b"\n")
            stream.flush()


def _handle(
    request: dict[str, Any], stores: _Stores, *, reads: list[str], writes: list[str], roots: list[Path]
) -> dict[str, Any]:
    op, uri = request.get("op"), str(request.get("uri"))
    if op == "download":
        if not _under(uri, reads):
            raise InvalidInputError(f"{uri}: the worker may only read the URIs its spec names")
        path = stores.download(
            uri, Path(request["dest"]), sha256=request.get("sha256"), sha256_field=request.get("sha256_field", "sha256")
        )
        return {"ok": True, "path": str(path)}
    if op == "upload":
        if not _under(uri, writes):
            raise InvalidInputError(f"{uri}: the worker may only write below spec.output.uri")
        if not uploadable(Path(request["path"]), roots):
            raise InvalidInputError(f"{request['path']}: the worker may only upload files of its scratch folder")
        done = stores.upload(Path(request["path"]), uri, content_type=request.get("content_type"))
        return {"ok": True, "uri": done.uri, "sha256": done.sha256, "size_bytes": done.size_bytes}
    raise InvalidInputError(f"storage broker: unknown request {op!r}")


class BrokerClient:
    """The child's side: the Stores interface, every call a request to the parent."""

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)
        self._stream = self._sock.makefile("rwb")
        self._lock = threading.Lock()

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._stream.write(json.dumps(request).encode() + b"\n")
            self._stream.flush()
            line = self._stream.readline()
        if not line:
            raise StorageUnreachableError("storage broker: the worker's parent process closed the connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise _ERRORS.get(str(reply.get("error")), StorageUnreachableError)(str(reply.get("message")))
        return dict(reply)

    def download(self, uri: str, dest: Path, *, sha256: str | None = None, sha256_field: str = "sha256") -> Path:
        reply = self._call(
            {"op": "download", "uri": uri, "dest": str(dest), "sha256": sha256, "sha256_field": sha256_field}
        )
        return Path(reply["path"])

    def upload(self, path: Path, uri: str, *, content_type: str | None = None) -> UploadedObject:
        reply = self._call({"op": "upload", "uri": uri, "path": str(path), "content_type": content_type})
        return UploadedObject(uri=reply["uri"], sha256=reply["sha256"], size_bytes=int(reply["size_bytes"]))


_CLIENT: BrokerClient | None = None
_CLIENT_LOCK = threading.Lock()


def client_from_env(environ: dict[str, str] | Any) -> BrokerClient | None:
    """The process-wide broker client when this process is a sandboxed child, else None."""
    global _CLIENT
    raw = environ.get(BROKER_FD_ENV)
    if not raw:
        return None
    with _CLIENT_LOCK:
        if _CLIENT is None:
            _CLIENT = BrokerClient(int(raw))
        return _CLIENT
