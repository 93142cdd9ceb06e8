#!/usr/bin/env bash
# Build the Shard node's bundle and installers into dist/.
#
#   bash installer/build.sh linux     dist/shard/ (PyInstaller one-folder), dist/shard_<v>_<arch>.deb,
#                                     dist/shard-<v>-linux-<arch>.tar.gz, build/appimage/Shard.AppDir
#                                     (and dist/Shard-<v>-<arch>.AppImage when appimagetool is on PATH)
#   bash installer/build.sh windows   on Windows (Git Bash): dist/shard/ and dist/Shard-<v>-setup.exe (NSIS)
#   bash installer/build.sh macos     on macOS: dist/Shard.app, signed when SHARD_CODESIGN_IDENTITY is set,
#                                     and dist/Shard-<v>.dmg (notarized when SHARD_NOTARY_PROFILE is set)
#   bash installer/build.sh nsis-standin   compile the NSIS script here (Linux, Debian's nsis) against a
#                                     stand-in payload: dist/Shard-<v>-setup-standin.exe, proves the script
#
# Environment: PYTHON (default .venv/bin/python, which needs the `ui` and `installer` extras),
# SHARD_DAEMON_BIN (else cargo builds sidecar/), SHARD_WEB_SCOUT (default web-scout/dist),
# SHARD_SKIP_BUNDLE=1 (package the dist/shard already there), SHARD_BUNDLE_NO_SIDECAR=1,
# SHARD_DEB_COMPRESSION (xz, the default, or gzip: 12 s instead of minutes, a 40% larger .deb).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
target="${1:-}"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' app/shard/__init__.py | head -1)"  # the one place it is written
log() { echo "==> $*"; }

case "$(uname -s)" in
  MINGW*|MSYS*|CYGWIN*) PY="${PYTHON:-.venv/Scripts/python.exe}"; EXE=".exe" ;;
  *) PY="${PYTHON:-.venv/bin/python}"; EXE="" ;;
esac

ensure_pyinstaller() {
  "$PY" -c "import PyInstaller" 2>/dev/null || { log "installing PyInstaller (the installer extra)"; "$PY" -m pip install --quiet "pyinstaller>=6.10"; }
}

ensure_sidecar() {
  [ -n "${SHARD_DAEMON_BIN:-}" ] && return 0
  [ "${SHARD_BUNDLE_NO_SIDECAR:-0}" = 1 ] && return 0
  if command -v cargo >/dev/null 2>&1; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shard/cargo-target}"
    log "building shard-daemon (release; up to date in seconds when built before)"
    cargo build --release --quiet --manifest-path sidecar/Cargo.toml
    export SHARD_DAEMON_BIN="$CARGO_TARGET_DIR/release/shard-daemon$EXE"
  fi
}

bundle() {
  if [ "${SHARD_SKIP_BUNDLE:-0}" = 1 ] && [ -x "dist/shard/Shard$EXE" ]; then
    log "reusing dist/shard (SHARD_SKIP_BUNDLE=1)"
    return 0
  fi
  ensure_pyinstaller
  ensure_sidecar
  [ -f "${SHARD_WEB_SCOUT:-web-scout/dist}/index.html" ] || log "no built web scout at ${SHARD_WEB_SCOUT:-web-scout/dist} (cd web-scout && npm ci && npm run build): bundling without it"
  log "PyInstaller: dist/shard (a few minutes)"
  "$PY" -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build/pyinstaller installer/shard.spec
  local cli="dist/shard/Shard$EXE"
  [ -n "$EXE" ] && cli="dist/shard/shard-cli.exe"  # Shard.exe is windowed: no console output
  log "bundle: $(du -sh dist/shard | cut -f1); $("$cli" --version)"
}

