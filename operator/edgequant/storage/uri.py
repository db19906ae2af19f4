"""Parsing of the two URI schemes edgequant reads and writes: ``s3://bucket/key`` and ``file:///path``. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from edgequant.util.errors import InvalidInputError


@dataclass(frozen=True)
class ObjectUri:
    """One parsed URI. For file:// the bucket is empty and key is the path."""

    scheme: str
    bucket: str
    key: str

    @property
    def is_prefix(self) -> bool:
        """A trailing '/' names a folder (imagefolder dataset, SavedModel, output prefix)."""
        return self.key.endswith("/") or self.key == ""

    @property
    def basename(self) -> str:
        return self.key.rstrip("/").rsplit("/", 1)[-1]

    def child(self, name: str) -> "ObjectUri":
        """The URI of ``name`` below this prefix."""
        key = self.key if self.is_prefix else self.key + "/"
        return ObjectUri(self.scheme, self.bucket, key + name)

    def __str__(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.key}"
        return f"file://{self.key}"


def parse_uri(uri: str) -> ObjectUri:
    """Split a URI; raises InvalidInputError naming the URI when it is neither s3:// nor file://."""
    if uri.startswith("s3://"):
        rest = uri[len("s3://") :]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise InvalidInputError(f"{uri!r} has no bucket: write s3://bucket/key")
        return ObjectUri("s3", bucket, key)
    if uri.startswith("file://"):
        path = unquote(uri[len("file://") :])
        if not path:
            raise InvalidInputError(f"{uri!r} has no path: write file:///absolute/path")
        return ObjectUri("file", "", path)
    raise InvalidInputError(f"unsupported URI {uri!r}: use s3://bucket/key or file:///absolute/path")


def as_prefix(uri: str) -> str:
    """The output URI as a prefix: artifacts and reports are written below it."""
    return uri if uri.endswith("/") else uri + "/"


def file_uri(path: Path, *, folder: bool = False) -> str:
    """file:// URI of a local path; ``folder`` adds the trailing '/' that marks a prefix."""
    text = str(path.resolve())
    return f"file://{text}/" if folder and not text.endswith("/") else f"file://{text}"
