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

    def child(self, name: str) -> ObjectUri:
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


#: Longest file name most filesystems accept (ext4, xfs, overlayfs: NAME_MAX).
MAX_NAME_BYTES = 255
_KEY_RULE = (
    "each key below a prefix must be a relative path of plain names: no leading '/', no '//', no '.' or '..' "
    f"parts, no backslashes, each part at most {MAX_NAME_BYTES} bytes"
)


def unsafe_relative_path(relative: str) -> str | None:
    """Why ``relative`` (a '/'-separated object key below a prefix) could land outside its folder, or None. Pure."""
    if not relative:
        return "is empty"
    if "\x00" in relative:
        return "contains a NUL byte"
    if "\\" in relative:
        return "contains a backslash"
    if relative.startswith("/"):
        return "starts with '/'"
    for part in relative.split("/"):
        if part == "":
            return "contains '//'"
        if part in (".", ".."):
            return f"has a {part!r} part"
        if len(part.encode()) > MAX_NAME_BYTES:
            return f"has a part of {len(part.encode())} bytes (at most {MAX_NAME_BYTES})"
    return None


def contained_path(root: Path, relative: str, *, key: str, uri: str) -> Path:
    """``root/relative``, or InvalidInputError naming ``key`` (of ``uri``) when it could resolve anywhere outside ``root``.

    Checks the text (so nothing is created outside) and then the resolved path (so a symlink inside ``root`` cannot
    lead out either).
    """
    problem = unsafe_relative_path(relative)
    if problem is None:
        target = root.joinpath(*relative.split("/"))
        if target.resolve().is_relative_to(root.resolve()):
            return target
        problem = "resolves outside its folder (through a symlink)"
    raise InvalidInputError(f"{uri}: object key {key!r} {problem}: rename the object ({_KEY_RULE})")
