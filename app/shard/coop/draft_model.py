"""The Oracle's draft model: a small GGUF with the Oracle's tokenizer that scouts draft with (the
design's "a scout runs a tiny draft model"; no tab or small machine can run the Oracle's own).

Two models can exchange token ids when their tokenizers are the same: the *vocabulary fingerprint*
is a hash of the GGUF's tokenizer metadata (`tokenizer.ggml.model`, `.pre`, `.tokens`, `.merges`),
read straight from the file's header without loading the model. The draft model is named with its
sha256 and size, so a scout that fetches it (coop/model_transfer.py) can check what it got.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

GGUF_MAGIC = b"GGUF"
FINGERPRINT_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.merges")
MAX_KV = 1 << 16  # a GGUF header has tens of keys; a file claiming more is not one we read
MAX_STRING = 1 << 20
MAX_ARRAY = 1 << 24
AUTO_MAX_SHARE = 0.5  # chosen automatically: at most half the Oracle's size (else it cannot run ahead)
TAB_MAX_BYTES = 500 * 1024 * 1024  # a browser tab never downloads a model bigger than this

# GGUF value types: fixed sizes, 8 string, 9 array
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class DraftModelError(Exception):
    """The draft model is missing, unreadable, or does not share the Oracle's tokenizer."""


def _read(f: BinaryIO, n: int) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise DraftModelError("the GGUF header ends early")
    return b


def _u64(f: BinaryIO) -> int:
    return struct.unpack("<Q", _read(f, 8))[0]


def _u32(f: BinaryIO) -> int:
    return struct.unpack("<I", _read(f, 4))[0]


def _value(f: BinaryIO, vtype: int, keep: bool) -> bytes:
    """One value's raw bytes (returned only when `keep`, else skipped)."""
    if vtype in _FIXED:
        b = _read(f, _FIXED[vtype])
        return b if keep else b""
    if vtype == 8:
        n = _u64(f)
        if n > MAX_STRING:
            raise DraftModelError("a GGUF string is too long")
        b = _read(f, n)
        return struct.pack("<Q", n) + b if keep else b""
    if vtype == 9:
        itype, count = _u32(f), _u64(f)
        if count > MAX_ARRAY or itype == 9:
            raise DraftModelError("a GGUF array is too long or nested")
        if itype in _FIXED:
            b = _read(f, _FIXED[itype] * count)
            return struct.pack("<IQ", itype, count) + b if keep else b""
        parts = [struct.pack("<IQ", itype, count)] if keep else []
        for _ in range(count):
            v = _value(f, itype, keep)
            if keep:
                parts.append(v)
        return b"".join(parts)
    raise DraftModelError(f"unknown GGUF value type {vtype}")


def vocab_fingerprint(path: Path) -> str:
    """The tokenizer's fingerprint of a GGUF file (16 hex digits); '' when it has no tokenizer."""
    h = hashlib.sha256()
    found = 0
    try:
        with path.open("rb") as f:
            if _read(f, 4) != GGUF_MAGIC:
                raise DraftModelError(f"{path} is not a GGUF file")
            version = _u32(f)
            if version < 2:
                raise DraftModelError(f"{path}: GGUF version {version} is too old")
            _u64(f)  # tensor count
            n_kv = _u64(f)
            if n_kv > MAX_KV:
                raise DraftModelError(f"{path}: {n_kv} metadata keys")
            for _ in range(n_kv):
                klen = _u64(f)
                if klen > 4096:
                    raise DraftModelError(f"{path}: a metadata key is too long")
                key = _read(f, klen).decode("utf-8", "replace")
                vtype = _u32(f)
                keep = key in FINGERPRINT_KEYS
                raw = _value(f, vtype, keep)
                if keep:
                    found += 1
                    h.update(key.encode() + b"\x00" + struct.pack("<I", vtype) + raw)
    except OSError as exc:
        raise DraftModelError(f"cannot read {path}: {exc}") from None
    return h.hexdigest()[:16] if found else ""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class DraftModel:
    path: Path
    size: int
    sha256: str
    vocab: str

    @property
    def name(self) -> str:
        return self.path.name

    def describe(self) -> dict[str, Any]:
        """How the handshake and work name it (docs/protocol.md, "Draft models")."""
        return {"name": self.name, "size": self.size, "sha256": self.sha256, "vocab": self.vocab}

    @classmethod
    def open(cls, path: Path) -> DraftModel:
        if not path.is_file():
            raise DraftModelError(f"draft model not found: {path}")
        return cls(path.resolve(), path.stat().st_size, sha256_file(path), vocab_fingerprint(path))


def check_draft_model(oracle: Path, draft: Path) -> DraftModel:
    """The draft model for `oracle`, or DraftModelError saying why it cannot be one."""
    model = DraftModel.open(draft)
    want = vocab_fingerprint(oracle)
    if not model.vocab or model.vocab != want:
        raise DraftModelError(
            f"the draft model {draft} does not share the tokenizer of {oracle.name} "
            f"(vocabulary fingerprint {model.vocab or 'none'}, the Oracle's {want or 'none'}): "
            f"pick a small model of the same family"
        )
    return model


def find_draft_model(oracle: Path, folder: Path) -> DraftModel | None:
    """The smallest GGUF in `folder` with the Oracle's tokenizer and at most AUTO_MAX_SHARE of its size."""
    try:
        want, limit = vocab_fingerprint(oracle), oracle.stat().st_size * AUTO_MAX_SHARE
    except (OSError, DraftModelError):
        return None
    if not want or not folder.is_dir():
        return None
    candidates = sorted(
        (
            p
            for p in folder.glob("*.gguf")
            if p.is_file() and p.resolve() != oracle.resolve() and p.stat().st_size <= limit
        ),
        key=lambda p: p.stat().st_size,
    )
    for p in candidates:
        try:
            if vocab_fingerprint(p) == want:
                return DraftModel.open(p)
        except DraftModelError:
            continue
    return None
