"""API keys kept in the OS keyring (Keychain, Credential Manager, Secret Service); where no keyring
exists (a headless Linux box), in a file only the user can read, with a visible warning."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import keyring
from keyring.errors import NoKeyringError

log = logging.getLogger("shard.secrets")

SERVICE = "shard"
API_KEYS = "api_keys"


class SecretStore:
    def __init__(self, fallback_dir: Path) -> None:
        self.fallback_file = fallback_dir / "secrets.json"
        self.backend = "keyring"
        self.warning = ""
        self._cache: dict[str, str | None] = {}  # the keyring can be slow; the API asks per request
        try:
            keyring.get_password(SERVICE, "probe")
            if "fail" in type(keyring.get_keyring()).__name__.lower():
                raise NoKeyringError("no keyring backend")
        except Exception as exc:  # NoKeyringError, or a backend whose service is not running (no D-Bus)
            self.backend = "file"
            self.warning = (
                f"no OS keyring is available ({exc}); API keys are kept in {self.fallback_file}, readable only by you"
            )

    def _read_file(self) -> dict[str, str]:
        try:
            return json.loads(self.fallback_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def get(self, name: str) -> str | None:
        if name not in self._cache:
            self._cache[name] = (
                keyring.get_password(SERVICE, name) if self.backend == "keyring" else self._read_file().get(name)
            )
        return self._cache[name]

    def set(self, name: str, value: str) -> None:
        self._cache[name] = value
        if self.backend == "keyring":
            keyring.set_password(SERVICE, name, value)
            return
        data = self._read_file()
        data[name] = value
        self.fallback_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.fallback_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, self.fallback_file)

    def api_keys(self) -> list[str]:
        raw = self.get(API_KEYS)
        try:
            keys = json.loads(raw) if raw else []
        except ValueError:
            return []
        return [k for k in keys if isinstance(k, str) and k]

    def set_api_keys(self, keys: list[str]) -> None:
        self.set(API_KEYS, json.dumps([k for k in keys if k]))
