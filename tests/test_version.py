"""The version is written once, as `shard.__version__` (app/shard/__init__.py): pyproject.toml reads
it (setuptools' dynamic version) and installer/build.sh reads the same line. Cargo and npm cannot
read Python, so their copies are checked equal here: bump them together."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

from shard import __version__

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_reads_the_version_from_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "shard.__version__"}


def test_the_sidecar_and_the_web_scout_carry_the_same_version() -> None:
    cargo = tomllib.loads((ROOT / "sidecar" / "Cargo.toml").read_text())
    lock = tomllib.loads((ROOT / "sidecar" / "Cargo.lock").read_text())
    package = json.loads((ROOT / "web-scout" / "package.json").read_text())
    package_lock = json.loads((ROOT / "web-scout" / "package-lock.json").read_text())
    agent = re.search(r"AGENT = 'shard-web-scout/([^']+)'", (ROOT / "web-scout" / "src" / "scout.ts").read_text())
    assert {
        "sidecar/Cargo.toml": cargo["package"]["version"],
        "sidecar/Cargo.lock": next(p["version"] for p in lock["package"] if p["name"] == "shard-daemon"),
        "web-scout/package.json": package["version"],
        "web-scout/package-lock.json": package_lock["version"],
        "web-scout/package-lock.json (root package)": package_lock["packages"][""]["version"],
        "web-scout/src/scout.ts AGENT": agent.group(1) if agent else None,
    } == dict.fromkeys(
        [
            "sidecar/Cargo.toml",
            "sidecar/Cargo.lock",
            "web-scout/package.json",
            "web-scout/package-lock.json",
            "web-scout/package-lock.json (root package)",
            "web-scout/src/scout.ts AGENT",
        ],
        __version__,
    )


def test_the_installer_build_reads_the_package_version() -> None:
    line = next(x for x in (ROOT / "installer" / "build.sh").read_text().splitlines() if x.startswith("VERSION="))
    out = subprocess.run(["bash", "-c", f"{line}\necho $VERSION"], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == __version__
