; TrailStop for Windows: a per-user installer (no administrator rights), built with Inno Setup 6.3 or later
; from the PyInstaller bundle in dist\trailstop (`python installer\build.py` first):
;
;   iscc installer\windows\trailstop.iss                   (version read from dist\trailstop\trailstop.exe)
;   iscc /DAppVersion=0.1.0 installer\windows\trailstop.iss
;
; Installs into %LOCALAPPDATA%\Programs\TrailStop, adds a Start-menu entry and, if asked, a desktop shortcut
; and a start at sign-in. The uninstaller removes the program only: the trader's protections, journal,
; settings and logs (%LOCALAPPDATA%\TrailStop\TrailStop, the platformdirs user-data folder) and the secrets in
; Windows Credential Manager stay, so a reinstall or an upgrade carries on where it left off.

#define AppName "TrailStop"
#define AppExe "trailstop.exe"
#define Root AddBackslash(SourcePath) + "..\.."
#define DistDir Root + "\dist\trailstop"
#ifndef AppVersion
  ; The bundle's own version resource (installer/bundle_config.py writes it from trailstop_gui.__version__).
  #define AppVersion GetVersionNumbersString(DistDir + "\" + AppExe)
#endif

[Setup]
; Never change AppId: Windows knows an installed TrailStop by it, for upgrades and for the uninstaller.
AppId={{9629CFC4-521D-489D-9C3E-4B263689F365}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher={#AppName}
AppComments=Trailing stop-loss protection for Zerodha and Upstox positions
VersionInfoVersion={#AppVersion}
VersionInfoDescription={#AppName} setup
; Per user: {autopf} is %LOCALAPPDATA%\Programs, and shortcuts go to the user's own Start menu and desktop.
PrivilegesRequired=lowest
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
UsePreviousAppDir=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
SetupIconFile={#Root}\resources\icons\trailstop.ico
UninstallDisplayIcon={app}\{#AppExe}
UninstallDisplayName={#AppName}
WizardStyle=modern
Compression=lzma2/max
SolidCompression=yes
OutputDir={#Root}\dist
OutputBaseFilename=trailstop-{#AppVersion}-windows-x64-setup
; A running TrailStop holds its files open: Setup offers to close it (Restart Manager) and starts it again
; afterwards. Its protections stay armed in the database meanwhile and are resumed at the restart.
CloseApplications=yes
RestartApplications=yes

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[CustomMessages]
english.StartAtSignIn=Start TrailStop when I sign in (keeps protecting after a restart of the PC)
english.DataKept=TrailStop has been removed.%n%nYour protections, journal, settings and logs are still in %1, and your API secrets in Windows Credential Manager: installing TrailStop again picks them up. Delete that folder to remove them too.

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "startup"; Description: "{cm:StartAtSignIn}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#DistDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExe}"; WorkingDir: "{app}"; Comment: "Trailing stop-loss protection"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; WorkingDir: "{app}"; Tasks: desktopicon
Name: "{userstartup}\{#AppName}"; Filename: "{app}\{#AppExe}"; WorkingDir: "{app}"; Tasks: startup

[Run]
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

; No [UninstallDelete]: the uninstaller removes exactly what [Files] and [Icons] put in place, never the
; user-data folder.

[Code]
procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  if (CurUninstallStep = usPostUninstall) and not UninstallSilent() then
    MsgBox(FmtMessage(CustomMessage('DataKept'), [ExpandConstant('{localappdata}\{#AppName}\{#AppName}')]),
      mbInformation, MB_OK);
end;
