"""The draft model, sent from an Oracle to a headless scout over libp2p, so that `shard scout
--bootstrap ADDR` needs no model of its own (docs/protocol.md, "Draft models").

It rides the `/shard/infer/1.0.0` stream: the scout's request line is `{"v": 1, "fetch": {"sha256",
"offset"}}`; the Oracle answers `{"type": "meta", "name", "size", "sha256"}`, then `chunk` lines
(`offset`, base64 `data`, CHUNK bytes each) and `end`, or an `error`. The Oracle sends only the
draft model it announced, nothing else from its disk. The scout appends to `<sha256>.part` in its
data dir (a broken transfer resumes from its size), and keeps the file only when its size and
sha256 are the announced ones and its tokenizer's fingerprint is the one the Oracle announced.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import re
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shard.coop.draft_model import DraftModel, DraftModelError, vocab_fingerprint
from shard.network.sidecar import SidecarError

if TYPE_CHECKING:
    from shard.network.sidecar import Sidecar

log = logging.getLogger("shard.transfer")

CHUNK = 128 * 1024  # base64 of it fits the stream's 256 KiB line limit
MAX_MODEL_BYTES = 8 << 30  # a scout refuses an announced draft model bigger than this
ATTEMPTS = 5  # a broken transfer is resumed this many times before giving up for now
_SHA = re.compile(r"^[0-9a-f]{64}$")


class TransferError(Exception):
    """The draft model could not be fetched, or what came is not what was announced."""


class Refused(TransferError):
    """The Oracle said no (another model, a bad offset): asking again would not help."""


def is_fetch(request: Any) -> bool:
    return isinstance(request, dict) and isinstance(request.get("fetch"), dict)


async def serve(model: DraftModel | None, request: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    """The Oracle's answer lines to one fetch request."""
    fetch = request["fetch"]
    offset = fetch.get("offset", 0)
    if model is None:
        yield {"type": "error", "message": "this node offers no draft model"}
        return
    if fetch.get("sha256") != model.sha256:
        yield {"type": "error", "message": "this node's draft model has another sha256"}
        return
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= model.size:
        yield {"type": "error", "message": f"'offset' must be an integer from 0 to {model.size}"}
        return
    yield {"type": "meta", **model.describe()}
    with model.path.open("rb") as f:
        f.seek(offset)
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield {"type": "chunk", "offset": offset, "data": base64.b64encode(chunk).decode()}
            offset += len(chunk)
    yield {"type": "end", "size": offset}


def check_description(d: Any) -> dict[str, Any]:
    """An Oracle's announced draft model (from its handshake), checked before anything is fetched."""
    if not isinstance(d, dict):
        raise TransferError("the Oracle announced no draft model")
    name, size, sha, vocab = d.get("name"), d.get("size"), d.get("sha256"), d.get("vocab")
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or len(name) > 256:
        raise TransferError("the announced draft model has no valid file name")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_MODEL_BYTES:
        raise TransferError(f"the announced draft model's size must be 1 to {MAX_MODEL_BYTES} bytes")
    if not isinstance(sha, str) or not _SHA.match(sha):
        raise TransferError("the announced draft model's sha256 is not 64 lowercase hex digits")
    if not isinstance(vocab, str) or not vocab:
        raise TransferError("the announced draft model has no vocabulary fingerprint")
    return {"name": name, "size": size, "sha256": sha, "vocab": vocab}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _accept(part: Path, final: Path, d: dict[str, Any]) -> Path:
    """Keep `part` as `final` if it is what was announced; else delete it and say why."""
    try:
        if part.stat().st_size != d["size"] or _sha256(part) != d["sha256"]:
            raise TransferError("the received file does not match the announced size and sha256")
        try:
            vocab = vocab_fingerprint(part)
        except DraftModelError as exc:
            raise TransferError(f"the received file is not a usable GGUF: {exc}") from None
        if vocab != d["vocab"]:
            raise TransferError(
                f"the received draft model's vocabulary fingerprint {vocab or 'none'} differs from the "
                f"announced {d['vocab']}: refused"
            )
    except TransferError:
        part.unlink(missing_ok=True)
        raise
    part.replace(final)
    return final


async def fetch(sidecar: Sidecar, oracle: str, description: Any, cache: Path) -> Path:
    """The announced draft model, from the cache or fetched from `oracle` (resuming a partial file)."""
    d = check_description(description)
    cache.mkdir(parents=True, exist_ok=True)
    final, part = cache / f"{d['sha256']}.gguf", cache / f"{d['sha256']}.part"
    if final.is_file():
        if final.stat().st_size == d["size"] and await asyncio.to_thread(_sha256, final) == d["sha256"]:
            return final
        final.unlink()
    last = "no attempt"
    for attempt in range(ATTEMPTS):
        offset = part.stat().st_size if part.is_file() else 0
        if offset > d["size"]:
            part.unlink()
            offset = 0
        if offset == d["size"]:
            break
        try:
            await _receive(sidecar, oracle, d, part, offset)
            break
        except Refused:
            raise
        except (SidecarError, TransferError) as exc:
            last = str(exc)
            log.info(
                "draft model transfer from %s broke at %d bytes (%s); resuming",
                oracle,
                part.stat().st_size if part.is_file() else 0,
                exc,
            )
            await asyncio.sleep(min(0.5 * 2**attempt, 5))
    else:
        raise TransferError(f"the draft model could not be fetched from {oracle}: {last}")
    return await asyncio.to_thread(_accept, part, final, d)


async def _receive(sidecar: Sidecar, oracle: str, d: dict[str, Any], part: Path, offset: int) -> None:
    request = {"v": 1, "fetch": {"sha256": d["sha256"], "offset": offset}}
    with part.open("ab") as f:
        async for line in sidecar.stream("/infer", {"peer_id": oracle, "request": request}):
            kind = line.get("type")
            if kind == "error":
                raise Refused(f"the Oracle refused: {str(line.get('message'))[:200]}")
            if kind == "meta":
                if line.get("sha256") != d["sha256"] or line.get("size") != d["size"]:
                    raise TransferError("the Oracle now offers another draft model")
            elif kind == "chunk":
                data = line.get("data")
                if line.get("offset") != offset or not isinstance(data, str):
                    raise TransferError("a chunk out of order")
                try:
                    raw = base64.b64decode(data, validate=True)
                except (binascii.Error, ValueError):
                    raise TransferError("a chunk that is not base64") from None
                if not 0 < len(raw) <= CHUNK or offset + len(raw) > d["size"]:
                    raise TransferError("a chunk of the wrong size")
                f.write(raw)
                offset += len(raw)
            elif kind == "end":
                if offset != d["size"]:
                    raise TransferError(f"the transfer ended at {offset} of {d['size']} bytes")
                return
    raise TransferError(f"the stream ended at {offset} of {d['size']} bytes")
