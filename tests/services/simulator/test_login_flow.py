"""The simulator's own login client (simulator/login_flow.py): what it does when no login can happen."""

from __future__ import annotations

import socket

import pytest

from trailstop_gui.simulator.login_flow import LoginFailed, submit_login_form
from trailstop_gui.simulator.runner import SimulatorHandle


def test_a_page_without_a_form_is_a_failed_login(simulator: SimulatorHandle) -> None:
    # The redirect page says the login is complete: no form on it.
    with pytest.raises(LoginFailed, match="no form"):
        submit_login_form(simulator.info["kite"]["redirect_url"], "DM1234", "demo1234")


def test_a_login_page_that_answers_an_error_is_a_failed_login(simulator: SimulatorHandle) -> None:
    with pytest.raises(LoginFailed, match="HTTP 400"):
        submit_login_form(f"{simulator.info['kite']['login_url']}?api_key=nope", "DM1234", "demo1234")


def test_a_server_that_is_not_there_is_a_failed_login() -> None:
    with socket.socket() as probe:  # a port nobody listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        with pytest.raises(LoginFailed, match="could not be reached"):
            submit_login_form(f"http://127.0.0.1:{port}/connect/login", "DM1234", "demo1234", timeout=2)
