"""Which PyTorch file torch-qat was given, from the archive's member names (pure), and what it says about each."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from edgequant.backends.pytorch.source import ArchiveKind, archive_kind, file_kind, refusal

PT2 = ["m/archive_format", "m/archive_version", "m/byteorder", "m/data/weights/weight_0", "m/models/model.json"]
TORCHSCRIPT = [
    "ts/code/__torch__/torch/nn/modules/conv.py",
    "ts/constants.pkl",
    "ts/data.pkl",
    "ts/data/0",
    "ts/version",
]
PICKLE = ["sd/.format_version", "sd/byteorder", "sd/data.pkl", "sd/data/0", "sd/version"]


@pytest.mark.parametrize(
    ("names", "kind"),
    [
        (PT2, ArchiveKind.EXPORTED_PROGRAM),
        (TORCHSCRIPT, ArchiveKind.TORCHSCRIPT),
        (PICKLE, ArchiveKind.PICKLE),
        (["a/readme.txt"], ArchiveKind.OTHER_ZIP),
    ],
)
def test_archive_kind(names: list[str], kind: ArchiveKind) -> None:
    assert archive_kind(names) is kind


def test_file_kind_reads_the_zip(tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        for name in TORCHSCRIPT:
            archive.writestr(name, b"")
    assert file_kind(path) is ArchiveKind.TORCHSCRIPT
    text = tmp_path / "notes.pt2"
    text.write_text("not a zip")
    assert file_kind(text) is ArchiveKind.NOT_ZIP


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        (ArchiveKind.TORCHSCRIPT, "is TorchScript, which torch.export cannot re-trace"),
        (ArchiveKind.PICKLE, "cannot be rebuilt without the model's Python code"),
        (ArchiveKind.NOT_ZIP, "is not a PyTorch archive"),
        (ArchiveKind.OTHER_ZIP, "is a zip archive but not a torch.export program"),
    ],
)
def test_refusals_say_why_and_how_to_export(kind: ArchiveKind, words: str) -> None:
    message = refusal(kind, "model.pt")
    assert message.startswith("model.pt ") and words in message
    assert (
        "torch.export.save(torch.export.export(model.eval(), (example_batch,), dynamic_shapes=({0: torch.export.Dim('batch')},)), 'model.pt2')"
        in message
    )
