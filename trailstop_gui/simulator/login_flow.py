"""Submitting a simulator login form without a browser, as a script or a test does.

It speaks only HTTP and HTML (GET the form, POST its fields, read the redirect), so it works against any
login page built the same way; it imports nothing from the simulator itself.
"""

from __future__ import annotations

import html.parser
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class LoginFailed(RuntimeError):
    """The login page did not redirect to the app with a code."""


class _FormParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action") or ""
        elif tag == "input" and a.get("name"):
            self.fields[str(a["name"])] = a.get("value") or ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def submit_login_form(page_url: str, user_id: str, password: str, timeout: float = 10.0) -> dict[str, str]:
    """Fill ``user_id``/``password`` on the form at ``page_url``; return the redirect's query parameters."""
    with urllib.request.urlopen(page_url, timeout=timeout) as response:
        parser = _FormParser()
        parser.feed(response.read().decode("utf-8", "replace"))
    if parser.action is None:
        raise LoginFailed(f"no login form at {page_url}")
    fields = {**parser.fields, "user_id": user_id, "password": password}
    action = urllib.parse.urljoin(page_url, parser.action)
    opener = urllib.request.build_opener(_NoRedirect)
    data = urllib.parse.urlencode(fields).encode()
    try:
        opener.open(urllib.request.Request(action, data=data, method="POST"), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code in (301, 302, 303, 307) and exc.headers.get("Location"):
            location = exc.headers["Location"]
            return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
        raise LoginFailed(f"login answered HTTP {exc.code}") from None
    raise LoginFailed("login did not redirect (wrong user id or password?)")


def kite_request_token(info: dict[str, Any], timeout: float = 10.0) -> str:
    """Log in as the simulator's Kite demo user; ``info`` is the simulator's JSON line."""
    kite = info["kite"]
    page = f"{kite['login_url']}?api_key={urllib.parse.quote(kite['api_key'])}&v=3"
    params = submit_login_form(page, kite["user_id"], kite["password"], timeout)
    if params.get("status") != "success" or "request_token" not in params:
        raise LoginFailed(f"unexpected redirect parameters: {sorted(params)}")
    return params["request_token"]
