"""A copy of the tracked files alone, with nothing beside it, passes the tests that use the Kite samples.

This is issue 20's "git clone, then make test" in small: the subset that once read ``../shared`` runs in a
temporary copy of what ``git ls-files`` lists, using this interpreter (the venv) but the copy's code.
It also covers subprocesses, which the in-process outside-reads check cannot see.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SAMPLE_TESTS = (
    "tests/unit/services/brokers/test_kite_codec.py",
    "tests/unit/services/brokers/test_kite_adapter.py",
    "tests/services/simulator/test_kite_shapes.py",
    "tests/services/simulator/test_kite_ticker.py",
    "tests/services/simulator/test_market.py",
    "tests/unit/services/test_holdings.py",
    "tests/reliability/test_self_contained.py",
)
# Which files the copy's interpreter imports: the copy's, not this checkout's (nor an editable install's).
WHERE_FROM = "import tests.kite_mocks as k, trailstop_gui as t; print(k.__file__, t.__file__)"


def _copy_tracked_files(target: Path) -> int:
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=False, timeout=30
    )
    assert listed.returncode == 0, f"git ls-files failed in {REPO}: {listed.stderr.decode(errors='replace')}"
    copied = 0
    for name in listed.stdout.decode().split("\0"):
        source = REPO / name
        if name and source.is_file():  # a tracked file deleted in the working tree is not in a clone
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
            copied += 1
    return copied


def test_a_lonely_copy_of_the_tracked_files_passes_the_sample_tests(tmp_path: Path) -> None:
    copy = tmp_path / "alone" / "trailstop"  # "alone" holds nothing else: no shared/ beside the copy
    copy.mkdir(parents=True)
    assert _copy_tracked_files(copy) > 100
    assert [p.name for p in copy.parent.iterdir()] == ["trailstop"]
    for name in SAMPLE_TESTS:
        assert (copy / name).is_file(), f"{name} is not tracked by git"

    env = {**os.environ, "PYTHONPATH": str(copy), "QT_QPA_PLATFORM": "offscreen"}
    imported = subprocess.run(
        [sys.executable, "-c", WHERE_FROM],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert [Path(f).is_relative_to(copy) for f in imported.stdout.split()] == [True, True], imported.stdout

    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "not slow", *SAMPLE_TESTS],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == pytest.ExitCode.OK, output
    summary = output.strip().splitlines()[-1]
    # Nothing skipped or failed; "deselected": the slow tests (nested pytest runs) the outer suite runs.
    assert re.fullmatch(r"\d+ passed(, \d+ deselected)? in [\d.]+s( \(.*\))?", summary), summary
    assert int(summary.split()[0]) >= 100, summary
