"""s3:// storage through boto3: AWS or any S3-compatible store (MinIO, Ceph, moto).

Credentials come from boto3's standard chain only: AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN) injected from the Secret named in
``spec.storage.credentialsSecret``, or web identity (IRSA:
AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), or an instance profile. Nothing
here reads, logs or returns a key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edgequant.api import v1alpha1 as api
from edgequant.api.worker_contract import (
    CA_BUNDLE_DIR,
    CA_BUNDLE_ENV,
    S3_CONNECT_TIMEOUT_ENV,
    S3_MAX_ATTEMPTS_ENV,
    S3_READ_TIMEOUT_ENV,
)
from edgequant.storage.base import (
    ObjectNotFoundError,
    StorageAccessError,
    StorageUnreachableError,
    UploadedObject,
    check_scratch,
    sha256_file,
)
from edgequant.storage.uri import ObjectUri, contained_path, parse_uri
from edgequant.util.errors import InvalidInputError

_NOT_FOUND = {"NoSuchBucket", "NoSuchKey", "404", "NotFound"}
_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
    "AccountProblem",
}


def ca_bundle_path(storage: api.Storage) -> str | None:
    """The CA bundle file for the endpoint, or None for the system store / AWS_CA_BUNDLE."""
    override = os.environ.get(CA_BUNDLE_ENV)
    if override:
        return override
    if storage.ca_bundle is None:
        return None
    path = Path(CA_BUNDLE_DIR) / storage.ca_bundle.key
    if not path.is_file():
        raise InvalidInputError(
            f"spec.storage.caBundle: {path} is missing; the operator mounts ConfigMap "
            f"{storage.ca_bundle.config_map!r} there (locally, set {CA_BUNDLE_ENV} to the PEM file)"
        )
    return str(path)


#: Defaults of the S3 timeouts: a hung endpoint ends the run after about 3 x (10 + 60) s.
DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, DEFAULT_MAX_ATTEMPTS = 10.0, 60.0, 3
#: Multipart parts of uploads: fixed, so the ETag the server computes can be predicted (verify_etag).
MULTIPART_THRESHOLD = MULTIPART_CHUNKSIZE = 8 * 1024 * 1024


def timeouts_from_env(env: Mapping[str, str]) -> tuple[float, float, int]:
    """(connect seconds, read seconds, attempts per request) from the EDGEQUANT_S3_* settings the Job passes."""

    def number(name: str, default: float) -> float:
        raw = env.get(name, "").strip()
        try:
            value = float(raw) if raw else default
        except ValueError:
            raise InvalidInputError(f"{name}={raw!r} is not a number of seconds") from None
        return value if value > 0 else default

    return (
        number(S3_CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT),
        number(S3_READ_TIMEOUT_ENV, DEFAULT_READ_TIMEOUT),
        max(1, int(number(S3_MAX_ATTEMPTS_ENV, DEFAULT_MAX_ATTEMPTS))),
    )


def expected_etag(
    path: Path, *, size: int, threshold: int = MULTIPART_THRESHOLD, chunksize: int = MULTIPART_CHUNKSIZE
) -> str:
    """The ETag S3 computes for ``path`` uploaded by ``upload_file`` with these part sizes (no SSE-KMS / SSE-C):
    the MD5 of the bytes for one part, else the MD5 of the parts' MD5s and '-<parts>'."""
    if size < threshold:
        digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()
    from s3transfer.utils import ChunksizeAdjuster

    part = ChunksizeAdjuster().adjust_chunksize(chunksize, size)
    parts = []
    with path.open("rb") as fh:
        while chunk := fh.read(part):
            parts.append(hashlib.md5(chunk, usedforsecurity=False).digest())
    return f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"


