"""``trailstop-sim`` as a real process: one JSON line within 3 s, a clean exit on SIGTERM and SIGINT."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from trailstop_gui.simulator.cli import main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _command() -> list[str]:
    script = shutil.which("trailstop-sim", path=str(Path(sys.executable).parent))
    base = [script] if script else [sys.executable, "-m", "trailstop_gui.simulator.cli"]
    return [*base, "--port", "0", "--seed", "5", "--no-auto"]


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    assert lines, f"no line within {timeout} s"
    return lines[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_prints_one_json_line_fast_and_exits_cleanly(signum: signal.Signals) -> None:
    started = time.monotonic()
    process = subprocess.Popen(_command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _first_line(process, timeout=3.0)
        assert time.monotonic() - started < 3.0
        info = json.loads(line)
        assert info["http"].startswith("http://127.0.0.1:") and info["seed"] == 5
        headers = {"X-Sim-Token": info["control_token"]}
        assert requests.get(f"{info['http']}/_sim/info", headers=headers, timeout=5).json() == info
        assert (
            requests.post(f"{info['http']}/_sim/auto", json={"on": False}, headers=headers, timeout=5).json()[
                "auto"
            ]
            is False
        )
        process.send_signal(signum)
        assert process.wait(timeout=5) == 0
        out, err = process.communicate(timeout=5)
        assert out == "" and "Traceback" not in err  # exactly one line was printed
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_busy_port_is_reported_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--port", str(port)]) == 1
    assert "trailstop-sim:" in capsys.readouterr().err


def test_registered_ips_from_the_command_line() -> None:
    process = subprocess.Popen(
        [*_command(), "--registered-ip", "127.0.0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(_first_line(process, timeout=5.0))
        headers = {"X-Sim-Token": info["control_token"]}
        listed = requests.get(f"{info['http']}/_sim/ips", headers=headers, timeout=5).json()
        assert listed == [
            {"broker": "kite", "user_id": info["kite"]["user_id"], "ips": ["127.0.0.2"]},
            {"broker": "upstox", "user_id": info["upstox"]["user_id"], "ips": ["127.0.0.2"]},
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
