"""Names and trimming rules for the frozen build, shared by the spec, the build script and the tests.

PyInstaller's Qt hooks collect generously: QtWebEngineWidgets pulls in QtQuick, whose hook collects every
QML module and, through them, about a hundred Qt libraries (Quick3D, Multimedia, Location, ...). TrailStop
uses no QML. :func:`prune` keeps the Qt libraries that a kept binary actually links against and drops the
rest, so the rule follows the real dependency graph on every platform instead of a hand-kept list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

APP_NAME = "TrailStop"
EXE_NAME = "trailstop"
BUNDLE_ID = "in.trailstop.TrailStop"
COPYRIGHT = "TrailStop contributors"
DESCRIPTION = "Trailing stop-loss protection for Zerodha and Upstox positions"

# Python packages the app never imports at run time (test and build tools, GUI toolkits it does not use).
EXCLUDED_MODULES: list[str] = [
    "tkinter",
    "_tkinter",
    "turtle",
    "turtledemo",
    "idlelib",
    "lib2to3",
    "pydoc_data",
    "test",
    "distutils",
    "setuptools",
    "pkg_resources",
    "pip",
    "IPython",
    "pytest",
    "_pytest",
    "pytestqt",
    "hypothesis",
    "mypy",
    "ruff",
    "importlinter",
    "grimp",
    "PyInstaller",
    "numpy",
    # Python bindings that PyInstaller's Qt hooks add because a Qt library links against their library.
    # Nothing imports them (the libraries themselves stay, as the link needs), and leaving out QtQml and
    # QtQuick also keeps their hooks from collecting every QML module.
    "PySide6.QtQml",
    "PySide6.QtQuick",
    "PySide6.QtQuickWidgets",
    "PySide6.QtOpenGL",
    "PySide6.QtOpenGLWidgets",
    "PySide6.QtPositioning",
    "PySide6.QtDBus",
    "PySide6.QtTest",
    "PySide6.QtSql",
    "PySide6.QtMultimedia",
    "PySide6.Qt3DCore",
    "PySide6.QtQuick3D",
    "PySide6.QtPdf",
    "PySide6.QtDesigner",
    "PySide6.QtUiTools",
]

# What kiteconnect imports only for its KiteTicker (Twisted, Autobahn and what they bring). TrailStop reads
# the ticker with its own client; installer/rthook_kiteticker.py stands in for ``kiteconnect.ticker`` in the
# bundle so that ``import kiteconnect`` does not need them.
KITE_TICKER_STACK: list[str] = [
    "twisted",
    "autobahn",
    "txaio",
    "automat",
    "constantly",
    "hyperlink",
    "incremental",
    "zope",
    "service_identity",
    "pyasn1",
    "pyasn1_modules",
]
EXCLUDED_MODULES += KITE_TICKER_STACK

# Chromium's own UI strings (qtwebengine_locales/*.pak, about 1.3 MB each, 53 of them). The app is in English
# and the login pages are the brokers' own, so these only cover Chromium's context menus and error pages:
# en-US (Chromium's fallback for any missing locale), en-GB (what en-IN maps to) and Hindi.
WEBENGINE_LOCALES = {"en-US", "en-GB", "hi"}

# Qt plugins: whole folders the app never needs, and single plugins that pull in unused Qt libraries.
DROPPED_PLUGIN_DIRS = {
    "designer",
    "egldeviceintegrations",  # eglfs: embedded devices without a window system
    "generic",  # evdev/tuio input for eglfs
    "geometryloaders",
    "geoservices",
    "multimedia",
    "position",
    "qmllint",
    "qmlls",
    "qmltooling",
    "renderers",
    "renderplugins",
    "sceneparsers",
    "scxmldatamodel",
    "sensors",
    "sqldrivers",
    "texttospeech",
    "assetimporters",
    "canbus",
    "webview",
    # Printer support (Linux: the CUPS plugin, which alone pulls in libcups, GnuTLS, Avahi, p11-kit and
    # friends, about 8 MB). TrailStop prints nothing; QtPrintSupport itself stays, WebEngineWidgets links it.
    "printsupport",
}
# Chromium's developer tools (11.7 MB): only opened through a DevTools page or a remote-debugging port,
# neither of which the login view has (Qt: "Deploying Qt WebEngine Applications", Resources).
DROPPED_DATA_FILES = {"qtwebengine_devtools_resources.pak"}
DROPPED_PLUGINS = re.compile(
    r"(eglfs|linuxfb|minimalegl|vnc|vkkhrdisplay|qtvirtualkeyboard|qpdf|direct2d)", re.IGNORECASE
)

# Qt's own libraries, as they are named on Linux (libQt6Core.so.6), Windows (Qt6Core.dll) and macOS
# (QtCore.framework/Versions/A/QtCore), plus the ICU libraries Qt ships on Linux.
_QT_LIBRARY = re.compile(r"^(lib)?(Qt6[A-Za-z0-9]+\.(so(\.\d+)*|dll)|icu[a-z0-9]+\.so(\.\d+)*)$")
_QT_FRAMEWORK = re.compile(r"(^|/)(Qt[A-Za-z0-9]+)\.framework(/|$)")


def _parts(dest: str) -> list[str]:
    return dest.replace("\\", "/").split("/")


def qt_library_key(dest: str) -> str | None:
    """A Qt library's identity ("qt6core.so.6", "qtcore") if ``dest`` is one, else None."""
    path = dest.replace("\\", "/")
    framework = _QT_FRAMEWORK.search(path)
    if framework is not None:
        return framework.group(2).lower()
    name = path.rsplit("/", 1)[-1]
    if _QT_LIBRARY.match(name):
        return name.lower().removeprefix("lib")
    return None


