"""The storage interface the worker uses, its errors, and the sha256 helper."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgequant.util.errors import InvalidInputError, StorageUnavailableError


class ObjectNotFoundError(InvalidInputError):
    """The spec names a bucket, key, prefix or path that does not exist: the spec must change."""


class StorageAccessError(StorageUnavailableError):
    """Credentials missing or refused (access denied, bad key, expired token)."""


class StorageUnreachableError(StorageUnavailableError):
    """The endpoint did not answer, or TLS failed; retrying may help."""


@dataclass(frozen=True)
class UploadedObject:
    uri: str
    sha256: str
    size_bytes: int


class Store(Protocol):
    """Moves whole objects between a URI and the local disk."""

    def download(self, uri: str, dest: Path) -> Path:
        """Make ``uri`` available locally under the folder ``dest`` and return its local path.

        A URI ending in '/' is a prefix: every object below it is fetched,
        keeping relative paths, and the local folder is returned.
        """
        ...

    def upload(self, path: Path, uri: str, *, content_type: str | None = None) -> UploadedObject:
        """Write the local file ``path`` to ``uri`` (a full object URI) and return its sha256."""
        ...


def sha256_file(path: Path, *, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, *, uri: str, field: str) -> None:
    """InvalidInputError naming ``field``, the expected and the actual hash when the file at ``path`` differs."""
    if path.is_dir():
        raise InvalidInputError(
            f"{field} is set but {uri} is a folder: a sha256 checks one file (drop {field} for a SavedModel)"
        )
    actual = sha256_file(path)
    if actual != expected.lower():
        raise InvalidInputError(
            f"{field}: {uri} has sha256 {actual}, expected {expected.lower()}; the object changed or the hash is wrong "
            f"(fix the object or {field})"
        )


def _folder_bytes(folder: Path) -> int:
    return (
        sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) if folder.is_dir() else 0
    )


def check_scratch(needed: int, *, uri: str) -> None:
    """InvalidInputError before a download that would overflow the scratch folder's size limit (the Job's emptyDir
    sizeLimit, passed as EDGEQUANT_SCRATCH_LIMIT); nothing to check without a limit (local runs)."""
    from edgequant.api.worker_contract import SCRATCH_DIR, SCRATCH_LIMIT_ENV, WORKDIR_ENV
    from edgequant.util.memory import mib, parse_quantity

    raw = os.environ.get(SCRATCH_LIMIT_ENV, "").strip()
    if not raw:
        return
    try:
        limit = parse_quantity(raw)
    except ValueError:
        return
    used = _folder_bytes(Path(os.environ.get(WORKDIR_ENV) or SCRATCH_DIR))
    if used + needed > limit:
        raise InvalidInputError(
            f"{uri}: downloading {mib(needed)} would overflow the scratch disk ({mib(used)} of {raw} used); "
            "raise spec.resources.scratchSize, or use a smaller model or dataset"
        )
