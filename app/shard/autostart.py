"""Start at login, the way each OS expects: an XDG autostart entry (Linux), a LaunchAgent (macOS),
the HKCU Run key (Windows).

The entry starts the same node as the one running now: the same data dir and settings file, and the
port when it was chosen on the command line or in the environment (which a login session does not
have); an installed bundle is started by its own path (an AppImage by the AppImage, not by the
temporary mount it runs from)."""

from __future__ import annotations

import os
import plistlib
import sys
from collections.abc import Sequence
from pathlib import Path

NAME = "Shard"
LABEL = "net.shard.node"


def node_args(data_dir: Path, config_file: Path, port: int | None = None) -> list[str]:
    """The flags that make the login-started app the same node: absolute paths, the port if pinned."""
    args = [
        "--data-dir",
        str(Path(data_dir).expanduser().resolve()),
        "--config",
        str(Path(config_file).expanduser().resolve()),
    ]
    return args + (["--port", str(port)] if port is not None else [])


def launch_command(args: Sequence[str] = ()) -> list[str]:
    if getattr(sys, "frozen", False):
        appimage = os.environ.get("APPIMAGE")  # set by the AppImage runtime: the file the user installed
        return [appimage if appimage else sys.executable, *args]
    return [sys.executable, "-m", "shard", *args]


def desktop_exec(cmd: Sequence[str]) -> str:
    """An Exec= value by the Desktop Entry spec: double quotes (single quotes are not part of it),
    with ", `, $ and \\ escaped, and % doubled (it introduces field codes)."""
    out = []
    for arg in cmd:
        arg = arg.replace("%", "%%")
        if arg and not any(c in arg for c in " \t\n\"'\\><~|&;$*?#()`"):
            out.append(arg)
        else:
            escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg)
            out.append(f'"{escaped}"')
    # The spec's string escapes apply before its quoting: every backslash is written twice.
    return " ".join(out).replace("\\", "\\\\")


def _linux_entry() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "autostart" / "shard.desktop"


def _mac_agent() -> Path:
    return Path.home() / "Library" / "LaunchAgents" / f"{LABEL}.plist"


def is_enabled() -> bool:
    if sys.platform == "win32":
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, r"Software\Microsoft\Windows\CurrentVersion\Run") as key:
                winreg.QueryValueEx(key, NAME)
                return True
        except OSError:
            return False
    return (_mac_agent() if sys.platform == "darwin" else _linux_entry()).exists()


def set_enabled(enabled: bool, args: Sequence[str] = ()) -> None:
    """Turn start at login on (starting `shard` with `args`, see node_args) or off."""
    cmd = launch_command(args)
    if sys.platform == "win32":
        import winreg

        with winreg.OpenKey(
            winreg.HKEY_CURRENT_USER, r"Software\Microsoft\Windows\CurrentVersion\Run", 0, winreg.KEY_SET_VALUE
        ) as key:
            if enabled:
                winreg.SetValueEx(key, NAME, 0, winreg.REG_SZ, " ".join(f'"{c}"' for c in cmd))
            else:
                try:
                    winreg.DeleteValue(key, NAME)
                except FileNotFoundError:
                    pass
        return
    path = _mac_agent() if sys.platform == "darwin" else _linux_entry()
    if not enabled:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if sys.platform == "darwin":
        path.write_bytes(plistlib.dumps({"Label": LABEL, "ProgramArguments": cmd, "RunAtLoad": True}))
    else:
        path.write_text(
            "[Desktop Entry]\nType=Application\nName=Shard\nComment=Shard node: local AI, shared\n"
            f"Exec={desktop_exec(cmd)}\nIcon=shard\nX-GNOME-Autostart-enabled=true\nTerminal=false\n",
            encoding="utf-8",
        )
