"""Submitting a simulator login form without a browser, as a script or a test does.

It speaks only HTTP and HTML (GET the form, POST its fields, read the redirect), so it works against any
login page built the same way: it is the app's own form login (services/brokers/form_login.py).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from trailstop_gui.services.brokers import form_login
from trailstop_gui.services.brokers.errors import BrokerError


class LoginFailed(RuntimeError):
    """The login page did not redirect to the app with a code."""


def submit_login_form(page_url: str, user_id: str, password: str, timeout: float = 10.0) -> dict[str, str]:
    """Fill ``user_id``/``password`` on the form at ``page_url``; return the redirect's query parameters.

    The app's own form login does the work; this only turns its errors into ``LoginFailed``.
    """
    try:
        return form_login.submit_login_form(page_url, user_id, password, timeout=timeout)
    except BrokerError as exc:
        raise LoginFailed(str(exc)) from None


def kite_request_token(info: dict[str, Any], timeout: float = 10.0) -> str:
    """Log in as the simulator's Kite demo user; ``info`` is the simulator's JSON line."""
    kite = info["kite"]
    page = f"{kite['login_url']}?api_key={urllib.parse.quote(kite['api_key'])}&v=3"
    params = submit_login_form(page, kite["user_id"], kite["password"], timeout)
    if params.get("status") != "success" or "request_token" not in params:
        raise LoginFailed(f"unexpected redirect parameters: {sorted(params)}")
    return params["request_token"]
