"""Logging in through a broker's HTML login form without a browser: for the simulator and demo mode.

The real flow is the same as a browser's: GET the login page, POST its form with the user's id and
password, and read the query of the redirect to the app's redirect URL (``request_token`` for Kite,
``code`` and ``state`` for Upstox). Real brokers add 2FA and captchas; there the embedded web view is used.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from trailstop_gui.services.brokers.errors import AuthError, TemporaryError


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self._in_form = True
            self.action = values.get("action", "")
        elif tag == "input" and self._in_form and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def submit_login_form(page_url: str, user_id: str, password: str, *, timeout: float = 7.0) -> dict[str, str]:
    """Fill and submit the login form at ``page_url``; return the redirect's query parameters."""
    try:
        with requests.Session() as http:
            page = http.get(page_url, timeout=timeout)
            if page.status_code >= 400:
                raise AuthError(f"login page answered HTTP {page.status_code}")
            parser = _FormParser()
            parser.feed(page.text)
            if parser.action is None:
                raise AuthError("the login page has no form")
            fields = dict(parser.fields, user_id=user_id, password=password)
            target = urljoin(page.url, parser.action or page.url)
            answer = http.post(target, data=fields, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise TemporaryError(f"login failed: {type(exc).__name__}") from None
    location = answer.headers.get("Location")
    if answer.status_code not in (301, 302, 303, 307) or not location:
        raise AuthError(f"login refused (HTTP {answer.status_code})")
    query = parse_qs(urlsplit(location).query)
    return {key: values[0] for key, values in query.items() if values}