class S3Store:
    """One boto3 client configured from ``spec.storage``; thread-safe for parallel transfers."""

    def __init__(self, *, storage: api.Storage, max_workers: int = 8) -> None:
        import boto3
        from botocore.config import Config

        self._timeouts = timeouts_from_env(os.environ)
        connect, read, attempts = self._timeouts
        config = Config(
            s3={"addressing_style": "path" if storage.path_style else "auto"},
            retries={"max_attempts": attempts, "mode": "standard"},
            connect_timeout=connect,
            read_timeout=read,
            max_pool_connections=max(10, max_workers),
        )
        self._endpoint = storage.endpoint or "AWS S3"
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=storage.endpoint,
            region_name=storage.region,
            verify=ca_bundle_path(storage),
            config=config,
        )
        self._max_workers = max_workers

    # ------------------------------------------------------------------ errors

    def _translate(self, exc: Exception, uri: str, action: str) -> Exception:
        """One mapping from botocore failures to errors that name the URI and the fix."""
        from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
        from botocore import exceptions as bx

        if isinstance(exc, S3UploadFailedError | S3TransferFailedError):
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, Exception):
                return self._translate(cause, uri, action)
            for code in ("NoSuchBucket", *sorted(_DENIED)):
                if f"({code})" in str(exc):
                    return self._translate(bx.ClientError({"Error": {"Code": code}}, action), uri, action)
            return StorageUnreachableError(f"{uri}: {action} failed: {exc}")
        if isinstance(exc, bx.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NotFound") and not self._bucket_exists(parse_uri(uri).bucket):
                code = "NoSuchBucket"  # HEAD answers carry no error code: ask about the bucket
            if code == "NoSuchBucket":
                bucket = parse_uri(uri).bucket
                return ObjectNotFoundError(
                    f"{uri}: bucket {bucket!r} does not exist at {self._endpoint} (create it or fix the URI)"
                )
            if code in _NOT_FOUND:
                return ObjectNotFoundError(
                    f"{uri}: no such object at {self._endpoint} (fix the URI; a folder needs a trailing '/')"
                )
            if code in _DENIED:
                return StorageAccessError(
                    f"{uri}: access denied ({code}) while trying to {action}: check the keys in "
                    "spec.storage.credentialsSecret or the service account's role"
                )
            return StorageUnreachableError(
                f"{uri}: {action} failed with {code or type(exc).__name__} from {self._endpoint}"
            )
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return StorageAccessError(
                f"{uri}: no S3 credentials found: set spec.storage.credentialsSecret, or run with a service account "
                "that has a role (IRSA / workload identity)"
            )
        if isinstance(exc, bx.SSLError):
            return StorageUnreachableError(
                f"{uri}: TLS to {self._endpoint} failed: set spec.storage.caBundle for a private CA"
            )
        if isinstance(
            exc, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError | bx.ConnectionClosedError
        ):
            connect, read, attempts = self._timeouts
            return StorageUnreachableError(
                f"{uri}: cannot reach {self._endpoint}: no answer after {attempts} attempt(s) "
                f"({connect:g} s to connect, {read:g} s per read); check spec.storage.endpoint and the network"
            )
        if isinstance(exc, bx.BotoCoreError):
            return StorageUnreachableError(f"{uri}: {action} failed: {exc}")
        return exc

    def _bucket_exists(self, bucket: str) -> bool:
        from botocore import exceptions as bx

        try:
            self._client.head_bucket(Bucket=bucket)
        except bx.ClientError as exc:
            return str(exc.response.get("Error", {}).get("Code", "")) not in ("404", "NoSuchBucket", "NotFound")
        except bx.BotoCoreError:
            return True
        return True

    # ------------------------------------------------------------------ transfers

    def _download_key(self, bucket: str, key: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        # download_file streams to a temporary file beside the target, in parts, then renames.
        self._client.download_file(bucket, key, str(target))

    def _list(self, parsed: ObjectUri) -> dict[str, int]:
        """Key -> size of every object below the prefix."""
        keys: dict[str, int] = {}
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=parsed.bucket, Prefix=parsed.key):
            keys.update(
                (obj["Key"], int(obj.get("Size") or 0))
                for obj in page.get("Contents", [])
                if not obj["Key"].endswith("/")
            )
        return keys

    def download(self, uri: str, dest: Path) -> Path:
        parsed = parse_uri(uri)
        try:
            if not parsed.is_prefix:
                target = contained_path(dest, parsed.basename, key=parsed.key, uri=uri)
                size = int(self._client.head_object(Bucket=parsed.bucket, Key=parsed.key)["ContentLength"])
                check_scratch(size, uri=uri)  # before the first byte is written
                self._download_key(parsed.bucket, parsed.key, target)
                return target
            sizes = self._list(parsed)
            keys = sorted(sizes)
            if not keys:
                raise ObjectNotFoundError(
                    f"{uri}: no objects under this prefix at {self._endpoint} (fix the URI or upload the data)"
                )
            check_scratch(sum(sizes.values()), uri=uri)
            folder = contained_path(dest, parsed.basename or parsed.bucket, key=parsed.key or parsed.bucket, uri=uri)
            # Every key is checked before anything is written: a refused key leaves nothing behind.
            targets = [(key, contained_path(folder, key[len(parsed.key) :], key=key, uri=uri)) for key in keys]
            with ThreadPoolExecutor(max_workers=self._max_workers) as pool:
                for future in [pool.submit(self._download_key, parsed.bucket, k, t) for k, t in targets]:
                    future.result()
            return folder
        except (ObjectNotFoundError, InvalidInputError):
            raise
        except Exception as exc:
            raise self._translate(exc, uri, "download") from exc

    def upload(self, path: Path, uri: str, *, content_type: str | None = None) -> UploadedObject:
        parsed = parse_uri(uri)
        digest = sha256_file(path)
        extra: dict[str, Any] = {"Metadata": {"sha256": digest}}
        if content_type:
            extra["ContentType"] = content_type
        from boto3.s3.transfer import TransferConfig

        transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNKSIZE)
        try:
            self._client.upload_file(str(path), parsed.bucket, parsed.key, ExtraArgs=extra, Config=transfer)
            head = self._client.head_object(Bucket=parsed.bucket, Key=parsed.key)
            size = path.stat().st_size
            self._verify_stored(head, path, size=size, digest=digest, parsed=parsed, uri=uri)
        except StorageUnreachableError:
            raise
        except Exception as exc:
            raise self._translate(exc, uri, "upload") from exc
        return UploadedObject(uri=uri, sha256=digest, size_bytes=size)

    def _verify_stored(
        self, head: dict[str, Any], path: Path, *, size: int, digest: str, parsed: ObjectUri, uri: str
    ) -> None:
        """Check what the server computed, not what we sent: the ETag (S3's MD5 of the bytes it stored, per part);
        where encryption makes the ETag no MD5 (SSE-KMS, SSE-C), the sha256 of the object read back."""
        mismatch = f"{uri}: the stored object does not match the uploaded file ({{}}); the upload was corrupted, retry"
        if int(head["ContentLength"]) != size:
            raise StorageUnreachableError(mismatch.format(f"{head['ContentLength']} bytes stored, {size} sent"))
        if head.get("ServerSideEncryption") == "aws:kms" or head.get("SSECustomerAlgorithm"):
            body = self._client.get_object(Bucket=parsed.bucket, Key=parsed.key)["Body"]
            stored = hashlib.sha256()
            for chunk in iter(lambda: body.read(1 << 20), b""):
                stored.update(chunk)
            if stored.hexdigest() != digest:
                raise StorageUnreachableError(mismatch.format("the sha256 read back differs"))
            return
        etag = str(head.get("ETag", "")).strip('"')
        if etag != expected_etag(path, size=size):
            raise StorageUnreachableError(mismatch.format(f"the server's ETag {etag} is not the file's MD5"))
