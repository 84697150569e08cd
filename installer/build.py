"""Build the frozen app (PyInstaller, installer/trailstop.spec) and, on Linux, the tarball with install.sh.

    .venv/bin/python installer/build.py [--force] [--bundle-only]     (what `make dist` runs)

A build is reused while nothing it is made from has changed: a stamp records a hash of the package, the
spec, the resources and the installed distributions' versions. Builds take a lock, so a test and a
`make dist` running at once do not write into the same folder. The tests and bench/dist.py import this.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "installer"))

import bundle_config  # noqa: E402

SPEC = ROOT / "installer" / "trailstop.spec"
DIST = ROOT / "dist"
WORK = ROOT / "build" / "pyinstaller"
BUNDLE = DIST / bundle_config.EXE_NAME
BUNDLE_STAMP = ROOT / "build" / "bundle.stamp"
TARBALL_STAMP = ROOT / "build" / "tarball.stamp"
LOCK = ROOT / "build" / "dist.lock"

# What the bundle is made of; a change to any of these means a new build.
BUNDLE_INPUTS = [
    "trailstop_gui",
    "resources",
    "installer/trailstop.spec",
    "installer/bundle_config.py",
    "installer/trailstop_launcher.py",
    "installer/rthook_kiteticker.py",
    "pyproject.toml",
]
TARBALL_INPUTS = ["installer/linux", "resources/linux", "resources/icons"]


def version() -> str:
    namespace: dict[str, str] = {}
    exec((ROOT / "trailstop_gui" / "__init__.py").read_text(encoding="utf-8"), namespace)
    return namespace["__version__"]


def executable() -> Path:
    """The program to run: inside the .app on macOS, in the one-folder bundle elsewhere."""
    if sys.platform == "darwin":
        return DIST / f"{bundle_config.APP_NAME}.app" / "Contents" / "MacOS" / bundle_config.EXE_NAME
    return BUNDLE / (bundle_config.EXE_NAME + (".exe" if sys.platform == "win32" else ""))


def tarball_path() -> Path:
    arch = platform.machine().lower().replace("amd64", "x86_64")
    return DIST / f"trailstop-{version()}-linux-{arch}.tar.gz"


def _files(relative: str) -> Iterator[Path]:
    path = ROOT / relative
    if path.is_file():
        yield path
        return
    for item in sorted(path.rglob("*")):
        if item.is_file() and "__pycache__" not in item.parts and item.suffix not in (".pyc", ".pyo"):
            yield item


def fingerprint(inputs: list[str], *, environment: bool) -> str:
    """A hash of the inputs' paths and contents and, if asked, of Python and every installed package."""
    digest = hashlib.sha256()
    for relative in inputs:
        for item in _files(relative):
            digest.update(item.relative_to(ROOT).as_posix().encode() + b"\0")
            digest.update(item.read_bytes() + b"\0")
    if environment:
        digest.update(f"{sys.version}|{platform.platform()}|{sys.executable}".encode())
        packages = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())
        digest.update("\n".join(packages).encode())
    return digest.hexdigest()


def _current(stamp: Path, expected: str, product: Path) -> bool:
    return product.exists() and stamp.is_file() and stamp.read_text().strip() == expected


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One build at a time in this work tree, across processes."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a+b") as handle:
        if sys.platform == "win32":
            import msvcrt

            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    time.sleep(1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if sys.platform == "win32":
                import msvcrt

                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _preflight() -> None:
    if sys.platform.startswith("linux") and shutil.which("objcopy") is None:
        raise SystemExit(
            "PyInstaller needs objcopy from binutils on Linux (it is there wherever gcc is): "
            "sudo apt-get install binutils"
        )


def _quiet(*_args: object, **_kwargs: object) -> None:
    pass


def ensure_bundle(*, force: bool = False, log: bool = True) -> Path:
    """Build dist/trailstop (and the .app on macOS) unless an up-to-date build is there; its executable."""
    with build_lock():
        return _build_if_needed(force, print if log else _quiet)


def bundle_snapshot(destination: Path, *, log: bool = False) -> Path:
    """An up-to-date bundle, copied to ``destination`` (hard links where possible: instant); its executable.

    Tests run the copy: a build started meanwhile by another `make test` or `make dist` in this work tree
    replaces dist/ but not the files a running test holds.
    """
    with build_lock():
        exe = _build_if_needed(False, print if log else _quiet)
        source = exe.parents[2] if sys.platform == "darwin" else BUNDLE  # the .app, or the folder
        target = destination / source.name

        def link(src: str, dst: str) -> None:
            try:
                os.link(src, dst)
            except OSError:  # another file system, or no hard links there
                shutil.copy2(src, dst)

        shutil.copytree(source, target, symlinks=True, copy_function=link)
        return target / exe.relative_to(source)


def _build_if_needed(force: bool, say: Callable[..., None]) -> Path:
    """The executable of an up-to-date bundle, built now if need be. The caller holds the build lock."""
    expected = fingerprint(BUNDLE_INPUTS, environment=True)
    if not force and _current(BUNDLE_STAMP, expected, executable()):
        say(f"bundle up to date: {BUNDLE.relative_to(ROOT)} (sources unchanged since the last build)")
        return executable()
    _preflight()
    BUNDLE_STAMP.unlink(missing_ok=True)
    started = time.monotonic()
    command = [
        sys.executable,
        "-m",
        "PyInstaller",
        str(SPEC),
        "--noconfirm",
        "--log-level",
        "WARN",
        "--distpath",
        str(DIST),
        "--workpath",
        str(WORK),
    ]
    say("building the bundle: " + " ".join(command[2:]))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    # Quiet callers (tests, the benchmark) see PyInstaller's output only when it fails.
    quiet = say is _quiet
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=quiet, text=True)
    if done.returncode != 0:
        output = (done.stdout or "") + (done.stderr or "")
        raise SystemExit(f"PyInstaller failed ({done.returncode}):\n{output}")
    if not executable().exists():
        raise SystemExit(f"PyInstaller finished but {executable()} is missing")
    BUNDLE_STAMP.write_text(expected + "\n")
    size = bundle_size(BUNDLE)
    say(f"built {BUNDLE.relative_to(ROOT)} in {time.monotonic() - started:.0f} s: {size / 1e6:.0f} MB")
    return executable()