linux() {
  bundle
  local arch debarch stage deb tarball appdir
  arch="$(uname -m)"
  debarch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"

  # .deb: /opt/shard, /usr/bin/shard, a desktop entry and icon; per-user autostart is the app's setting.
  stage="build/deb/shard_${VERSION}_${debarch}"
  rm -rf "$stage" && mkdir -p "$stage/DEBIAN" "$stage/opt" "$stage/usr/bin" "$stage/usr/share/applications" \
    "$stage/usr/share/icons/hicolor/512x512/apps" "$stage/usr/share/doc/shard/examples"
  cp -a dist/shard "$stage/opt/shard"
  ln -s /opt/shard/Shard "$stage/usr/bin/shard"
  install -m 644 installer/linux/shard.desktop "$stage/usr/share/applications/shard.desktop"
  install -m 644 assets/icon.png "$stage/usr/share/icons/hicolor/512x512/apps/shard.png"
  install -m 644 installer/linux/shard-autostart.desktop.example "$stage/usr/share/doc/shard/examples/"
  printf 'Shard node %s\nLicense: Apache-2.0\nSource: the Shard repository; bundled third-party software keeps its own licenses (Qt/PySide6: LGPLv3; llama.cpp: MIT; Python: PSF).\n' "$VERSION" \
    > "$stage/usr/share/doc/shard/copyright"
  install -m 755 installer/linux/postinst installer/linux/postrm "$stage/DEBIAN/"
  # What the bundle takes from the system (PyInstaller leaves out glibc, libGL/EGL and the X/Wayland client
  # libraries that belong to the desktop): Qt's xcb platform plugin and the tray need these.
  cat > "$stage/DEBIAN/control" <<EOF
Package: shard
Version: $VERSION
Architecture: $debarch
Maintainer: Shard developers <shard@localhost>
Section: net
Priority: optional
Installed-Size: $(du -sk "$stage/opt" | cut -f1)
Depends: libc6 (>= 2.31), libgl1, libegl1, libfontconfig1, libfreetype6, libxkbcommon0, libxkbcommon-x11-0, libdbus-1-3, libglib2.0-0, libx11-xcb1, libxcb1, libxcb-cursor0, libxcb-icccm4, libxcb-image0, libxcb-keysyms1, libxcb-randr0, libxcb-render-util0, libxcb-shape0, libxcb-xinerama0, libxcb-xkb1
Recommends: gnome-keyring | kwalletmanager
Homepage: https://github.com/shard-network/shard
Description: Shard node: local AI, shared peer to peer
 A tray app that runs a local llama.cpp model behind an OpenAI-compatible
 endpoint on http://127.0.0.1:8000/v1 and joins a libp2p network where browser
 scouts draft tokens and contributors are served first. "shard serve" runs the
 same node headless.
EOF
  deb="dist/shard_${VERSION}_${debarch}.deb"
  # xz: the smallest .deb (the release default; minutes on 2 busy cores); SHARD_DEB_COMPRESSION=gzip for quick test builds
  dpkg-deb --root-owner-group "-Z${SHARD_DEB_COMPRESSION:-xz}" --build "$stage" "$deb" >/dev/null
  log "$deb: $(du -h "$deb" | cut -f1)"

  # Portable tarball: unpack anywhere and run shard-<v>/Shard.
  tarball="dist/shard-${VERSION}-linux-${arch}.tar.gz"
  rm -rf "build/tar/shard-$VERSION" && mkdir -p build/tar && cp -a dist/shard "build/tar/shard-$VERSION"
  cp installer/linux/shard.desktop "build/tar/shard-$VERSION/shard.desktop"
  tar -C build/tar -czf "$tarball" "shard-$VERSION"
  log "$tarball: $(du -h "$tarball" | cut -f1)"

  # AppImage: the AppDir is made here; appimagetool (downloaded from github.com/AppImage/appimagetool)
  # turns it into one file where it is available.
  appdir="build/appimage/Shard.AppDir"
  rm -rf "$appdir" && mkdir -p "$appdir/usr/lib" "$appdir/usr/share/icons/hicolor/512x512/apps"
  cp -a dist/shard "$appdir/usr/lib/shard"
  install -m 755 installer/appimage/AppRun "$appdir/AppRun"
  sed 's|^Exec=.*|Exec=Shard|' installer/linux/shard.desktop > "$appdir/shard.desktop"
  cp assets/icon.png "$appdir/shard.png" && cp assets/icon.png "$appdir/usr/share/icons/hicolor/512x512/apps/shard.png"
  ln -sf shard.png "$appdir/.DirIcon"
  if command -v appimagetool >/dev/null 2>&1; then
    ARCH="$arch" appimagetool --no-appstream "$appdir" "dist/Shard-${VERSION}-${arch}.AppImage"
    log "dist/Shard-${VERSION}-${arch}.AppImage"
  else
    log "AppDir at $appdir (appimagetool not found: see installer/README.md, AppImage)"
  fi
}

nsis() {  # $1: payload folder, $2: output file
  command -v makensis >/dev/null 2>&1 || { echo "makensis not found (Debian/Ubuntu: apt-get install nsis; Windows: choco install nsis)" >&2; exit 1; }
  makensis -V2 -INPUTCHARSET UTF8 "-DVERSION=$VERSION" "-DPAYLOAD=$1" "-DOUTFILE=$2" "-DROOT=$ROOT" installer/windows/shard.nsi
  log "$2: $(du -h "$2" | cut -f1)"
}

nsis_standin() {
  # Files in the bundle's layout, with stand-in executables: proves the NSIS script compiles and
  # packs what a real dist/shard holds. The real installer is built on Windows from the real bundle.
  local payload="build/nsis-standin/shard"
  rm -rf "$payload" && mkdir -p "$payload/_internal/assets"
  for f in Shard.exe shard-cli.exe _internal/shard-daemon.exe _internal/python311.dll; do
    printf 'MZ stand-in for %s\n' "$f" > "$payload/$f"
  done
  cp -r assets/. "$payload/_internal/assets/"
  mkdir -p dist
  nsis "$ROOT/$payload" "$ROOT/dist/Shard-${VERSION}-setup-standin.exe"
}

windows() {
  bundle
  # Authenticode: the executables first (SmartScreen and antivirus look at each), then the installer.
  # SHARD_SIGNTOOL_ARGS, e.g. '/fd sha256 /tr http://timestamp.digicert.com /td sha256 /f cert.pfx /p PASS'
  # shellcheck disable=SC2086
  [ -n "${SHARD_SIGNTOOL_ARGS:-}" ] && signtool sign $SHARD_SIGNTOOL_ARGS dist/shard/Shard.exe dist/shard/shard-cli.exe dist/shard/_internal/shard-daemon.exe
  nsis "$(cygpath -w "$ROOT/dist/shard" 2>/dev/null || echo "$ROOT/dist/shard")" "$ROOT/dist/Shard-${VERSION}-setup.exe"
  # shellcheck disable=SC2086
  [ -n "${SHARD_SIGNTOOL_ARGS:-}" ] && signtool sign $SHARD_SIGNTOOL_ARGS "dist/Shard-${VERSION}-setup.exe"
  return 0
}

macos() {
  bundle
  bash installer/macos/build-dmg.sh "$VERSION"
}

case "$target" in
  linux) linux ;;
  windows) windows ;;
  macos) macos ;;
  nsis-standin) nsis_standin ;;
  bundle) bundle ;;
  *) echo "usage: bash installer/build.sh linux|windows|macos|nsis-standin|bundle" >&2; exit 2 ;;
esac
