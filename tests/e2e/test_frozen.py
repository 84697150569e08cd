"""The installable app: the frozen bundle `make dist` builds, its self-test, its contents and its installer.

The bundle is built once per session (installer/build.py reuses an up-to-date build: a stamp over the
package, the spec and the resources). Every test that runs the frozen app fails when the frozen app
breaks: a module, plugin or data file PyInstaller left out shows up here, not on a trader's machine.
The icon, desktop-entry and version-resource checks need no build and run in the quick loop too.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINUX = sys.platform.startswith("linux")
STEPS = [
    "Qt",
    "bundle",
    "keyring",
    "charts",
    "web engine",
    "simulator",
    "login",
    "feed",
    "entry",
    "entry",
    "trail",
    "trail",
    "trigger",
    "exit",
    "exit filled",
    "trigger",
    "exit",
    "exit filled",
]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"trailstop_{name}", ROOT / "installer" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build = _load("build")
bundle_config = sys.modules["bundle_config"]  # loaded by build.py from installer/
make_icons = _load("make_icons")


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The frozen executable, built first if the sources changed since the last build (about 30 s here).

    It runs from a copy (hard links): another `make test` or `make dist` in this tree may rebuild dist/.
    """
    return build.bundle_snapshot(tmp_path_factory.mktemp("frozen"))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def bundle(frozen: Path) -> Path:
    """The one-folder bundle the frozen executable lives in (Linux, Windows)."""
    return frozen.parent


def frozen_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    # The self-test must go offscreen by itself, as it does for a trader with no display variable set.
    env.pop("QT_QPA_PLATFORM", None)
    return env


# ----------------------------------------------------------------- the frozen app


@pytest.fixture(scope="module")
def self_test(frozen: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, str]:
    """One run of the frozen ``--self-test``: its folder, the finished process, the report file's text."""
    where = tmp_path_factory.mktemp("self-test")
    report = where / "report.txt"
    done = subprocess.run(
        [str(frozen), "--self-test"],
        capture_output=True,
        text=True,
        timeout=240,
        env=frozen_env(TRAILSTOP_SELFTEST_REPORT=str(report)),
        cwd=where,
    )
    return where, done, report.read_text() if report.exists() else ""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_frozen_self_test_runs_the_demo_flow_to_the_exit_fill(self_test: tuple[Path, Any, str]) -> None:
    where, done, report = self_test
    output = done.stdout
    assert done.returncode == 0, output + done.stderr[-3000:]
    lines = output.splitlines()
    assert lines[0].startswith("TrailStop ") and "(frozen;" in lines[0]
    step = re.compile(r"\s*[\d.]+ s  (ok|FAILED)\s+([a-zA-Z ]+):")
    assert [m.group(2) for m in map(step.match, lines) if m] == STEPS
    assert "FAILED" not in output
    assert lines[-1].startswith(f"self-test passed: {len(STEPS)} steps")
    # A windowed build may have no stdout (Windows): the same report goes to the file CI reads.
    assert report.splitlines() == lines
    assert not list(where.glob("trailstop-selftest-*"))  # nothing left behind next to it


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_frozen_keyring_finds_the_backends_the_source_finds(self_test: tuple[Path, Any, str]) -> None:
    _, done, _ = self_test
    line = next(x for x in done.stdout.splitlines() if " keyring: " in x)
    found = line.split("backends found: ", 1)[1].split(";", 1)[0].split(", ")
    probe = "import json, trailstop_gui.selftest as s; print(json.dumps(s.keyring_summary()))"
    source = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT, timeout=60
    )
    source_found, source_active = json.loads(source.stdout)
    assert found == source_found
    # Where the source falls back to the fail backend (no OS keyring here), so must the frozen app, and
    # the other way round: a usable backend in the venv must be usable from the bundle too.
    assert ("none usable here" in line) == (source_active == "keyring.backends.fail.Keyring"), line


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_frozen_version(frozen: Path) -> None:
    done = subprocess.run([str(frozen), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.strip() == f"TrailStop {build.version()}"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not LINUX, reason="signals and start-up lines as on Linux")
def test_frozen_second_start_is_turned_away(frozen: Path, tmp_path: Path) -> None:
    command = [str(frozen), "--headless", "--data-dir", str(tmp_path)]
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=frozen_env()
    )
    try:
        assert first.stdout is not None
        deadline = time.monotonic() + 60
        for line in first.stdout:
            if "headless; data in" in line:
                break
            assert time.monotonic() < deadline, "the frozen app never started"
        second = subprocess.run(command, capture_output=True, text=True, timeout=60, env=frozen_env())
        assert second.returncode == 3, second.stdout + second.stderr
        assert "already running in the background" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
    assert (tmp_path / "trailstop.db").exists()  # the data folder chosen, never the bundle's own folder


