"""A feed left running at interpreter exit is stopped first: Qt aborts a process whose QThread object is
destroyed while its thread still runs (seen once at the end of a whole test run, after all tests passed)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import sys

    from PySide6.QtCore import QCoreApplication

    from trailstop_gui.models.store import ProtectionStore
    from trailstop_gui.services.secrets import SecretStore
    from trailstop_gui.services.session import AccountSession, Endpoints
    from trailstop_gui.simulator.runner import start_simulator

    app = QCoreApplication([])
    sim = start_simulator(seed=7, auto=False, fill_delay=0.0)
    store = ProtectionStore(sys.argv[1])
    kite = sim.info["kite"]
    account = store.add_account(
        "kite", "Zerodha", user_id=kite["user_id"], api_key=kite["api_key"], api_root=sim.url
    )
    secrets = SecretStore()
    secrets.set(account.id, "api_secret", kite["api_secret"])
    session = AccountSession(account, secrets, Endpoints.for_simulator(sim.info, "kite"))
    session.login_with_password(kite["user_id"], kite["password"])
    feed = session.start_feed(store, on_trigger=lambda pid, event: None)
    assert feed.wait_ready(10)
    assert feed.isRunning()
    print("feed running; leaving without stopping it", flush=True)
    # No stop_feed, no shutdown: the interpreter tears down with the feed thread still running.
    """
)


def test_a_feed_still_running_at_exit_does_not_abort_the_process(tmp_path: Path) -> None:
    script = tmp_path / "leave_running.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "feed.db")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert "feed running" in done.stdout, done.stdout + done.stderr
    assert "Destroyed while thread" not in done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
