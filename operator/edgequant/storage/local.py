"""file:// storage: reads in place (no copy), writes by copying into the target folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edgequant.storage.base import ObjectNotFoundError, UploadedObject, sha256_file
from edgequant.storage.uri import parse_uri
from edgequant.util.errors import InvalidInputError


class FileStore:
    """Local paths. Relative paths (file://data/x) resolve against ``base_dir`` (the job file's folder) and must stay
    inside it by name (no '..' out of it); links the author placed in that folder are followed, like an absolute
    path (file:///data/x), as the job author's explicit choice."""

    def __init__(self, *, base_dir: Path | None = None) -> None:
        self._base_dir = base_dir or Path.cwd()

    def local_path(self, uri: str) -> Path:
        parsed = parse_uri(uri)
        if parsed.scheme != "file":
            raise InvalidInputError(f"{uri!r} is not a file:// URI")
        path = Path(parsed.key)
        if path.is_absolute():
            return path
        target = self._base_dir / path
        if not Path(os.path.normpath(target)).is_relative_to(os.path.normpath(self._base_dir)):
            raise InvalidInputError(
                f"{uri}: the relative path leads outside {self._base_dir} (the job file's folder); "
                "use a path below that folder or an absolute file:/// URI"
            )
        return target

    def download(self, uri: str, dest: Path) -> Path:
        path = self.local_path(uri)
        if parse_uri(uri).is_prefix:
            if not path.is_dir():
                raise ObjectNotFoundError(
                    f"{uri}: no such folder (fix the URI, or drop the trailing '/' for a single file)"
                )
        elif not path.is_file():
            hint = " (it is a folder: end the URI with '/')" if path.is_dir() else ""
            raise ObjectNotFoundError(f"{uri}: no such file{hint}")
        return path

    def upload(self, path: Path, uri: str, *, content_type: str | None = None) -> UploadedObject:
        target = self.local_path(uri)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.resolve() != path.resolve():
                shutil.copyfile(path, target)
        except OSError as exc:
            raise InvalidInputError(
                f"cannot write {uri}: {exc.strerror} (fix output.uri or the folder's permissions)"
            ) from exc
        return UploadedObject(uri=uri, sha256=sha256_file(target), size_bytes=target.stat().st_size)