# ----------------------------------------------------------------- what the bundle carries


def _bundle_files(bundle: Path) -> dict[str, Path]:
    return {p.relative_to(bundle).as_posix(): p for p in bundle.rglob("*")}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not LINUX, reason="Linux paths and ELF libraries")
def test_bundle_carries_web_engine_charts_and_sdk_data_and_leaves_out_qml(bundle: Path) -> None:
    files = _bundle_files(bundle)
    qt = "_internal/PySide6/Qt"
    for needed in [
        f"{qt}/libexec/QtWebEngineProcess",
        f"{qt}/resources/qtwebengine_resources.pak",
        f"{qt}/resources/icudtl.dat",
        f"{qt}/resources/v8_context_snapshot.bin",
        f"{qt}/lib/libQt6WebEngineCore.so.6",
        f"{qt}/lib/libQt6Charts.so.6",
        f"{qt}/plugins/platforms/libqxcb.so",
        f"{qt}/plugins/platforms/libqwayland.so",
        f"{qt}/plugins/platforms/libqoffscreen.so",
        "_internal/certifi/cacert.pem",
        "_internal/resources/icons/trailstop.svg",
        "_internal/resources/linux/trailstop.desktop",
    ]:
        assert needed in files, needed
    # keyring finds its backends through its entry points: its metadata must travel with it.
    assert any(re.fullmatch(r"_internal/keyring-[\d.]+\.dist-info/entry_points\.txt", n) for n in files)
    assert os.access(files[f"{qt}/libexec/QtWebEngineProcess"], os.X_OK)
    locales = {Path(n).stem for n in files if "/qtwebengine_locales/" in n}
    assert locales == bundle_config.WEBENGINE_LOCALES
    assert not any("/Qt/qml/" in n for n in files)
    assert not any(n.endswith(".qm") for n in files)
    assert not any(re.search(r"libQt6(Quick3D|Multimedia|Pdf|3D|Location|Graphs)", n) for n in files)
    assert build.bundle_size(bundle) < 520e6  # 427 MB when this was written; QtWebEngine is 200


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not LINUX, reason="ELF libraries")
def test_every_qt_library_a_bundled_binary_links_against_is_bundled(bundle: Path) -> None:
    files = _bundle_files(bundle)
    bundled = {bundle_config.qt_library_key(n) for n in files} - {None}
    missing: dict[str, set[str]] = {}
    for name, path in files.items():
        if path.is_symlink() or not path.is_file() or not _is_elf(path):
            continue
        for needed in _needed(path):
            key = bundle_config.qt_library_key(needed)
            if key is not None and key not in bundled:
                missing.setdefault(needed, set()).add(name)
    assert not missing, missing


def _is_elf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"\x7fELF"


def _needed(path: Path) -> list[str]:
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) is not installed")
    out = subprocess.run([readelf, "-d", str(path)], capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\).*\[(.*)\]", out)


# ----------------------------------------------------------------- the Linux tarball and install.sh


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tarball = build.ensure_tarball(log=False)
    where = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(tarball) as tar:
        tar.extractall(where, filter="tar")
    (top,) = where.iterdir()
    return Path(top)


