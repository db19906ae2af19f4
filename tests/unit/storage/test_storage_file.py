"""file:// storage: reads in place, copies on upload with the sha256, errors that name the URI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edgequant.api import v1alpha1 as api
from edgequant.api.exitcodes import ExitCode
from edgequant.storage import ObjectNotFoundError, Stores
from edgequant.storage.local import FileStore


def test_download_returns_the_file_itself(tmp_path: Path) -> None:
    model = tmp_path / "m.keras"
    model.write_bytes(b"weights")
    assert FileStore().download(f"file://{model}", tmp_path / "dest") == model


def test_relative_paths_resolve_against_base_dir(tmp_path: Path) -> None:
    (tmp_path / "data" / "cal").mkdir(parents=True)
    store = FileStore(base_dir=tmp_path)
    assert store.download("file://data/cal/", tmp_path / "dest") == tmp_path / "data" / "cal"


def test_missing_file_and_folder_name_the_uri(tmp_path: Path) -> None:
    store = FileStore()
    with pytest.raises(ObjectNotFoundError, match="absent.keras: no such file"):
        store.download(f"file://{tmp_path}/absent.keras", tmp_path)
    with pytest.raises(ObjectNotFoundError, match="no such folder"):
        store.download(f"file://{tmp_path}/absent/", tmp_path)
    (tmp_path / "saved").mkdir()
    with pytest.raises(ObjectNotFoundError, match="it is a folder: end the URI with '/'"):
        store.download(f"file://{tmp_path}/saved", tmp_path)
    assert ObjectNotFoundError.exit_code is ExitCode.INVALID_INPUT


def test_upload_copies_and_reports_sha256(tmp_path: Path) -> None:
    source = tmp_path / "a.tflite"
    source.write_bytes(b"\x00tflite" * 100)
    uploaded = Stores(storage=api.Storage()).upload(source, f"file://{tmp_path}/out/deep/a.tflite")
    target = tmp_path / "out" / "deep" / "a.tflite"
    assert target.read_bytes() == source.read_bytes()
    assert uploaded.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert uploaded.size_bytes == 700


@pytest.mark.parametrize("relative", ["../secret.keras", "data/../../secret.keras", "link/../../secret.keras"])
def test_relative_paths_cannot_leave_the_job_folder(tmp_path: Path, relative: str) -> None:
    from edgequant.util.errors import InvalidInputError

    job_dir, outside = tmp_path / "job", tmp_path / "outside"
    (job_dir / "data").mkdir(parents=True)
    outside.mkdir()
    (tmp_path / "secret.keras").write_bytes(b"x")
    (outside / "secret.keras").write_bytes(b"x")
    (job_dir / "link").symlink_to(outside, target_is_directory=True)
    store = FileStore(base_dir=job_dir)
    with pytest.raises(InvalidInputError, match=f"file://{relative}: the relative path leads outside {job_dir}"):
        store.download(f"file://{relative}", tmp_path / "dest")
    with pytest.raises(InvalidInputError, match="leads outside"):
        store.upload(tmp_path / "secret.keras", f"file://{relative}")
    assert (
        store.download(f"file://{outside}/secret.keras", tmp_path / "dest") == outside / "secret.keras"
    )  # absolute: explicit
    # A link the author placed in the job folder is followed, as explicit as an absolute path.
    assert store.download("file://link/secret.keras", tmp_path / "dest") == job_dir / "link" / "secret.keras"


def test_model_sha256_is_verified_for_file_uris(tmp_path: Path) -> None:
    from edgequant.util.errors import InvalidInputError

    model = tmp_path / "m.keras"
    model.write_bytes(b"weights")
    good, wrong = hashlib.sha256(b"weights").hexdigest(), "0" * 64
    stores = Stores(storage=api.Storage())
    assert stores.download(f"file://{model}", tmp_path / "d", sha256=good, sha256_field="spec.model.sha256") == model
    with pytest.raises(
        InvalidInputError, match=f"spec.model.sha256: file://{model} has sha256 {good}, expected {wrong}"
    ):
        stores.download(f"file://{model}", tmp_path / "d", sha256=wrong, sha256_field="spec.model.sha256")
    (tmp_path / "saved").mkdir()
    with pytest.raises(InvalidInputError, match="is a folder: a sha256 checks one file"):
        stores.download(f"file://{tmp_path}/saved/", tmp_path / "d", sha256=good, sha256_field="spec.model.sha256")