def keep_file(dest: str) -> bool:
    """Whether a collected file survives the first cut (before the Qt library closure).

    PySide6's wheels lay Qt out differently per platform (PySide6/Qt/... on Linux and macOS, where the
    locales sit inside QtWebEngineCore.framework; PySide6/plugins, /translations, /qml on Windows), so the
    rules look at folder names, not at full paths.
    """
    parts = _parts(dest)
    if "PySide6" not in parts:
        return True
    inside = parts[parts.index("PySide6") + 1 :]
    name = inside[-1] if inside else ""
    if "qml" in inside[:2]:
        return False  # no QML in this app
    if name in DROPPED_DATA_FILES:
        return False
    if len(inside) > 1 and inside[-2] == "qtwebengine_locales":
        return name.removesuffix(".pak") in WEBENGINE_LOCALES
    if name.endswith(".qm"):
        return False  # Qt's own translations: the app is English-only and installs no QTranslator
    if "plugins" in inside:
        rest = inside[inside.index("plugins") + 1 :]
        if rest and rest[0] in DROPPED_PLUGIN_DIRS:
            return False
        if len(rest) > 1 and DROPPED_PLUGINS.search(rest[-1]):
            return False
    return True


Entry = tuple[str, str, str]  # PyInstaller TOC entry: (destination name, source path, type code)


def prune(
    binaries: Iterable[Entry],
    datas: Iterable[Entry],
    imports_of: Callable[[str], Iterable[str]],
) -> tuple[list[Entry], list[Entry], list[str]]:
    """Apply :func:`keep_file`, then keep only the Qt libraries that some kept binary links against.

    The libraries PyInstaller collected only because a file cut by :func:`keep_file` links against them (the
    CUPS print plugin's libcups, GnuTLS, ...) go too, unless something kept links against them as well.
    ``imports_of(source_path)`` names the libraries a binary links against (PyInstaller's bindepend).
    Returns the kept binaries, the kept datas, and the keys of the Qt libraries and the names of the other
    libraries dropped.
    """
    binaries = list(binaries)
    cut = [e for e in binaries if not keep_file(e[0])]
    binaries = [e for e in binaries if keep_file(e[0])]
    datas = [e for e in datas if keep_file(e[0])]
    by_name: dict[str, list[Entry]] = {}
    for entry in binaries:
        by_name.setdefault(_parts(entry[0])[-1], []).append(entry)

    # Libraries reachable from the cut files: candidates, kept below only if a kept binary reaches them.
    orphans: set[str] = set()
    pending = [e[1] for e in cut if e[2] != "SYMLINK"]
    seen: set[str] = set()
    while pending:
        source = pending.pop()
        if source in seen:
            continue
        seen.add(source)
        for name in imports_of(source):
            if name in by_name and qt_library_key(name) is None and name not in orphans:
                orphans.add(name)
                pending.extend(e[1] for e in by_name[name] if e[2] != "SYMLINK")

    def prunable_key(dest: str) -> str | None:
        key = qt_library_key(dest)
        if key is not None:
            return key
        name = _parts(dest)[-1]
        return name if name in orphans else None

    prunable: dict[str, list[Entry]] = {}
    roots: list[Entry] = []
    for entry in binaries:
        key = prunable_key(entry[0])
        if key is None:
            roots.append(entry)
        else:
            prunable.setdefault(key, []).append(entry)

    needed: set[str] = set()
    pending = [e[1] for e in roots if e[2] != "SYMLINK"]
    seen = set()
    while pending:
        source = pending.pop()
        if source in seen:
            continue
        seen.add(source)
        for name in imports_of(source):
            key = prunable_key(name)
            if key is None or key in needed or key not in prunable:
                continue
            needed.add(key)
            pending.extend(e[1] for e in prunable[key] if e[2] != "SYMLINK")

    dropped = sorted(set(prunable) - needed)

    def survives(entry: Entry) -> bool:
        key = prunable_key(entry[0])
        return key is None or key in needed

    return [e for e in binaries if survives(e)], [e for e in datas if survives(e)], dropped


def imports_with_pyinstaller(source: str) -> list[str]:
    """The libraries ``source`` links against, as PyInstaller's own dependency analysis sees them."""
    from PyInstaller.depend import bindepend  # type: ignore[import-untyped]

    try:
        return [name for name, _ in bindepend.get_imports(source)]
    except Exception:
        return []  # not a binary PyInstaller can read (a data file marked BINARY): it links nothing


def windows_version_info(version: str) -> str:
    """The text of a PyInstaller version file: the Details tab of the .exe's properties on Windows."""
    numbers = [int(n) for n in re.findall(r"\d+", version)[:4]]
    numbers += [0] * (4 - len(numbers))
    quad = tuple(numbers)
    strings = {
        "CompanyName": APP_NAME,
        "FileDescription": APP_NAME,
        "FileVersion": version,
        "InternalName": EXE_NAME,
        "LegalCopyright": COPYRIGHT,
        "OriginalFilename": f"{EXE_NAME}.exe",
        "ProductName": APP_NAME,
        "ProductVersion": version,
        "Comments": DESCRIPTION,
    }
    table = ",\n          ".join(f"StringStruct({k!r}, {v!r})" for k, v in strings.items())
    return f"""# UTF-8
VSVersionInfo(
  ffi=FixedFileInfo(
    filevers={quad!r},
    prodvers={quad!r},
    mask=0x3f,
    flags=0x0,
    OS=0x40004,
    fileType=0x1,
    subtype=0x0,
    date=(0, 0)
  ),
  kids=[
    StringFileInfo([
      StringTable(
        '040904B0',
        [{table}])
    ]),
    VarFileInfo([VarStruct('Translation', [1033, 1200])])
  ]
)
"""