def bundle_size(path: Path) -> int:
    """Bytes on disk in the bundle, symlinks counted once as links (as a tarball or a copy holds them)."""
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_symlink() or p.is_file())


def stage_tarball_tree(destination: Path) -> Path:
    """Lay out the tarball's folder under ``destination``, all but the bundle (trailstop/) itself."""
    top = destination / f"trailstop-{version()}"
    (top / "icons").mkdir(parents=True)
    for name in (
        "install.sh",
        "uninstall.sh",
        "trailstop-headless.service",
        "trailstop-route-tunnel.service",
    ):
        shutil.copy2(ROOT / "installer" / "linux" / name, top / name)
    shutil.copy2(ROOT / "resources" / "linux" / "trailstop.desktop", top / "trailstop.desktop")
    icons = ROOT / "resources" / "icons"
    for icon in [icons / "trailstop.svg", *sorted(icons.glob("trailstop-*.png"))]:
        shutil.copy2(icon, top / "icons" / icon.name)
    (top / "README.txt").write_text(
        f"TrailStop {version()} for Linux ({platform.machine()})\n\n"
        "Install for your user (no root needed):   ./install.sh\n"
        "Or run it from here without installing:   ./trailstop/trailstop\n"
        "Check that it works on this machine:       ./trailstop/trailstop --self-test\n"
        "Remove it again:                           ~/.local/opt/trailstop/uninstall.sh\n\n"
        "Your data stays in ~/.local/share/TrailStop; API secrets and tokens stay in your OS keyring.\n",
        encoding="utf-8",
    )
    return top


def tarball_is_current() -> bool:
    """Whether dist/ holds the tarball of the current bundle (without building anything)."""
    if not BUNDLE_STAMP.is_file():
        return False
    expected = BUNDLE_STAMP.read_text().strip() + fingerprint(TARBALL_INPUTS, environment=False)
    return _current(TARBALL_STAMP, expected, tarball_path())


def ensure_tarball(*, force: bool = False, log: bool = True) -> Path:
    """dist/trailstop-VERSION-linux-ARCH.tar.gz from the current bundle, unless it is up to date."""
    say = print if log else _quiet
    with build_lock():
        _build_if_needed(force, say)
        expected = BUNDLE_STAMP.read_text().strip() + fingerprint(TARBALL_INPUTS, environment=False)
        target = tarball_path()
        if not force and _current(TARBALL_STAMP, expected, target):
            say(f"tarball up to date: {target.relative_to(ROOT)}")
            return target
        TARBALL_STAMP.unlink(missing_ok=True)
        started = time.monotonic()
        staging = ROOT / "build" / "tarball"
        shutil.rmtree(staging, ignore_errors=True)
        top = stage_tarball_tree(staging)
        partial = target.with_name(target.name + ".part")
        with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
            tar.add(top, arcname=top.name, filter=_owner_neutral)
            # The bundle's own symlinks (libraries PyInstaller links into the top folder) stay links.
            tar.add(BUNDLE, arcname=f"{top.name}/{BUNDLE.name}", filter=_owner_neutral)
        partial.replace(target)
        shutil.rmtree(staging, ignore_errors=True)
        TARBALL_STAMP.write_text(expected + "\n")
        say(
            f"packed {target.relative_to(ROOT)} in {time.monotonic() - started:.0f} s: "
            f"{target.stat().st_size / 1e6:.0f} MB"
        )
        return target


def _owner_neutral(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Entries owned by nobody in particular: unpacked, they belong to whoever unpacks them."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--force", action="store_true", help="rebuild even if the last build is current")
    parser.add_argument("--bundle-only", action="store_true", help="no tarball")
    args = parser.parse_args(argv)
    if sys.platform.startswith("linux") and not args.bundle_only:
        ensure_tarball(force=args.force)  # builds the bundle first if need be
    else:
        ensure_bundle(force=args.force)
    exe = executable().relative_to(ROOT)
    print(f"app: {exe}  (check it with: {exe} --self-test)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
