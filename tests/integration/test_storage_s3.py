"""s3:// storage through boto3 against moto's S3 server on loopback (server mode, over HTTP)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from edgequant.api import v1alpha1 as api
from edgequant.api.exitcodes import ExitCode
from edgequant.api.worker_contract import CA_BUNDLE_ENV
from edgequant.storage import ObjectNotFoundError, StorageAccessError, StorageUnreachableError, Stores, sha256_file
from edgequant.storage.s3 import S3Store, ca_bundle_path
from edgequant.util.errors import InvalidInputError

pytestmark = pytest.mark.integration


def _store(endpoint: str, *, path_style: bool = True) -> S3Store:
    return S3Store(storage=api.Storage(endpoint=endpoint, path_style=path_style, region="us-east-1"))


def test_round_trip_checks_sha256(s3_server: Any, s3_bucket: str, s3_client: Any, tmp_path: Path) -> None:
    artifact = tmp_path / "model.int8.tflite"
    artifact.write_bytes(os.urandom(9 * 1024 * 1024 + 17))  # above the 8 MiB multipart threshold: parts both ways
    store = _store(s3_server.endpoint)
    uri = f"s3://{s3_bucket}/runs/1/model.int8.tflite"
    uploaded = store.upload(artifact, uri, content_type="application/octet-stream")
    expected = hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert (uploaded.uri, uploaded.sha256, uploaded.size_bytes) == (uri, expected, artifact.stat().st_size)
    head = s3_client.head_object(Bucket=s3_bucket, Key="runs/1/model.int8.tflite")
    assert head["Metadata"]["sha256"] == expected
    back = store.download(uri, tmp_path / "back")
    assert back == tmp_path / "back" / "model.int8.tflite"
    assert sha256_file(back) == expected


def test_prefix_download_keeps_the_tree(s3_server: Any, s3_bucket: str, s3_client: Any, tmp_path: Path) -> None:
    keys = [f"cal/{c:02d}_class/{i}.png" for c in range(3) for i in range(7)] + ["cal/saved/variables/variables.index"]
    for key in keys:
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=key.encode())
    s3_client.put_object(Bucket=s3_bucket, Key="calibration-other/x.png", Body=b"not below the prefix")
    folder = _store(s3_server.endpoint, path_style=False).download(f"s3://{s3_bucket}/cal/", tmp_path)
    assert folder == tmp_path / "cal"
    found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert found == sorted(k.removeprefix("cal/") for k in keys)
    assert (folder / "01_class" / "3.png").read_bytes() == b"cal/01_class/3.png"


def test_missing_bucket_key_and_prefix_name_the_uri(s3_server: Any, s3_bucket: str, tmp_path: Path) -> None:
    store = _store(s3_server.endpoint)
    with pytest.raises(ObjectNotFoundError, match="bucket 'no-such-bucket-x' does not exist") as err:
        store.download("s3://no-such-bucket-x/m.keras", tmp_path)
    assert "s3://no-such-bucket-x/m.keras" in str(err.value)
    with pytest.raises(ObjectNotFoundError, match=f"s3://{s3_bucket}/absent.keras: no such object"):
        store.download(f"s3://{s3_bucket}/absent.keras", tmp_path)
    with pytest.raises(ObjectNotFoundError, match="no objects under this prefix"):
        store.download(f"s3://{s3_bucket}/empty/", tmp_path)
    assert ObjectNotFoundError.exit_code is ExitCode.INVALID_INPUT


def test_upload_to_missing_bucket_is_named(s3_server: Any, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text("{}")
    with pytest.raises(ObjectNotFoundError, match="bucket 'absent-out' does not exist"):
        _store(s3_server.endpoint).upload(report, "s3://absent-out/run/report.json")


def test_unreachable_endpoint_is_a_storage_error(tmp_path: Path, s3_server: Any) -> None:
    from tests.conftest import free_port  # noqa: PLC0415 - the helper lives with the fixtures

    store = S3Store(
        storage=api.Storage(endpoint=f"http://127.0.0.1:{free_port()}", path_style=True, region="us-east-1")
    )
    store._client.meta.config.retries = {"max_attempts": 1}
    with pytest.raises(StorageUnreachableError, match="cannot reach http://127.0.0.1") as err:
        store.download("s3://b/k.keras", tmp_path)
    assert err.value.exit_code is ExitCode.STORAGE_UNAVAILABLE


def test_access_denied_names_the_secret(
    s3_server: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    with s3_server.enforce_auth():
        with pytest.raises(StorageAccessError, match="access denied .*credentialsSecret") as err:
            _store(s3_server.endpoint).download(f"s3://{s3_bucket}/m.keras", tmp_path)
    assert "AKIAUNKNOWNKEY000000" not in str(err.value)
    assert err.value.exit_code is ExitCode.STORAGE_UNAVAILABLE


def test_missing_credentials_say_how_to_provide_them(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageAccessError, match="no S3 credentials found: set spec.storage.credentialsSecret"):
        _store(s3_server.endpoint).download("s3://b/m.keras", tmp_path)


def test_ca_bundle_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CA_BUNDLE_ENV, raising=False)
    assert ca_bundle_path(api.Storage()) is None
    with pytest.raises(InvalidInputError, match="spec.storage.caBundle: /etc/edgequant/ca/ca.crt is missing"):
        ca_bundle_path(api.Storage(ca_bundle=api.CABundleRef(config_map="minio-ca")))
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv(CA_BUNDLE_ENV, str(pem))
    assert ca_bundle_path(api.Storage(ca_bundle=api.CABundleRef(config_map="minio-ca"))) == str(pem)


def test_stores_route_by_scheme(s3_server: Any, s3_bucket: str, tmp_path: Path) -> None:
    stores = Stores(storage=api.Storage(endpoint=s3_server.endpoint, path_style=True, region="us-east-1"))
    local = tmp_path / "a.bin"
    local.write_bytes(b"abc")
    assert isinstance(stores.for_uri(f"s3://{s3_bucket}/a.bin"), S3Store)
    s3 = stores.upload(local, f"s3://{s3_bucket}/a.bin")
    copied = stores.upload(local, f"file://{tmp_path}/copy/a.bin")
    assert s3.sha256 == copied.sha256 == hashlib.sha256(b"abc").hexdigest()


def test_web_identity_credentials_irsa(
    s3_server: Any, s3_bucket: str, s3_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No keys at all: boto3's chain exchanges a projected token for credentials at STS (moto's), as IRSA does."""
    s3_client.put_object(Bucket=s3_bucket, Key="m.keras", Body=b"model")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bWw6cXVhbnRpemVyIn0.c2ln")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/edgequant-quantizer")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", s3_server.endpoint)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    import boto3

    assert boto3.session.Session().get_credentials().method == "assume-role-with-web-identity"
    store = _store(s3_server.endpoint)
    assert store.download(f"s3://{s3_bucket}/m.keras", tmp_path).read_bytes() == b"model"


