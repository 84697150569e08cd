"""The frozen app: its size on disk and its cold start, beside the same start from source.

Cold start is the time from starting the process to the self-test's first step, "Qt: offscreen
application up": the frozen program unpacked nothing (one-folder build), loaded Python, the package and
Qt, and built the QApplication. The same is measured for ``python -m trailstop_gui --self-test`` from the
venv in the same run. Each figure is the median of a few starts; the disk cache is warm after the first
(this box cannot drop it), so the figures are what a trader sees from the second start of the day on.

Builds the bundle first if it is out of date (installer/build.py, as `make dist`).
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
RUNS = 3
FIRST_STEP = "Qt: offscreen application up"
ALL_IMPORTED = "bundle: "  # the step after it imports the SDKs and every view module


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trailstop_build", ROOT / "installer" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_to_steps(command: list[str], timeout: float = 60.0) -> tuple[float, float]:
    """Seconds from process start to the self-test's first step and to its "bundle" step; then stopped."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*command, "--self-test"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    first = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if FIRST_STEP in line:
                first = time.perf_counter() - started
            elif ALL_IMPORTED in line and first is not None:
                return first, time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                break
        raise RuntimeError(f"{command[0]} never reached the self-test's first steps")
    finally:
        proc.kill()
        proc.wait()


def medians_ms(command: list[str]) -> tuple[float, float]:
    runs = [time_to_steps(command) for _ in range(RUNS)]
    return tuple(statistics.median(run[i] for run in runs) * 1000 for i in (0, 1))  # type: ignore[return-value]


def main() -> None:
    build = load_build()
    executable = build.ensure_bundle(log=False)
    size = build.bundle_size(build.BUNDLE)
    files = sum(1 for p in build.BUNDLE.rglob("*") if p.is_file())
    tarball = build.tarball_path()
    packed = f"; tarball {tarball.stat().st_size / 1e6:.0f} MB" if build.tarball_is_current() else ""
    print(f"bundle size: {size / 1e6:.0f} MB ({build.BUNDLE.relative_to(ROOT)}, {files} files{packed})")
    frozen, frozen_all = medians_ms([str(executable)])
    source, source_all = medians_ms([sys.executable, "-m", "trailstop_gui"])
    print(
        f"frozen cold start: {frozen:.0f} ms to the self-test's first step (Qt up, offscreen); "
        f"from source: {source:.0f} ms (median of {RUNS}, warm disk cache)"
    )
    print(
        f"frozen start to every module imported: {frozen_all:.0f} ms (SDKs and views); "
        f"from source: {source_all:.0f} ms"
    )


if __name__ == "__main__":
    main()
