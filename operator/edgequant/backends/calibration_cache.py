"""Content-addressed calibration results beside the outputs, for every backend that calibrates.

A stored calibration is named by what determines it: the backend, the sha256 of the model it calibrated, the
sha256 of the calibration samples exactly as the backend received them (preprocessed float32, in order), and the
recipe (algorithm and every setting that changes the result, the library version, ``RECIPE_VERSION``). Change any
of them and the name changes, so a stale result is never read. Any job (or sweep cell, in any pod) that computes
the same key finds the same objects: a sweep points all its cells' ``calibration.cacheUri`` at one prefix, so
cells sharing a model, data and recipe calibrate once.

Layout under the prefix: ``<backend>-<24 hex digits>/`` holding the backend's files and ``key.json``, written
last, so a bundle without ``key.json`` (an interrupted upload) is a miss.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.api import v1alpha1 as api
from edgequant.backends.base import Batches
from edgequant.storage import ObjectNotFoundError, Stores, as_prefix
from edgequant.storage.base import sha256_file
from edgequant.util.errors import EdgequantError

#: Bump when the way edgequant calibrates changes in a way the recipe does not name.
RECIPE_VERSION = 1
DEFAULT_FOLDER = "calibration-cache/"
KEY_FILE = "key.json"


def cache_prefix(calibration: api.Calibration | None, *, output_uri: str) -> str:
    """calibration.cacheUri (a prefix), else <output.uri>calibration-cache/."""
    if calibration is not None and calibration.cache_uri:
        return as_prefix(calibration.cache_uri)
    return as_prefix(output_uri) + DEFAULT_FOLDER


def model_sha256(path: Path) -> str:
    """A model file's sha256; for a folder (SavedModel), of its files' names and contents in name order."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + sha256_file(file).encode())
    return digest.hexdigest()


def batches_sha256(batches: Batches) -> str:
    """The calibration samples as the backend receives them: shapes and float32 bytes of every batch, in order."""
    digest = hashlib.sha256()
    for x, _labels in batches:
        array = np.ascontiguousarray(x, dtype=np.float32)
        digest.update(repr(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CalibrationKey:
    backend: str
    model_sha256: str
    data_sha256: str
    recipe: Mapping[str, Any]
    """Every setting that changes the result, JSON-ready (algorithm, percentile, library version...)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "modelSha256": self.model_sha256,
            "dataSha256": self.data_sha256,
            "recipe": dict(self.recipe),
            "recipeVersion": RECIPE_VERSION,
        }

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @property
    def stem(self) -> str:
        return f"{self.backend}-{self.digest[:24]}"


class CalibrationStore:
    """Reads and writes calibration bundles under one prefix through the storage layer (file:// or s3://).

    Reading and writing only save time: a storage failure becomes a log line and a recalculation, never a failed job.
    """

    def __init__(
        self, *, stores: Stores, prefix: str, workdir: Path, log: Callable[[str], None] = lambda _m: None
    ) -> None:
        self._stores = stores
        self._prefix = as_prefix(prefix)
        self._workdir = workdir
        self._log = log
        self.hits = 0
        self.misses = 0
        self._records: dict[str, dict[str, Any]] = {}

    def uri(self, key: CalibrationKey, name: str = "") -> str:
        return f"{self._prefix}{key.stem}/{name}"

    def fetch(self, key: CalibrationKey, required: list[str], optional: tuple[str, ...] = ()) -> dict[str, Path] | None:
        """The bundle's files, downloaded, when a complete bundle with exactly this key holds ``required``; else None.

        ``optional`` files are downloaded when the bundle has them."""
        folder = self._workdir / "calibration-cache" / key.stem
        try:
            stored = json.loads(self._stores.download(self.uri(key, KEY_FILE), folder / KEY_FILE).read_text())
            listed = set(stored.get("files", []))
            if stored.get("key") != key.to_json() or not set(required) <= listed:
                self.misses += 1
                return None
            names = [*required, *(n for n in optional if n in listed)]
            files = {name: self._stores.download(self.uri(key, name), folder / name) for name in names}
            self._records[key.stem] = stored
        except ObjectNotFoundError:
            self.misses += 1
            return None
        except (EdgequantError, OSError, ValueError) as exc:
            self._log(f"calibration cache not read at {self.uri(key)}: {exc}; calibrating")
            self.misses += 1
            return None
        self.hits += 1
        self._log(f"calibration cache hit: {self.uri(key)} (model, data and recipe unchanged)")
        return files

    def publish(
        self, key: CalibrationKey, files: Mapping[str, Path], *, meta: Mapping[str, Any] | None = None
    ) -> str | None:
        """Upload the files, then key.json; returns a warning when it could not (the job goes on)."""
        folder = self._workdir / "calibration-cache" / f"{key.stem}-out"
        folder.mkdir(parents=True, exist_ok=True)
        record = folder / KEY_FILE
        record.write_text(
            json.dumps(
                {
                    "key": key.to_json(),
                    "files": sorted(files),
                    "meta": dict(meta or {}),
                    "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                indent=2,
                sort_keys=True,
            )
        )
        try:
            for name, path in files.items():
                self._stores.upload(path, self.uri(key, name))
            self._stores.upload(record, self.uri(key, KEY_FILE), content_type="application/json")
        except (EdgequantError, OSError) as exc:
            return f"calibration cache not stored at {self.uri(key)}: {exc}"
        self._log(f"calibration stored for reuse: {self.uri(key)}")
        return None

    def read_meta(self, key: CalibrationKey) -> dict[str, Any]:
        """The ``meta`` a fetched bundle was published with (after a successful ``fetch``)."""
        return dict(self._records.get(key.stem, {}).get("meta") or {})
