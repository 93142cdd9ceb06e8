"""Checks on a model file that need no llama.cpp: the node runs them before it starts a verifier
(and so never loads the model runtime itself)."""

from __future__ import annotations

from pathlib import Path

GGUF_MAGIC = b"GGUF"


class ModelLoadError(Exception):
    """The file is missing, is not a GGUF model, or llama.cpp refused it."""


def check_gguf_file(path: Path) -> None:
    """Cheap checks before handing a file to llama.cpp, so a wrong path gets a clear message."""
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"model path is not a file: {path}")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc}") from None
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF model file (it starts with {magic!r}, not b'GGUF')")
