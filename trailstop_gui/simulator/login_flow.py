"""Submitting a simulator login form without a browser, as a script or a test does.

The simulator's own client, on the standard library only: GET the page, read its first form (action and
hidden fields), POST it with the user's id and password, and read the query of the redirect. It shares no
code with the app's form login (services/brokers/form_login.py), so a mistake in either shows up as a test
that fails instead of two that agree.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from html.parser import HTMLParser
from typing import IO, Any

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class LoginFailed(RuntimeError):
    """The login page did not redirect to the app with a code."""


class _FirstForm(HTMLParser):
    """The ``action`` and named ``<input>`` values of the page's first ``<form>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.action: str | None = None
        self.inputs: dict[str, str] = {}
        self._open = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._done:
            return
        attributes = dict(attrs)
        if tag == "form" and not self._open:
            self._open = True
            self.action = attributes.get("action") or ""
        elif tag == "input" and self._open:
            name = attributes.get("name")
            if name:
                self.inputs[name] = attributes.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._open:
            self._open = False
            self._done = True


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand a redirect back as it is: its Location carries the login's result."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Message, newurl: str
    ) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _open(request: urllib.request.Request, timeout: float) -> tuple[int, Message, bytes, str]:
    """(status, headers, body, final URL) of one request; an HTTP error status is an answer, not a raise."""
    try:
        with _opener.open(request, timeout=timeout) as answer:
            return answer.status, answer.headers, answer.read(), answer.geturl()
    except urllib.error.HTTPError as answer:
        with answer:
            return answer.code, answer.headers, answer.read(), request.full_url
    except OSError as exc:
        raise LoginFailed(f"login: {request.full_url} could not be reached ({type(exc).__name__})") from None


def submit_login_form(page_url: str, user_id: str, password: str, timeout: float = 10.0) -> dict[str, str]:
    """Fill ``user_id``/``password`` on the form at ``page_url``; return the redirect's query parameters."""
    status, headers, body, url = _open(urllib.request.Request(page_url), timeout)
    if status != 200:
        raise LoginFailed(f"login page answered HTTP {status}")
    form = _FirstForm()
    form.feed(body.decode(headers.get_content_charset() or "utf-8", errors="replace"))
    form.close()
    if form.action is None:
        raise LoginFailed("the login page has no form")
    fields = {**form.inputs, "user_id": user_id, "password": password}
    target = urllib.parse.urljoin(url, form.action)
    post = urllib.request.Request(target, data=urllib.parse.urlencode(fields).encode(), method="POST")
    post.add_header("Content-Type", "application/x-www-form-urlencoded")
    status, headers, _body, _url = _open(post, timeout)
    location = headers.get("Location")
    if status not in _REDIRECTS or not location:
        raise LoginFailed(f"login refused (HTTP {status}, no redirect)")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    return {key: values[0] for key, values in query.items() if values}


def kite_request_token(info: dict[str, Any], timeout: float = 10.0) -> str:
    """Log in as the simulator's Kite demo user; ``info`` is the simulator's JSON line."""
    kite = info["kite"]
    page = f"{kite['login_url']}?api_key={urllib.parse.quote(kite['api_key'])}&v=3"
    params = submit_login_form(page, kite["user_id"], kite["password"], timeout)
    if params.get("status") != "success" or "request_token" not in params:
        raise LoginFailed(f"unexpected redirect parameters: {sorted(params)}")
    return params["request_token"]