def _run_script(script: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    return subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not LINUX, reason="the tarball is the Linux package")
def test_tarball_install_puts_the_app_in_the_menu_and_uninstall_keeps_the_data(
    unpacked: Path, tmp_path: Path
) -> None:
    assert unpacked.name == f"trailstop-{build.version()}"
    assert {p.name for p in unpacked.iterdir()} >= {
        "trailstop",
        "install.sh",
        "uninstall.sh",
        "trailstop.desktop",
        "icons",
        "README.txt",
    }
    home = tmp_path / "home"
    home.mkdir()
    installed = _run_script(unpacked / "install.sh", home)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert f"Installed TrailStop {build.version()}." in installed.stdout

    app = home / ".local/opt/trailstop/trailstop"
    assert os.access(app, os.X_OK)
    assert (home / ".local/bin/trailstop").resolve() == app.resolve()
    share = home / ".local/share"
    entry = _desktop_entry(share / "applications/trailstop.desktop")
    assert entry["Exec"] == f'"{app}"' and entry["TryExec"] == str(app)
    assert entry["Icon"] == "trailstop" and entry["Terminal"] == "false"
    for size in make_icons.PNG_SIZES:
        assert (share / f"icons/hicolor/{size}x{size}/apps/trailstop.png").is_file()
    assert (share / "icons/hicolor/scalable/apps/trailstop.svg").is_file()
    if shutil.which("desktop-file-validate"):
        check = subprocess.run(
            ["desktop-file-validate", str(share / "applications/trailstop.desktop")],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stdout + check.stderr

    # Installing again upgrades in place; the trader's data (platformdirs' folder) is never touched.
    data = share / "TrailStop"
    data.mkdir()
    (data / "trailstop.db").write_text("the trader's protections")
    again = _run_script(unpacked / "install.sh", home)
    assert again.returncode == 0, again.stderr
    removed = _run_script(home / ".local/opt/trailstop/uninstall.sh", home)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not (home / ".local/opt/trailstop").exists()
    assert not (home / ".local/bin/trailstop").exists()
    assert not (share / "applications/trailstop.desktop").exists()
    assert not list((share / "icons").rglob("trailstop.*"))
    assert (data / "trailstop.db").read_text() == "the trader's protections"
    assert "Your data is still in" in removed.stdout


def _desktop_entry(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return dict(parser["Desktop Entry"])


# ----------------------------------------------------------------- quick checks: no build needed


def test_desktop_entry_is_complete() -> None:
    entry = _desktop_entry(ROOT / "resources/linux/trailstop.desktop")
    assert entry["Type"] == "Application" and entry["Name"] == "TrailStop"
    assert entry["Exec"] == "trailstop" and entry["Icon"] == "trailstop"
    # Qt names the window class after the application name (app.py: setApplicationName).
    assert entry["StartupWMClass"] == "TrailStop"
    assert set(entry["Categories"].rstrip(";").split(";")) >= {"Office", "Finance"}


@pytest.fixture
def qt_images(qapp: Any) -> Iterator[Any]:
    """QImage and QImageReader, with the QApplication pytest-qt shares across the suite."""
    from PySide6.QtGui import QImage, QImageReader

    yield QImage, QImageReader


def test_icon_set_is_rendered_from_the_svg(qt_images: Any) -> None:
    qimage, reader_class = qt_images
    icons = ROOT / "resources/icons"
    for size in make_icons.PNG_SIZES:
        committed = qimage(str(icons / f"trailstop-{size}.png"))
        assert (committed.width(), committed.height()) == (size, size)
        # A changed SVG needs `make icons`: the committed PNGs must still be its rendering.
        fresh = qimage.fromData(make_icons.render_png(icons / "trailstop.svg", size), "PNG")
        assert _close(committed, fresh), f"trailstop-{size}.png is stale: run `make icons`"
    for name, expected in (
        ("trailstop.ico", list(make_icons.ICO_SIZES)),
        ("trailstop.icns", [size for _, size in make_icons.ICNS_SLOTS]),
    ):
        reader = reader_class(str(icons / name))
        sizes = []
        for index in range(reader.imageCount()):
            reader.jumpToImage(index)
            sizes.append(reader.read().width())
        assert sorted(sizes) == sorted(expected), name


def _close(a: Any, b: Any) -> bool:
    from PySide6.QtGui import QImage

    a = a.convertToFormat(QImage.Format.Format_ARGB32)
    b = b.convertToFormat(QImage.Format.Format_ARGB32)
    if a.size() != b.size():
        return False
    far = 0
    for y in range(a.height()):
        for x in range(a.width()):
            ca, cb = a.pixelColor(x, y), b.pixelColor(x, y)
            diff = max(abs(ca.red() - cb.red()), abs(ca.green() - cb.green()), abs(ca.blue() - cb.blue()))
            far += max(diff, abs(ca.alpha() - cb.alpha())) > 24
    return far <= a.width() * a.height() // 100  # antialiasing may differ a little between Qt versions


def test_icon_containers_are_well_formed() -> None:
    ico = (ROOT / "resources/icons/trailstop.ico").read_bytes()
    reserved, kind, count = struct.unpack("<HHH", ico[:6])
    assert (reserved, kind, count) == (0, 1, len(make_icons.ICO_SIZES))
    icns = (ROOT / "resources/icons/trailstop.icns").read_bytes()
    assert icns[:4] == b"icns" and struct.unpack(">I", icns[4:8])[0] == len(icns)


def test_windows_version_resource_names_the_app_and_its_version() -> None:
    text = bundle_config.windows_version_info("1.2.3")
    seen: dict[str, Any] = {}

    def record(kind: str) -> Any:
        def make(*args: Any, **kwargs: Any) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
            seen.setdefault(kind, []).append((args, kwargs))
            return (kind, args, kwargs)

        return make

    names = ["VSVersionInfo", "FixedFileInfo", "StringFileInfo", "StringTable", "StringStruct"]
    names += ["VarFileInfo", "VarStruct"]
    tree = ast.parse(text, mode="eval")  # PyInstaller evaluates this file the same way
    eval(compile(tree, "version_info.txt", "eval"), {name: record(name) for name in names})
    assert seen["FixedFileInfo"][0][1]["filevers"] == (1, 2, 3, 0)
    strings = {args[0]: args[1] for args, _ in seen["StringStruct"]}
    assert strings["ProductName"] == "TrailStop" and strings["ProductVersion"] == "1.2.3"
    assert strings["OriginalFilename"] == "trailstop.exe"


def test_inno_setup_script_installs_per_user_and_keeps_the_data() -> None:
    iss = (ROOT / "installer/windows/trailstop.iss").read_text(encoding="utf-8")
    setup = dict(re.findall(r"^(\w+)=(.*)$", iss.split("[Setup]", 1)[1].split("\n[", 1)[0], re.M))
    assert setup["PrivilegesRequired"] == "lowest"
    assert setup["DefaultDirName"] == "{autopf}\\{#AppName}"
    assert re.fullmatch(r"\{\{[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}\}", setup["AppId"])
    assert "[UninstallDelete]" not in iss.replace("No [UninstallDelete]", "")
    assert 'Name: "desktopicon"' in iss and "Flags: unchecked" in iss
    assert (ROOT / "resources/icons/trailstop.ico").is_file()


def test_self_test_says_what_failed_and_exits_1(
    qapp: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from trailstop_gui import selftest

    for name in ("QT_QPA_PLATFORM", "QTWEBENGINE_DISABLE_SANDBOX", "QTWEBENGINE_CHROMIUM_FLAGS"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored afterwards: the self-test sets them
    monkeypatch.setattr(selftest, "_check_bundle", lambda: "fine")
    monkeypatch.setattr(selftest, "_check_keyring", lambda: "fine")
    monkeypatch.setattr(selftest, "_check_web_engine", lambda: "fine")

    def no_line() -> str:
        raise selftest.StepFailed("the chart drew no line")

    def broken_flow(self: Any) -> None:
        raise RuntimeError("the simulator did not start")

    monkeypatch.setattr(selftest, "_check_charts", no_line)
    monkeypatch.setattr(selftest.DemoFlow, "run", broken_flow)
    assert selftest.run_self_test() == 1
    out = capsys.readouterr().out
    assert re.search(r"FAILED\s+charts: the chart drew no line", out)
    assert re.search(r"FAILED\s+demo flow: RuntimeError: the simulator did not start", out)
    last = out.strip().splitlines()[-1]
    assert last.startswith("self-test FAILED: 2 step(s) failed (charts, demo flow)")
    kept = Path(last.rsplit("kept in ", 1)[1])
    assert kept.is_dir()  # kept for a look at its log
    shutil.rmtree(kept)


@pytest.mark.parametrize(
    ("dest", "kept"),
    [
        ("PySide6/Qt/qml/QtQuick/libqtquick2plugin.so", False),  # Linux, macOS
        ("PySide6/qml/QtQuick/qtquick2plugin.dll", False),  # Windows
        ("PySide6/Qt/translations/qtwebengine_locales/en-US.pak", True),
        ("PySide6/Qt/translations/qtwebengine_locales/de.pak", False),
        ("PySide6/Qt/lib/QtWebEngineCore.framework/Versions/A/Resources/qtwebengine_locales/hi.pak", True),
        ("PySide6/translations/qtwebengine_locales/fr.pak", False),
        ("PySide6/translations/qtbase_de.qm", False),
        ("PySide6/Qt/plugins/platforms/libqxcb.so", True),
        ("PySide6/Qt/plugins/platforms/libqwayland.so", True),
        ("PySide6/Qt/plugins/platforms/libqoffscreen.so", True),  # the self-test runs on it
        ("PySide6/plugins/platforms/qwindows.dll", True),
        ("PySide6/Qt/plugins/platforms/libqcocoa.dylib", True),
        ("PySide6/Qt/plugins/platforms/libqeglfs.so", False),
        ("PySide6/plugins/platforms/qdirect2d.dll", False),
        ("PySide6/Qt/plugins/imageformats/libqpdf.so", False),
        ("PySide6/Qt/plugins/position/libqtposition_geoclue2.so", False),
        ("PySide6/Qt/resources/qtwebengine_resources.pak", True),
        ("PySide6/Qt/resources/qtwebengine_devtools_resources.pak", False),
        ("PySide6/resources/qtwebengine_devtools_resources.pak", False),  # Windows
        ("PySide6/Qt/plugins/printsupport/libcupsprintersupport.so", False),
        ("PySide6/plugins/printsupport/windowsprintersupport.dll", False),
        ("PySide6/Qt/plugins/platformthemes/libqgtk3.so", True),
        ("certifi/cacert.pem", True),
    ],
)
def test_trimming_rules_for_each_platforms_layout(dest: str, kept: bool) -> None:
    assert bundle_config.keep_file(dest) is kept


def test_prune_keeps_the_qt_libraries_kept_binaries_link_and_drops_the_rest() -> None:
    links = {
        "/src/QtWebEngineWidgets.abi3.so": ["libQt6WebEngineWidgets.so.6"],
        "/src/libQt6WebEngineWidgets.so.6": ["libQt6WebEngineCore.so.6", "libQt6QuickWidgets.so.6"],
        "/src/libQt6WebEngineCore.so.6": ["libQt6Quick.so.6", "libc.so.6"],
        "/src/libQt6Quick.so.6": [],
        "/src/libQt6QuickWidgets.so.6": [],
        "/src/libQt6Quick3D.so.6": ["libQt6Quick.so.6"],
        "/src/libqtquick3dplugin.so": ["libQt6Quick3D.so.6"],
    }
    binaries = [
        ("PySide6/QtWebEngineWidgets.abi3.so", "/src/QtWebEngineWidgets.abi3.so", "EXTENSION"),
        *[(f"PySide6/Qt/lib/{Path(s).name}", s, "BINARY") for s in links if "libQt6" in s],
        ("libQt6Quick3D.so.6", "PySide6/Qt/lib/libQt6Quick3D.so.6", "SYMLINK"),
        ("PySide6/Qt/qml/QtQuick3D/libqtquick3dplugin.so", "/src/libqtquick3dplugin.so", "BINARY"),
    ]
    kept, datas, dropped = bundle_config.prune(binaries, [], lambda source: links[source])
    assert dropped == ["qt6quick3d.so.6"]
    assert {Path(e[0]).name for e in kept} == {
        "QtWebEngineWidgets.abi3.so",
        "libQt6WebEngineWidgets.so.6",
        "libQt6WebEngineCore.so.6",
        "libQt6Quick.so.6",
        "libQt6QuickWidgets.so.6",
    }
    assert datas == []


def test_prune_drops_the_libraries_only_a_cut_plugin_links_against() -> None:
    links = {
        "/src/QtGui.abi3.so": ["libQt6Gui.so.6"],
        "/src/libQt6Gui.so.6": ["libglib-2.0.so.0", "libc.so.6"],
        "/src/libcupsprintersupport.so": ["libcups.so.2", "libQt6Gui.so.6"],
        "/src/libcups.so.2": ["libgnutls.so.30", "libglib-2.0.so.0"],
        "/src/libgnutls.so.30": ["libnettle.so.8"],
        "/src/libnettle.so.8": [],
        "/src/libglib-2.0.so.0": [],
        "/src/_ssl.so": ["libnettle.so.8"],  # pretend: a kept module shares one of them
    }
    binaries = [
        ("PySide6/QtGui.abi3.so", "/src/QtGui.abi3.so", "EXTENSION"),
        ("PySide6/Qt/lib/libQt6Gui.so.6", "/src/libQt6Gui.so.6", "BINARY"),
        (
            "PySide6/Qt/plugins/printsupport/libcupsprintersupport.so",
            "/src/libcupsprintersupport.so",
            "BINARY",
        ),
        *[
            (Path(s).name, s, "BINARY")
            for s in links
            if Path(s).name.startswith(("libglib", "libcups.", "libgn", "libnet"))
        ],
        ("python3.11/lib-dynload/_ssl.so", "/src/_ssl.so", "EXTENSION"),
    ]
    kept, _, dropped = bundle_config.prune(binaries, [], lambda source: links[source])
    assert dropped == ["libcups.so.2", "libgnutls.so.30"]
    assert {Path(e[0]).name for e in kept} == {
        "QtGui.abi3.so",
        "libQt6Gui.so.6",
        "libglib-2.0.so.0",  # the kept Qt library links it too
        "libnettle.so.8",  # so does a kept module
        "_ssl.so",
    }


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("libQt6Core.so.6", "qt6core.so.6"),
        ("PySide6/Qt6Core.dll", "qt6core.dll"),
        ("PySide6/Qt/lib/QtCore.framework/Versions/A/QtCore", "qtcore"),
        ("@rpath/QtCore.framework/Versions/A/QtCore", "qtcore"),
        ("libicudata.so.73", "icudata.so.73"),
        ("PySide6/QtCore.abi3.so", None),  # the Python binding: a root, never pruned
        ("PySide6/Qt/libexec/QtWebEngineProcess", None),
        ("shiboken6/shiboken6.abi3.dll", None),
    ],
)
def test_qt_libraries_are_recognised_on_every_platform(name: str, key: str | None) -> None:
    assert bundle_config.qt_library_key(name) == key


_WITHOUT_TICKER_STACK = """
import importlib.abc, json, sys
blocked = set(json.loads(sys.argv[1]))

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not in the bundle")
        return None

sys.meta_path.insert(0, Refuse())
exec(open(sys.argv[2]).read())
import trailstop_gui.app, trailstop_gui.selftest, trailstop_gui.views.main_window
import trailstop_gui.simulator.runner, trailstop_gui.services.session
import trailstop_gui.services.brokers.kite, trailstop_gui.services.brokers.upstox
import keyring.backends.SecretService
from kiteconnect import KiteConnect, KiteTicker
KiteConnect("key")
try:
    KiteTicker("key", "token")
except ImportError as exc:
    print("ticker refused:", exc)
print("loaded:", sorted({m.split(".")[0] for m in sys.modules} & blocked))
"""


def test_the_app_imports_without_the_kite_ticker_stack_the_bundle_leaves_out() -> None:
    # The bundle leaves out Twisted/Autobahn (KiteTicker's stack) and its runtime hook stands in for
    # kiteconnect.ticker: every module the app loads must import with that stack refused, and nothing may
    # load it lazily.
    stack = bundle_config.KITE_TICKER_STACK
    assert set(stack) <= set(bundle_config.EXCLUDED_MODULES)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _WITHOUT_TICKER_STACK,
            json.dumps(stack),
            str(ROOT / "installer" / "rthook_kiteticker.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ticker refused: KiteTicker is not part of the TrailStop bundle" in done.stdout
    assert "loaded: []" in done.stdout
