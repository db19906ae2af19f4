"""Content-addressed calibration caches beside the artifacts, so an identical job skips calibration.

A cache is named by what determines it: the model's sha256, the calibration
manifest's hash (the exact padded batches), the calibration recipe (device and
algorithm, e.g. ``gpu-entropy`` or ``cpu-percentile-99.999``) and the TensorRT
version. Change any of them and the name changes, so a stale cache is never
read. Beside each ``.cache`` a ``.json`` records the key and the manifest.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgequant.backends import calibration_cache
from edgequant.backends.tensorrt.cache_format import CalibrationCacheFormatError, check_matches, parse
from edgequant.backends.tensorrt.calibrator import CalibrationManifest
from edgequant.storage import ObjectNotFoundError, Stores, UploadedObject, as_prefix
from edgequant.util.errors import EdgequantError

#: Bump when the way edgequant calibrates changes (padding, preprocessing hand-off, ORT settings).
RECIPE_VERSION = 1

DEFAULT_FOLDER = calibration_cache.DEFAULT_FOLDER
#: One rule for every backend: calibration.cacheUri, else <output.uri>calibration-cache/.
cache_prefix = calibration_cache.cache_prefix


@dataclass(frozen=True)
class CacheKey:
    model_sha256: str
    manifest_sha256: str
    recipe: str
    """Where and how ranges were computed: gpu-entropy, gpu-minmax, cpu-minmax, cpu-entropy, cpu-percentile-99.999."""
    tensorrt_version: str
    """MAJOR.MINOR.PATCH of the TensorRT whose header the cache carries."""

    def to_json(self) -> dict[str, Any]:
        return {
            "modelSha256": self.model_sha256,
            "manifestSha256": self.manifest_sha256,
            "recipe": self.recipe,
            "tensorrtVersion": self.tensorrt_version,
            "recipeVersion": RECIPE_VERSION,
        }

    @property
    def digest(self) -> str:
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def stem(self) -> str:
        """Readable and unique: trt8.6.1-gpu-entropy-<24 hex digits of the digest>."""
        return f"trt{self.tensorrt_version}-{self.recipe}-{self.digest[:24]}"


@dataclass(frozen=True)
class StoredCache:
    data: bytes
    uri: str


class CalibrationCacheStore:
    """Reads and writes caches under one prefix through the storage layer (file:// or s3://)."""

    def __init__(self, *, stores: Stores, prefix: str, workdir: Path) -> None:
        self._stores = stores
        self._prefix = as_prefix(prefix)
        self._workdir = workdir

    def uri(self, key: CacheKey, suffix: str = ".cache") -> str:
        return self._prefix + key.stem + suffix

    def load(self, key: CacheKey, *, version_number: int, algorithm: str) -> StoredCache | None:
        """The cache for ``key``, or None when there is none (or it is unreadable, which the caller is told by a None).

        Missing objects are a miss; any other storage failure is raised, since the
        artifact upload to the same store would fail the same way.
        """
        uri = self.uri(key)
        try:
            local = self._stores.download(uri, self._workdir / "calibration-cache" / key.stem)
        except ObjectNotFoundError:
            return None
        data = local.read_bytes()
        try:
            check_matches(parse(data, source=uri), version=version_number, algorithm=algorithm, source=uri)
        except CalibrationCacheFormatError:
            return None
        return StoredCache(data=data, uri=uri)

    def save(self, key: CacheKey, data: bytes, *, manifest: CalibrationManifest) -> UploadedObject:
        """Write the cache and its description; storage errors propagate (the caller decides if they are fatal)."""
        folder = self._workdir / "calibration-cache" / "out"
        folder.mkdir(parents=True, exist_ok=True)
        cache_file = folder / (key.stem + ".cache")
        cache_file.write_bytes(data)
        sidecar = folder / (key.stem + ".json")
        sidecar.write_text(
            json.dumps(
                {
                    "key": key.to_json(),
                    "manifest": manifest.to_json(),
                    "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                indent=2,
                sort_keys=True,
            )
        )
        uploaded = self._stores.upload(cache_file, self.uri(key), content_type="text/plain")
        self._stores.upload(sidecar, self.uri(key, ".json"), content_type="application/json")
        return uploaded


def save_quietly(
    store: CalibrationCacheStore, key: CacheKey, data: bytes, *, manifest: CalibrationManifest
) -> tuple[UploadedObject | None, str | None]:
    """Saving the cache only saves time later: a failure becomes a warning, not a failed job."""
    try:
        return store.save(key, data, manifest=manifest), None
    except EdgequantError as exc:
        return None, f"calibration cache not stored at {store.uri(key)}: {exc}"
