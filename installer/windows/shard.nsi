; Shard node: a per-user Windows installer (no administrator rights, no UAC prompt).
;
;   makensis -DVERSION=0.1.0 -DPAYLOAD=C:\src\shard\dist\shard -DOUTFILE=C:\src\shard\dist\Shard-0.1.0-setup.exe ^
;            -DROOT=C:\src\shard installer\windows\shard.nsi
;
; PAYLOAD is PyInstaller's one-folder bundle (Shard.exe, shard-cli.exe, _internal\ with shard-daemon.exe).
; It installs into %LOCALAPPDATA%\Programs\Shard, adds a Start-menu entry, optionally a desktop
; shortcut and start at login (the HKCU Run key, the same value the app's own setting writes), and
; an uninstaller listed in Settings > Apps. The user's data (%LOCALAPPDATA%\shard: models, ledger,
; identity) is kept on uninstall.

Unicode true
!include "MUI2.nsh"
!include "FileFunc.nsh"

!ifndef VERSION
  !define VERSION "0.0.0"
!endif
!ifndef PAYLOAD
  !error "define PAYLOAD: the folder of the PyInstaller bundle (dist\shard)"
!endif
!ifndef ROOT
  !define ROOT "."
!endif
!ifndef OUTFILE
  !define OUTFILE "Shard-${VERSION}-setup.exe"
!endif

!define APPNAME "Shard"
!define EXENAME "Shard.exe"
!define UNINSTKEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\Shard"
!define RUNKEY "Software\Microsoft\Windows\CurrentVersion\Run"

Name "${APPNAME}"
OutFile "${OUTFILE}"
InstallDir "$LOCALAPPDATA\Programs\Shard"
InstallDirRegKey HKCU "Software\Shard" "InstallDir"
RequestExecutionLevel user
SetCompressor /SOLID lzma
ManifestDPIAware true
BrandingText "Shard ${VERSION}"

VIProductVersion "${VERSION}.0"
VIAddVersionKey "ProductName" "Shard"
VIAddVersionKey "FileDescription" "Shard node installer"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "LegalCopyright" "Apache-2.0"

!define MUI_ICON "${ROOT}/assets/icon.ico"
!define MUI_UNICON "${ROOT}/assets/icon.ico"
!define MUI_ABORTWARNING
!define MUI_COMPONENTSPAGE_SMALLDESC
!define MUI_FINISHPAGE_RUN "$INSTDIR\${EXENAME}"
!define MUI_FINISHPAGE_RUN_TEXT "Start Shard now"

!insertmacro MUI_PAGE_WELCOME
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_COMPONENTS
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

; A running Shard (or its children) holds its files open: ask it to go, then make sure.
!macro StopShard
  nsExec::Exec 'taskkill /IM Shard.exe'
  Sleep 1500
  nsExec::Exec 'taskkill /F /T /IM Shard.exe'
  nsExec::Exec 'taskkill /F /IM shard-cli.exe'
  nsExec::Exec 'taskkill /F /IM shard-daemon.exe'
  Sleep 500
!macroend

Section "Shard (required)" SecMain
  SectionIn RO
  !insertmacro StopShard
  SetOutPath "$INSTDIR"
  RMDir /r "$INSTDIR\_internal"  ; an upgrade replaces the bundle's libraries, never mixes two versions
  File /r "${PAYLOAD}\*.*"
  WriteUninstaller "$INSTDIR\Uninstall.exe"

  CreateDirectory "$SMPROGRAMS\Shard"
  CreateShortcut "$SMPROGRAMS\Shard\Shard.lnk" "$INSTDIR\${EXENAME}" "" "$INSTDIR\${EXENAME}" 0
  CreateShortcut "$SMPROGRAMS\Shard\Uninstall Shard.lnk" "$INSTDIR\Uninstall.exe"

  WriteRegStr HKCU "Software\Shard" "InstallDir" "$INSTDIR"
  WriteRegStr HKCU "${UNINSTKEY}" "DisplayName" "Shard"
  WriteRegStr HKCU "${UNINSTKEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINSTKEY}" "Publisher" "Shard"
  WriteRegStr HKCU "${UNINSTKEY}" "DisplayIcon" "$INSTDIR\${EXENAME}"
  WriteRegStr HKCU "${UNINSTKEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${UNINSTKEY}" "UninstallString" '"$INSTDIR\Uninstall.exe"'
  WriteRegStr HKCU "${UNINSTKEY}" "QuietUninstallString" '"$INSTDIR\Uninstall.exe" /S'
  WriteRegDWORD HKCU "${UNINSTKEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINSTKEY}" "NoRepair" 1
  ${GetSize} "$INSTDIR" "/S=0K" $0 $1 $2
  IntFmt $0 "0x%08X" $0
  WriteRegDWORD HKCU "${UNINSTKEY}" "EstimatedSize" "$0"
SectionEnd

Section /o "Desktop shortcut" SecDesktop
  CreateShortcut "$DESKTOP\Shard.lnk" "$INSTDIR\${EXENAME}" "" "$INSTDIR\${EXENAME}" 0
SectionEnd

; Off by default: the user opts in here or later in Shard's Settings (same Run value either way).
Section /o "Start Shard when I sign in" SecAutostart
  WriteRegStr HKCU "${RUNKEY}" "Shard" '"$INSTDIR\${EXENAME}"'
SectionEnd

!insertmacro MUI_FUNCTION_DESCRIPTION_BEGIN
  !insertmacro MUI_DESCRIPTION_TEXT ${SecMain} "The Shard node: tray app, local OpenAI endpoint, llama.cpp, network sidecar."
  !insertmacro MUI_DESCRIPTION_TEXT ${SecDesktop} "A shortcut on the desktop."
  !insertmacro MUI_DESCRIPTION_TEXT ${SecAutostart} "Start Shard in the tray at sign-in (can be changed in Shard's Settings)."
!insertmacro MUI_FUNCTION_DESCRIPTION_END

Section "Uninstall"
  !insertmacro StopShard
  DeleteRegValue HKCU "${RUNKEY}" "Shard"
  Delete "$DESKTOP\Shard.lnk"
  RMDir /r "$SMPROGRAMS\Shard"
  RMDir /r "$INSTDIR\_internal"
  Delete "$INSTDIR\Shard.exe"
  Delete "$INSTDIR\shard-cli.exe"
  Delete "$INSTDIR\Uninstall.exe"
  RMDir "$INSTDIR"
  DeleteRegKey HKCU "${UNINSTKEY}"
  DeleteRegKey HKCU "Software\Shard"
SectionEnd
