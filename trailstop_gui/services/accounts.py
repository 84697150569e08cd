"""Broker accounts as the trader manages them: add, edit, remove, and where a login may navigate.

The API secret goes to the keyring (SecretStore) and nowhere else: not the database, not settings, not a
log line, not an exception message. Validation errors name the field and never repeat what was typed.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from trailstop_gui.models.store import AccountHasLiveProtections, AccountRecord, ProtectionStore
from trailstop_gui.services.protection_service import ProtectionService
from trailstop_gui.services.route_monitor import RouteMonitor
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.services.session import AccountSession, Endpoints

log = logging.getLogger("trailstop.accounts")

FIELDS = ("label", "api_key", "api_secret", "redirect_url", "user_id")


@dataclass(frozen=True)
class BrokerSpec:
    """What differs between brokers in the account form and the login view."""

    key: str  # "kite" or "upstox"
    name: str  # what the trader calls it
    key_label: str
    secret_label: str
    hosts: tuple[str, ...]  # login hosts, each with its subdomains
    domains: tuple[str, ...]  # any subdomain of these (not the bare domain: that is the marketing site)
    key_pattern: str
    key_hint: str


BROKERS: dict[str, BrokerSpec] = {
    "kite": BrokerSpec(
        key="kite",
        name="Zerodha",
        key_label="API key",
        secret_label="API secret",
        hosts=("kite.zerodha.com", "kite.trade"),
        domains=(),
        key_pattern=r"[A-Za-z0-9]{6,64}",
        key_hint="letters and digits only, as shown on developers.kite.trade",
    ),
    "upstox": BrokerSpec(
        key="upstox",
        name="Upstox",
        key_label="Client ID",
        secret_label="Client secret",
        # api.upstox.com serves the authorisation dialog (Upstox docs, "Authentication"), login.upstox.com
        # the login itself; no other upstox.com host (the marketing site, the web trading app) is needed.
        hosts=("api.upstox.com", "login.upstox.com"),
        domains=(),
        key_pattern=r"[A-Za-z0-9-]{6,64}",
        key_hint="letters, digits and dashes only, as shown on account.upstox.com/developer/apps",
    ),
}

LABELS = {"label": "Label", "redirect_url": "Redirect URL", "user_id": "User ID"}


def field_label(broker: str, field: str) -> str:
    """The name the form shows for ``field`` (the broker's own words for the key and secret)."""
    spec = spec_for(broker)
    return {"api_key": spec.key_label, "api_secret": spec.secret_label}.get(field) or LABELS[field]


def spec_for(broker: str) -> BrokerSpec:
    try:
        return BROKERS[broker]
    except KeyError:
        raise ValueError(f"broker: kite or upstox, got {broker!r}") from None


def account_title(account: AccountRecord) -> str:
    """``Zerodha (AB1234)``: the label and, once known, the broker's user id."""
    return f"{account.label} ({account.user_id})" if account.user_id else account.label


class ValidationError(ValueError):
    """A field the trader typed is not acceptable. ``str()`` names the field; it never echoes the value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class AccountInUse(RuntimeError):
    """The account still has live protections: removing it would leave them unwatched."""


@dataclass(frozen=True)
class AccountInput:
    """What the account form collects. ``api_secret`` empty on an edit means: keep the stored one."""

    broker: str
    label: str
    api_key: str
    api_secret: str
    redirect_url: str
    user_id: str = ""

    def __repr__(self) -> str:  # the secret must never reach a log line through a repr
        return (
            f"AccountInput(broker={self.broker!r}, label={self.label!r}, api_key={self.api_key!r}, "
            f"api_secret={'***' if self.api_secret else ''!r}, redirect_url={self.redirect_url!r}, "
            f"user_id={self.user_id!r})"
        )


_LOOPBACK_NAMES = {"localhost"}
_USER_ID = re.compile(r"[A-Za-z0-9]{2,20}")


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_redirect_url(url: str, label: str = "Redirect URL") -> str:
    """An http(s) URL with a host; plain http only on this machine (127.0.0.1), as both brokers allow."""
    url = url.strip()
    if not url:
        raise ValidationError("redirect_url", f"{label}: must not be empty")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValidationError("redirect_url", f"{label}: not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            "redirect_url", f"{label}: must start with https:// (or http://127.0.0.1) and name a host"
        )
    if parts.username or parts.password:
        raise ValidationError("redirect_url", f"{label}: must not contain a user name or password")
    if parts.fragment:
        raise ValidationError("redirect_url", f"{label}: must not contain a # fragment")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValidationError("redirect_url", f"{label}: use https:// (plain http only for 127.0.0.1)")
    if port == 0:
        raise ValidationError("redirect_url", f"{label}: port 0 is not a port")
    return url


def validate(data: AccountInput, *, require_secret: bool = True) -> AccountInput:
    """Check every field; return the cleaned input. Raises ValidationError naming the first bad field."""
    spec = spec_for(data.broker)
    label = " ".join(data.label.split()) or spec.name
    if len(label) > 40:
        raise ValidationError("label", "Label: at most 40 characters")
    key = data.api_key.strip()
    if not key:
        raise ValidationError("api_key", f"{spec.key_label}: must not be empty")
    if not re.fullmatch(spec.key_pattern, key):
        raise ValidationError("api_key", f"{spec.key_label}: {spec.key_hint}")
    secret = data.api_secret.strip()
    if not secret and require_secret:
        raise ValidationError("api_secret", f"{spec.secret_label}: must not be empty")
    if secret and (len(secret) > 128 or any(ch.isspace() for ch in secret)):
        raise ValidationError("api_secret", f"{spec.secret_label}: no spaces, at most 128 characters")
    redirect = validate_redirect_url(data.redirect_url)
    user = data.user_id.strip().upper()
    if user and not _USER_ID.fullmatch(user):
        raise ValidationError("user_id", "User ID: 2 to 20 letters and digits (for example AB1234)")
    return AccountInput(spec.key, label, key, secret, redirect, user)


# --------------------------------------------------------------------------- where a login may go


def _origin(scheme: str, host: str, port: int | None) -> tuple[str, str, int]:
    default = 443 if scheme == "https" else 80
    return scheme, host.lower().rstrip("."), port or default


def _split(url: str) -> tuple[tuple[str, str, int], str, str] | None:
    """(origin, path, query) of an http(s) URL, or None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return _origin(parts.scheme, parts.hostname, port), parts.path or "/", parts.query


@dataclass(frozen=True)
class LoginPolicy:
    """Where the login view of one account may navigate, and what its redirect URL is.

    Real brokers: https on their own hosts and subdomains. A simulator account: exactly the simulator's
    scheme, host and port (its ``api_root``), nothing else.
    """

    broker: str
    redirect_url: str
    hosts: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    origin: tuple[str, str, int] | None = None  # the simulator's

    @classmethod
    def for_account(cls, account: AccountRecord) -> LoginPolicy:
        spec = spec_for(account.broker)
        if account.api_root:
            split = _split(account.api_root)
            if split is None:
                raise ValueError("api root: not an http(s) URL")
            return cls(account.broker, account.redirect_url, origin=split[0])
        return cls(account.broker, account.redirect_url, hosts=spec.hosts, domains=spec.domains)

    def describe(self) -> str:
        """The allowed hosts, for the trader: ``kite.zerodha.com, kite.trade``."""
        if self.origin is not None:
            scheme, host, port = self.origin
            return f"{scheme}://{host}:{port}"
        return ", ".join([*self.hosts, *(f"*.{d}" for d in self.domains)])

    def allows(self, url: str) -> bool:
        """May the view load ``url``? about:blank is harmless; anything else must be on an allowed host."""
        if url in ("about:blank", "about:srcdoc"):
            return True
        split = _split(url)
        if split is None:
            return False
        origin = split[0]
        if self.origin is not None:
            return origin == self.origin
        scheme, host, _port = origin
        if scheme != "https":
            return False
        return host in self.hosts or any(host.endswith("." + h) for h in (*self.hosts, *self.domains))

    def allows_request(self, url: str) -> bool:
        """May a page of the login load ``url`` (a script, an image, an XHR, a WebSocket)? Only from the
        hosts it may navigate to; ``data:`` and ``blob:`` never leave the page; the redirect URL is the
        navigation that ends the login (the page never loads it: see the login view)."""
        scheme = url.partition(":")[0].lower()
        if scheme in ("data", "blob"):
            return True
        if scheme in ("ws", "wss"):
            url = ("https" if scheme == "wss" else "http") + url[len(scheme) :]
        return self.allows(url) or self.is_redirect(url)

    def is_redirect(self, url: str) -> bool:
        """Exactly the configured redirect URL: same scheme, host, port and path (the query may differ)."""
        target, here = _split(self.redirect_url), _split(url)
        if target is None or here is None:
            return False
        return here[0] == target[0] and _path(here[1]) == _path(target[1])

    @staticmethod
    def params(url: str) -> dict[str, str]:
        """The query parameters of a redirect (first value of each)."""
        params: dict[str, str] = {}
        for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
            params.setdefault(key, value)
        return params


def _path(path: str) -> str:
    return path.rstrip("/") or "/"


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what the view shows and reports, never the path or query
    (a refused URL may carry a token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(an invalid address)"
    if not parts.scheme:
        return "(an invalid address)"
    if not host:
        return f"{parts.scheme}:"
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}" + (f":{port}" if port else "")


# --------------------------------------------------------------------------- add, edit, remove


class AccountManager:
    """Creates, changes and removes accounts, keeping the database, the keyring and the service in step."""

    def __init__(
        self,
        store: ProtectionStore,
        secrets: SecretStore,
        service: ProtectionService,
        routes: RouteMonitor | None = None,
    ) -> None:
        self.store = store
        self.secrets = secrets
        self.service = service
        self.routes = routes

    def _add_session(self, session: AccountSession) -> None:
        self.service.add_session(session)
        if self.routes is not None:
            self.routes.attach(session)  # its stored order route (none yet for a new account: direct)

    def session(self, account_id: int) -> AccountSession | None:
        return self.service.sessions.get(account_id)

    def add(self, data: AccountInput) -> AccountRecord:
        """Validate, store the account (no secret), put the secret in the keyring, add its session."""
        clean = validate(data, require_secret=True)
        account = self.store.accounts_repo.add(
            clean.broker,
            clean.label,
            user_id=clean.user_id,
            api_key=clean.api_key,
            redirect_url=clean.redirect_url,
        )
        self.secrets.set(account.id, "api_secret", clean.api_secret)
        self._add_session(AccountSession(account, self.secrets, Endpoints()))
        log.info("account %d added: %s", account.id, account_title(account))
        return account

    def update(self, account_id: int, data: AccountInput) -> AccountRecord:
        """Change an account. A new API key or redirect URL ends the current login (the token belongs to
        the old app), so it is refused while protections are live; the label and secret change any time."""
        current = self.store.accounts_repo.get(account_id)
        if data.broker != current.broker:
            raise ValidationError("broker", "Broker: cannot change; add a new account instead")
        clean = validate(data, require_secret=False)
        app_changed = clean.api_key != current.api_key or clean.redirect_url != current.redirect_url
        if app_changed:
            live = len(self.store.live(account_id))
            if live:
                field = "api_key" if clean.api_key != current.api_key else "redirect_url"
                raise ValidationError(
                    field,
                    f"{field_label(current.broker, field)}: cannot change while "
                    f"{_protections(live)} {'is' if live == 1 else 'are'} live; close or remove them first",
                )
        account = self.store.accounts_repo.update(
            account_id,
            label=clean.label,
            api_key=clean.api_key,
            redirect_url=clean.redirect_url,
            user_id=clean.user_id or current.user_id,
        )
        if clean.api_secret:
            self.secrets.set(account_id, "api_secret", clean.api_secret)
        session = self.session(account_id)
        if session is not None:
            if app_changed:
                self._drop_session(session)
                self.secrets.delete(account_id, "access_token")
                self._add_session(AccountSession(account, self.secrets, session.endpoints))
            else:
                session.account = account
        log.info("account %d changed: %s", account_id, account_title(account))
        return account

    def record_login(self, account_id: int, user_id: str) -> AccountRecord:
        """After a login: remember the broker's user id if the account did not know it yet."""
        account = self.store.accounts_repo.get(account_id)
        user = user_id.strip().upper()
        if user and not account.user_id and _USER_ID.fullmatch(user):
            account = self.store.accounts_repo.update(account_id, user_id=user)
            session = self.session(account_id)
            if session is not None:
                session.account = account
        return account

    def removal_check(self, account_id: int) -> tuple[int, int]:
        """(live protections, finished protections) of an account. Live ones block removal."""
        live = len(self.store.live(account_id))
        return live, self.store.protection_count(account_id) - live

    def remove(self, account_id: int) -> None:
        """Remove an account, its finished protections and their journal, and its keyring entries.

        Refused (AccountInUse) while any of its protections is live: nothing would watch them any more.
        """
        account = self.store.accounts_repo.get(account_id)
        live = len(self.store.live(account_id))
        if live:
            raise AccountInUse(
                f"{account_title(account)} has {_protections(live, 'live')}: exit or remove "
                f"{'it' if live == 1 else 'them'} first, then remove the account"
            )
        self.store.settings_repo.set(f"order_route.{account_id}", None)
        try:
            # One transaction, live protections checked again inside it: all or nothing.
            self.store.remove_account(account_id)
        except AccountHasLiveProtections:
            raise AccountInUse(f"{account_title(account)}: a protection became live; not removed") from None
        session = self.session(account_id)
        if session is not None:
            self._drop_session(session)
        self.secrets.forget_account(account_id)
        log.info("account %d removed: %s", account_id, account_title(account))

    def _drop_session(self, session: AccountSession) -> None:
        """Stop a session's feed and detach it from the service (it emits nothing any more)."""
        session.stop_feed()
        for signal in (session.state_changed, session.logged_in):
            try:
                signal.disconnect()
            except (RuntimeError, TypeError):
                pass  # nothing was connected
        self.service.sessions.pop(session.account_id, None)


def _protections(count: int, adjective: str = "") -> str:
    words = [str(count), *([adjective] if adjective else []), "protection" if count == 1 else "protections"]
    return " ".join(words)
