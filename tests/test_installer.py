"""The Linux bundle and installers (installer/): build them with `bash installer/build.sh linux`
(or reuse a bundle newer than every source it is made of), then run the bundled app for real:
`dist/shard/Shard serve` with the tiny model and the bundled sidecar on loopback, the tray app under
Qt's offscreen platform, and check the .deb, the tarball and the NSIS script (compiled against a
stand-in payload with Debian's makensis).

These tests run only when SHARD_INSTALLER_TESTS=1: the build needs PyInstaller (the `installer`
extra; build.sh installs it), dpkg-deb and about 4 minutes of 2 cores on top of the main suite.

    SHARD_INSTALLER_TESTS=1 .venv/bin/python -m pytest tests/test_installer.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from harness import start_node, stop
from harness.processes import kill_all
from shard import __version__

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "dist"
BUNDLE = DIST / "shard"
EXE = BUNDLE / "Shard"
VERSION = __version__

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("SHARD_INSTALLER_TESTS") != "1",
        reason="builds the bundle (minutes): run with SHARD_INSTALLER_TESTS=1",
    ),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux bundle and .deb"),
    pytest.mark.timeout(1200),
]


def _newest_source() -> float:
    files = [
        *ROOT.glob("app/shard/**/*.py"),
        *ROOT.glob("installer/**/*"),
        ROOT / "pyproject.toml",
        *ROOT.glob("assets/**/*"),
    ]
    return max(f.stat().st_mtime for f in files if f.is_file())


@pytest.fixture(scope="session")
def built() -> Path:
    """dist/ with the bundle, .deb and tarball: reused when newer than the sources and the sidecar binary
    (SHARD_INSTALLER_REBUILD=1 forces a build)."""
    deb = DIST / f"shard_{VERSION}_amd64.deb"
    fresh = EXE.exists() and deb.exists() and EXE.stat().st_mtime > _newest_source()
    daemon = (
        Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "shard" / "cargo-target"))
        / "release"
        / "shard-daemon"
    )
    if fresh and daemon.exists():
        fresh = EXE.stat().st_mtime > daemon.stat().st_mtime
    if not fresh or os.environ.get("SHARD_INSTALLER_REBUILD") == "1":
        env = {
            **os.environ,
            "SHARD_DEB_COMPRESSION": os.environ.get("SHARD_DEB_COMPRESSION", "gzip"),
        }  # xz takes minutes
        result = subprocess.run(
            ["bash", "installer/build.sh", "linux"], cwd=ROOT, capture_output=True, text=True, timeout=1500, env=env
        )
        assert result.returncode == 0, f"build.sh linux failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert EXE.is_file()
    return DIST


def _run(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, **kw)


def test_bundle_layout_and_version(built: Path) -> None:
    internal = BUNDLE / "_internal"
    assert os.access(internal / "shard-daemon", os.X_OK), "the sidecar sits in sys._MEIPASS"
    assert (internal / "llama_cpp" / "lib" / "libllama.so").exists()
    assert (internal / "assets" / "icon.png").is_file() and (internal / "assets" / "tray" / "ready-light.png").is_file()
    assert list(internal.glob("keyring-*.dist-info")), "keyring finds its backends through its entry points"
    # PySide6 Essentials trimmed: no QML/Quick, no GTK theme stack
    names = {p.name for p in internal.rglob("*")}
    assert not [n for n in names if n.startswith(("libQt6Qml", "libQt6Quick", "libgtk-3", "libQt6Pdf"))]
    assert (internal / "web-scout" / "index.html").is_file() == (ROOT / "web-scout" / "dist" / "index.html").is_file()
    result = _run(str(EXE), "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"shard {VERSION}"
    result = _run(str(EXE), "verifier", "--help")  # the node starts its verifier from this same executable
    assert result.returncode == 0 and "--model" in result.stdout


def _stop(proc: subprocess.Popen[bytes], family: list[psutil.Process]) -> None:
    stop(proc, 30)
    gone, alive = psutil.wait_procs(family, timeout=10)
    kill_all(alive)
    assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"


def _children_until(proc: subprocess.Popen[bytes], names: set[str], timeout: float = 30) -> list[psutil.Process]:
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    kids: list[psutil.Process] = []
    while time.monotonic() < deadline:
        kids = parent.children(recursive=True)
        if names <= {k.name() for k in kids}:
            break
        time.sleep(0.2)
    return kids


@pytest.fixture
def served(
    built: Path, tiny_model: Path, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes], list[psutil.Process], Path]]:
    node = start_node(
        tiny_model,
        tmp_path,
        *("--parallel", "2", "--ctx-size", "512"),
        command=(str(EXE), "serve"),
        sidecar=True,
        env={"SHARD_DAEMON": ""},  # the bundle's own sidecar, not the one this checkout built
        data_dir=tmp_path / "data",
        cwd=tmp_path,
    )
    family: list[psutil.Process] = [psutil.Process(node.proc.pid)]
    try:
        family += _children_until(node.proc, {"shard-daemon", "Shard"})
        yield node.url, node.proc, family, node.log_path
    finally:
        _stop(node.proc, family)


def test_bundled_serve_health_chat_sidecar_and_clean_stop(served) -> None:
    url, proc, family, log_path = served
    # the children are the bundle's own: the sidecar from _internal/, the verifier as `Shard verifier`
    by_name = {p.name(): p for p in family[1:]}
    assert Path(by_name["shard-daemon"].exe()).resolve() == (BUNDLE / "_internal" / "shard-daemon").resolve()
    verifier = by_name["Shard"].cmdline()
    assert Path(verifier[0]).resolve() == EXE.resolve() and verifier[1] == "verifier"

    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, "temperature": 0}
    resp = requests.post(url + "/v1/chat/completions", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] > 0

    deadline = time.monotonic() + 30
    topo: dict = {}
    while time.monotonic() < deadline:
        topo = requests.get(url + "/v1/system/topology", timeout=5).json()
        if topo.get("peer_id"):
            break
        time.sleep(0.3)
    assert str(topo.get("peer_id", "")).startswith("12D3KooW"), topo

    _stop(proc, family)
    assert proc.returncode == 0, log_path.read_text(errors="replace")[-3000:]


def test_bundled_tray_app_offscreen(built: Path, tiny_model: Path, tmp_path: Path) -> None:
    """`Shard` with no command: PySide6 and qasync from the bundle, the dashboard (no tray offscreen)."""
    node = start_node(
        tiny_model,
        tmp_path,
        *("--parallel", "1", "--ctx-size", "256"),
        command=(str(EXE),),
        env={"QT_QPA_PLATFORM": "offscreen"},
        data_dir=tmp_path / "data",
        cwd=tmp_path,
    )
    family: list[psutil.Process] = [psutil.Process(node.proc.pid)]
    try:
        family += _children_until(node.proc, {"Shard"})
    finally:
        _stop(node.proc, family)
    log_path = node.log_path
    assert "Traceback" not in log_path.read_text(errors="replace")


def test_deb_package(built: Path) -> None:
    deb = built / f"shard_{VERSION}_amd64.deb"
    listing = _run("dpkg-deb", "-c", str(deb)).stdout
    for path in (
        "./opt/shard/Shard",
        "./opt/shard/_internal/shard-daemon",
        "./usr/share/applications/shard.desktop",
        "./usr/share/icons/hicolor/512x512/apps/shard.png",
        "./usr/share/doc/shard/examples/shard-autostart.desktop.example",
    ):
        assert f" {path}" in listing, path
    assert "./usr/bin/shard -> /opt/shard/Shard" in listing
    assert "/etc/xdg/autostart" not in listing, "start at login is the user's choice, made in the app"
    info = _run("dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture", "Depends").stdout
    assert "Package: shard" in info and f"Version: {VERSION}" in info and "libxcb-cursor0" in info

    # installed into a scratch root, the symlinked command runs
    root = Path(_run("mktemp", "-d").stdout.strip())
    try:
        assert _run("dpkg-deb", "-x", str(deb), str(root)).returncode == 0
        result = _run(str(root / "opt" / "shard" / "Shard"), "--version")
        assert result.stdout.strip() == f"shard {VERSION}"
        if shutil.which("desktop-file-validate"):
            check = _run("desktop-file-validate", str(root / "usr/share/applications/shard.desktop"))
            assert check.returncode == 0, check.stdout + check.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_portable_tarball(built: Path, tmp_path: Path) -> None:
    tarball = next(built.glob(f"shard-{VERSION}-linux-*.tar.gz"))
    with tarfile.open(tarball) as tf:
        tf.extractall(tmp_path, filter="tar")
    exe = tmp_path / f"shard-{VERSION}" / "Shard"
    assert _run(str(exe), "--version").stdout.strip() == f"shard {VERSION}"
    assert (tmp_path / f"shard-{VERSION}" / "_internal" / "llama_cpp" / "lib" / "libllama.so").exists()


def test_appdir_layout(built: Path) -> None:
    appdir = ROOT / "build" / "appimage" / "Shard.AppDir"
    assert (
        os.access(appdir / "AppRun", os.X_OK)
        and (appdir / "shard.desktop").is_file()
        and (appdir / "shard.png").is_file()
    )
    assert _run(str(appdir / "AppRun"), "--version").stdout.strip() == f"shard {VERSION}"


@pytest.mark.skipif(shutil.which("makensis") is None, reason="makensis (apt-get install nsis) is not installed")
def test_nsis_script_compiles_against_standin() -> None:
    result = _run("bash", "installer/build.sh", "nsis-standin", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    setup = DIST / f"Shard-{VERSION}-setup-standin.exe"
    assert setup.read_bytes()[:2] == b"MZ" and setup.stat().st_size > 50_000
