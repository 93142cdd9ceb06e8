#!/usr/bin/env bash
# macOS: sign dist/Shard.app (the shard-daemon sidecar as a nested, separately signed executable),
# make dist/Shard-<version>.dmg, sign it, notarize and staple it.
#
#   SHARD_CODESIGN_IDENTITY="Developer ID Application: Example Ltd (TEAMID)"   (unset: an unsigned, ad-hoc build)
#   SHARD_NOTARY_PROFILE=shard-notary   (a `xcrun notarytool store-credentials` profile; unset: no notarization)
#
# Layout (PyInstaller 6 BUNDLE): Shard.app/Contents/{Info.plist, MacOS/Shard, Frameworks/ (Python,
# Qt, llama.cpp's dylibs, shard-daemon), Resources/ (assets, icon.icns, web-scout)}; sys._MEIPASS is
# Contents/Frameworks, where the app looks for shard-daemon.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION="${1:?version}"
APP="dist/Shard.app"
DMG="dist/Shard-${VERSION}.dmg"
ID="${SHARD_CODESIGN_IDENTITY:--}"   # "-" is an ad-hoc signature: runs on this Mac, not Gatekeeper-approved
ENT="installer/macos/entitlements.plist"
[ -d "$APP" ] || { echo "no $APP: run bash installer/build.sh macos" >&2; exit 1; }

# Inside out: every Mach-O in Frameworks (PyInstaller signs them already when given the identity;
# doing it again here makes the order and the flags explicit), the sidecar, then the app itself.
sign() { codesign --force --timestamp --options runtime --sign "$ID" "$@"; }
find "$APP/Contents/Frameworks" -type f \( -name '*.dylib' -o -name '*.so' \) -print0 | xargs -0 -n 50 codesign --force --timestamp --options runtime --sign "$ID"
daemon="$(find "$APP/Contents" -type f -name shard-daemon | head -1)"
[ -n "$daemon" ] && sign "$daemon"
sign --entitlements "$ENT" "$APP/Contents/MacOS/Shard"
sign --entitlements "$ENT" "$APP"
codesign --verify --deep --strict --verbose=2 "$APP"

# The dmg: the app and a link to /Applications, compressed.
rm -rf build/dmg "$DMG" && mkdir -p build/dmg
cp -R "$APP" build/dmg/ && ln -s /Applications build/dmg/Applications
hdiutil create -volname "Shard" -srcfolder build/dmg -fs HFS+ -format UDZO -ov "$DMG"
[ "$ID" != "-" ] && codesign --force --timestamp --sign "$ID" "$DMG"

if [ -n "${SHARD_NOTARY_PROFILE:-}" ]; then
  xcrun notarytool submit "$DMG" --keychain-profile "$SHARD_NOTARY_PROFILE" --wait
  xcrun stapler staple "$DMG"
  spctl --assess --type open --context context:primary-signature --verbose=2 "$DMG"
fi
echo "==> $DMG: $(du -h "$DMG" | cut -f1)"
