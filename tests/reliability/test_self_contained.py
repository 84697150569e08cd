"""The suite needs nothing beside the repository: its Kite samples are in it, and reading beside it fails.

A clone has no ``../shared``; issue 20 found 16 failures and 20 skips there. These tests check the two
guards: ``tests/kite_mocks.py`` (a missing sample fails and names the file) and ``tests/outside_reads.py``
(the run fails naming any file opened beside the repository), the latter through a real pytest run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kite_mocks import KITE_MOCKS, kite_mock_json, kite_mock_packet, kite_mock_path
from tests.outside_reads import OutsideReads

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"

# ------------------------------------------------------------------------------- the Kite samples


def test_the_samples_are_inside_the_repository() -> None:
    assert KITE_MOCKS == REPO / "tests" / "data" / "kite-mocks"
    assert kite_mock_json("orders.json")["status"] == "success"
    assert len(kite_mock_packet("ticker_full.packet")) == 184  # the documented full-mode packet length
    assert len(kite_mock_packet("ticker_quote.packet")) == 44


def test_a_missing_sample_fails_naming_the_file_never_skips() -> None:
    # pytest.fail raises Failed; a skip (Skipped) would escape this and be reported as a skip instead.
    missing = r"'ticker_depth\.packet' is missing: expected .*kite-mocks"
    with pytest.raises(pytest.fail.Exception, match=missing):
        kite_mock_path("ticker_depth.packet")


def test_the_readme_accounts_for_every_sample() -> None:
    readme = (KITE_MOCKS / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`([a-z_]+\.(?:json|csv|packet))`", readme))
    present = {p.name for p in KITE_MOCKS.iterdir() if p.name != "README.md"}
    assert listed == present
    assert "Licence" in readme and "c7a81238f93b4057c07257823b1bfaf30cba9ae5" in readme


# ------------------------------------------------------------------------- the outside-reads check


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """``parent/repo`` and ``parent/shared/sample.json`` beside it."""
    repo = tmp_path / "parent" / "repo"
    (repo / "tests").mkdir(parents=True)
    shared = tmp_path / "parent" / "shared"
    shared.mkdir()
    (shared / "sample.json").write_text("{}")
    return repo, shared / "sample.json"


def test_only_paths_beside_the_repository_count(layout: tuple[Path, Path], tmp_path: Path) -> None:
    repo, sibling = layout
    venv = repo.parent / "main" / ".venv"  # a shared virtualenv beside a git worktree
    reads = OutsideReads(repo, allowed=[venv, tmp_path])  # tmp_path holds the repository: it excuses nothing
    assert reads.is_outside(str(sibling))
    assert reads.is_outside(str(repo.parent))  # listing the parent folder itself
    assert reads.is_outside(str(repo) + "-old/x.py")  # a sibling whose name starts like the repository's
    assert not reads.is_outside(str(repo / "tests" / "data" / "x.json"))
    assert not reads.is_outside(str(repo))
    assert not reads.is_outside(str(venv / "lib" / "site.py"))
    assert not reads.is_outside("/usr/lib/python3.11/os.py")


def test_a_clone_straight_in_the_temporary_folder_excuses_only_what_the_run_made_there(
    tmp_path: Path,
) -> None:
    """``git clone ... /tmp/x && make test`` (issue 20's own words): the run's temporary files land beside
    the clone; only what was there before the run is beside the repository."""
    temp = tmp_path / "tmp"
    repo = temp / "x"
    (repo / "tests").mkdir(parents=True)
    (temp / "shared").mkdir()
    (temp / "pytest-of-root").mkdir()  # left by an earlier run: pytest's own
    reads = OutsideReads(repo, allowed=[temp])
    (temp / "tmpab12cd").mkdir()  # made by the run (tempfile, a test's own folder)
    assert not reads.is_outside(str(temp))  # listing the temporary folder itself
    assert not reads.is_outside(str(temp / "tmpab12cd" / "db.sqlite"))
    assert not reads.is_outside(str(temp / "pytest-of-root" / "pytest-3" / "test_x0" / "data"))
    assert reads.is_outside(str(temp / "shared" / "sample.json"))
    assert not reads.is_outside(str(repo / "tests" / "data" / "x.json"))
    assert not reads.is_outside("/usr/lib/python3.11/os.py")


def test_a_home_folder_parent_excuses_only_its_dot_folders(tmp_path: Path) -> None:
    home = tmp_path / "home"
    reads = OutsideReads(home / "trailstop", home=home)
    assert not reads.is_outside(str(home / ".config" / "python_keyring" / "keyringrc.cfg"))
    assert reads.is_outside(str(home / "shared" / "data" / "sample.json"))
    assert OutsideReads(tmp_path / "src" / "trailstop", home=home).is_outside(str(tmp_path / "src" / ".x"))


def test_the_audit_hook_records_opens_and_listings(
    layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, sibling = layout
    reads = OutsideReads(repo)  # not installed: audit hooks last for the whole process
    link = repo / "tests" / "linked.json"
    link.symlink_to(sibling)
    monkeypatch.chdir(repo)
    reads.audit("open", (os.fsencode(repo / "tests" / "linked.json"), "r", 0))  # a link inside, to beside
    reads.audit("os.scandir", ("../shared",))  # relative to the current folder
    reads.audit("open", (str(repo / "pyproject.toml"), "r", 0))
    reads.audit("open", (7, "r", 0))  # a file descriptor: nothing to judge
    reads.audit("os.listdir", (None,))
    reads.audit("os.remove", (str(sibling), -1))  # not a read
    assert reads.paths == {str(sibling.resolve()), str(sibling.parent.resolve())}


def _lay_out_suite(repo: Path, test_body: str) -> None:
    """The real conftest and guards in ``repo/tests``, plus one test with ``test_body``."""
    for name in ("__init__.py", "conftest.py", "outside_reads.py"):
        shutil.copy(TESTS / name, repo / "tests" / name)
    (repo / "pytest.ini").write_text("[pytest]\n")
    (repo / "tests" / "test_reading.py").write_text(
        f"from pathlib import Path\n\n\ndef test_reading() -> None:\n    {test_body}\n"
    )


def _run_pytest(repo: Path, *args: str, temp: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(repo), "QT_QPA_PLATFORM": "offscreen"}
    if temp is not None:
        env["TMPDIR"] = str(temp)  # tempfile's folder, and pytest's basetemp under it
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, "tests"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ``make test`` runs the suite on xdist workers: a read in a worker must fail the run as well.
WORKERS = pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "xdist workers"])
# Each of these runs pytest (one or two more interpreters, 1-6 s of CPU): ``slow``, so the lonely copy
# (test_clone_alone.py, ``-m "not slow"``) does not run them a second time, nested inside its own run.
NESTED_RUN = pytest.mark.slow


@NESTED_RUN
@WORKERS
def test_a_run_that_reads_beside_the_repository_fails_naming_the_file(
    layout: tuple[Path, Path], workers: list[str]
) -> None:
    repo, sibling = layout
    _lay_out_suite(repo, "assert Path('../shared/sample.json').read_text() == '{}'")
    run = _run_pytest(repo, *workers)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout + run.stderr
    assert "1 passed" in run.stdout  # the test itself passed: the session check failed the run
    assert f"opened outside the repository: {sibling.resolve()}" in run.stdout


@NESTED_RUN
@WORKERS
def test_a_run_that_stays_inside_the_repository_passes(layout: tuple[Path, Path], workers: list[str]) -> None:
    repo, _ = layout
    _lay_out_suite(repo, "assert Path('pytest.ini').read_text() == '[pytest]\\n'")
    run = _run_pytest(repo, *workers)
    assert run.returncode == pytest.ExitCode.OK, run.stdout + run.stderr
    assert "outside the repository" not in run.stdout


@NESTED_RUN
@WORKERS
def test_a_clone_straight_in_the_temporary_folder_passes_and_still_catches_a_sibling(
    tmp_path: Path, workers: list[str]
) -> None:
    """``git clone <repo> /tmp/x && make test``: the run's temporary files beside the clone are its own."""
    temp = tmp_path / "tmp"
    repo = temp / "x"
    (repo / "tests").mkdir(parents=True)
    (temp / "shared").mkdir()
    (temp / "shared" / "sample.json").write_text("{}")
    own = "import os, tempfile; d = Path(tempfile.mkdtemp()); (d / 'a').write_text('1'); os.listdir(d.parent)"
    _lay_out_suite(repo, own)
    run = _run_pytest(repo, *workers, "--basetemp", str(temp / "pytest-of-me"), temp=temp)
    assert run.returncode == pytest.ExitCode.OK, run.stdout + run.stderr
    assert "outside the repository" not in run.stdout
    _lay_out_suite(repo, f"{own}; assert Path('../shared/sample.json').read_text() == '{{}}'")
    run = _run_pytest(repo, *workers, temp=temp)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout + run.stderr
    assert f"opened outside the repository: {(temp / 'shared' / 'sample.json').resolve()}" in run.stdout
