"""Object storage behind one small interface: ``s3://`` through boto3 and ``file://``.

``store_for(uri, storage=spec.storage)`` picks the implementation; callers use
``Store.download`` / ``Store.upload`` and catch the errors in ``base``.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgequant.api import v1alpha1 as api
from edgequant.storage.base import (
    ObjectNotFoundError,
    StorageAccessError,
    StorageUnreachableError,
    Store,
    UploadedObject,
    sha256_file,
    verify_sha256,
)
from edgequant.storage.broker import client_from_env
from edgequant.storage.uri import ObjectUri, as_prefix, file_uri, parse_uri

__all__ = [
    "ObjectNotFoundError",
    "ObjectUri",
    "StorageAccessError",
    "StorageUnreachableError",
    "Store",
    "Stores",
    "UploadedObject",
    "as_prefix",
    "file_uri",
    "parse_uri",
    "sha256_file",
    "verify_sha256",
]


class Stores:
    """Hands out one store per scheme, created on first use (boto3 is imported only for s3://)."""

    def __init__(self, *, storage: api.Storage, base_dir: Path | None = None) -> None:
        self._storage = storage
        self._base_dir = base_dir
        self._by_scheme: dict[str, Store] = {}

    def for_uri(self, uri: str) -> Store:
        scheme = parse_uri(uri).scheme
        if scheme not in self._by_scheme:
            if scheme == "s3":
                from edgequant.storage.s3 import S3Store

                self._by_scheme[scheme] = S3Store(storage=self._storage)
            else:
                from edgequant.storage.local import FileStore

                self._by_scheme[scheme] = FileStore(base_dir=self._base_dir)
        return self._by_scheme[scheme]

    def download(self, uri: str, dest: Path, *, sha256: str | None = None, sha256_field: str = "sha256") -> Path:
        """Fetch ``uri``; with ``sha256``, verify the file before anything reads it (``sha256_field`` names the spec field)."""
        broker = client_from_env(os.environ)
        if broker is not None:  # a sandboxed worker: the parent process holds the credentials and does the transfer
            return broker.download(uri, dest, sha256=sha256, sha256_field=sha256_field)
        path = self.for_uri(uri).download(uri, dest)
        if sha256 is not None:
            verify_sha256(path, sha256, uri=uri, field=sha256_field)
        return path

    def upload(self, path: Path, uri: str, *, content_type: str | None = None) -> UploadedObject:
        broker = client_from_env(os.environ)
        if broker is not None:
            return broker.upload(path, uri, content_type=content_type)
        return self.for_uri(uri).upload(path, uri, content_type=content_type)