TRAVERSING_KEYS = [
    ("cal//etc/x", "starts with '/'"),  # relative to the prefix: "/etc/x", an absolute path
    ("cal/a//x", "contains '//'"),
    ("cal/../x", "has a '..' part"),
    ("cal/a/../../x", "has a '..' part"),
    ("cal/./x", "has a '.' part"),
    ("cal/a\\..\\..\\x", "contains a backslash"),
    ("cal/" + "n" * 256 + ".png", "has a part of 260 bytes"),
    ("cal/" + "é" * 128 + "/x.png", "has a part of 256 bytes"),
]


@pytest.mark.parametrize(("bad_key", "problem"), TRAVERSING_KEYS, ids=lambda v: v[:24] if isinstance(v, str) else None)
def test_prefix_keys_that_could_leave_the_folder_end_as_invalid_input(
    s3_server: Any,
    s3_bucket: str,
    s3_client: Any,
    tmp_path: Path,
    bad_key: str,
    problem: str,
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="cal/0/a.png", Body=b"fine")
    s3_client.put_object(Bucket=s3_bucket, Key=bad_key, Body=b"escaped")
    listed = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="cal/")["Contents"]]
    assert bad_key in listed  # the server stored the key verbatim: the check under test is ours
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(InvalidInputError, match=problem) as err:
        _store(s3_server.endpoint).download(f"s3://{s3_bucket}/cal/", dest)
    assert repr(bad_key) in str(err.value) and err.value.exit_code is ExitCode.INVALID_INPUT
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == []  # every key is checked before the first byte lands


def test_a_key_with_a_leading_slash_is_refused(s3_server: Any, s3_bucket: str, s3_client: Any, tmp_path: Path) -> None:
    # Prefix "" (the whole bucket): the key "/x" would become the absolute path /x.
    s3_client.put_object(Bucket=s3_bucket, Key="/x", Body=b"escaped")
    s3_client.put_object(Bucket=s3_bucket, Key="ok.png", Body=b"fine")
    with pytest.raises(InvalidInputError, match="'/x' starts with '/'"):
        _store(s3_server.endpoint).download(f"s3://{s3_bucket}/", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_a_single_object_named_dot_dot_is_refused(
    s3_server: Any, s3_bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="models/..", Body=b"escaped")
    with pytest.raises(InvalidInputError, match="has a '..' part"):
        _store(s3_server.endpoint).download(f"s3://{s3_bucket}/models/..", tmp_path / "dest")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_model_sha256_is_verified_after_download(
    s3_server: Any, s3_bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    body = os.urandom(4096)
    s3_client.put_object(Bucket=s3_bucket, Key="models/cnn.keras", Body=body)
    stores = Stores(storage=api.Storage(endpoint=s3_server.endpoint, path_style=True, region="us-east-1"))
    uri, good = f"s3://{s3_bucket}/models/cnn.keras", hashlib.sha256(body).hexdigest()
    assert (
        stores.download(uri, tmp_path / "a", sha256=good.upper(), sha256_field="spec.model.sha256").read_bytes() == body
    )
    wrong = hashlib.sha256(b"what the author released").hexdigest()
    with pytest.raises(InvalidInputError, match=f"spec.model.sha256: {uri} has sha256 {good}, expected {wrong}") as err:
        stores.download(uri, tmp_path / "b", sha256=wrong, sha256_field="spec.model.sha256")
    assert err.value.exit_code is ExitCode.INVALID_INPUT
