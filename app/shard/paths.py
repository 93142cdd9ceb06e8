"""Where Shard keeps its files: one place, so the CLI, the UI and the tests agree."""

from __future__ import annotations

from pathlib import Path

import platformdirs

APP_NAME = "shard"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_config_file() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def log_dir(data_dir: Path) -> Path:
    return data_dir / "logs"


def models_dir(data_dir: Path) -> Path:
    return data_dir / "models"
