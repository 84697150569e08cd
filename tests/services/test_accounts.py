"""Accounts: validation naming the field, secrets only in the keyring, removal rules, the login policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from tests.conftest import MemoryKeyring
from tests.factories import protection
from trailstop_gui.models.domain import Status
from trailstop_gui.models.store import AccountRecord, ProtectionStore
from trailstop_gui.services.accounts import (
    AccountInput,
    AccountInUse,
    AccountManager,
    LoginPolicy,
    ValidationError,
    account_title,
    origin_of,
    validate,
)
from trailstop_gui.services.protection_service import ProtectionService
from trailstop_gui.services.secrets import SecretStore

KITE_SECRET = "s3cr3tkitesecretvalue0123456789a"
UPSTOX_SECRET = "upx9secret"


def kite_input(**changes: str) -> AccountInput:
    fields = dict(
        broker="kite",
        label="Zerodha",
        api_key="abcd1234efgh5678",
        api_secret=KITE_SECRET,
        redirect_url="https://127.0.0.1:5000/callback",
        user_id="ab1234",
    )
    fields.update(changes)
    return AccountInput(**fields)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"api_key": ""}, "api_key", "API key: must not be empty"),
        ({"api_key": "abc def 123"}, "api_key", "API key: letters and digits only"),
        ({"api_secret": "  "}, "api_secret", "API secret: must not be empty"),
        ({"api_secret": "has space inside"}, "api_secret", "API secret: no spaces"),
        ({"redirect_url": ""}, "redirect_url", "Redirect URL: must not be empty"),
        ({"redirect_url": "127.0.0.1/callback"}, "redirect_url", "Redirect URL: must start with https://"),
        ({"redirect_url": "ftp://127.0.0.1/cb"}, "redirect_url", "Redirect URL: must start with https://"),
        ({"redirect_url": "http://example.com/cb"}, "redirect_url", "Redirect URL: use https://"),
        ({"redirect_url": "https://u:p@example.com/cb"}, "redirect_url", "Redirect URL: must not contain"),
        ({"redirect_url": "https://example.com/cb#x"}, "redirect_url", "Redirect URL: must not contain a #"),
        ({"redirect_url": "https://example.com:99999/cb"}, "redirect_url", "Redirect URL: not a valid URL"),
        ({"user_id": "AB 12"}, "user_id", "User ID: 2 to 20 letters and digits"),
        ({"label": "x" * 41}, "label", "Label: at most 40 characters"),
    ],
)
def test_validation_names_the_field(changes: dict[str, str], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate(kite_input(**changes))
    assert caught.value.field == field
    assert str(caught.value).startswith(message)
    assert KITE_SECRET not in str(caught.value)


def test_upstox_fields_use_upstox_words() -> None:
    base = dict(broker="upstox", label="", api_secret="x", redirect_url="https://127.0.0.1/cb")
    with pytest.raises(ValidationError, match=r"^Client ID: must not be empty"):
        validate(AccountInput(api_key="", **base))
    with pytest.raises(ValidationError, match=r"^Client secret: must not be empty"):
        validate(AccountInput(api_key="1a2b3c4d-aaaa-bbbb-cccc-0123456789ab", **{**base, "api_secret": ""}))


def test_validation_cleans_the_input() -> None:
    clean = validate(kite_input(label="  my   main  ", api_key=" abcd1234efgh5678 ", user_id=" ab1234 "))
    assert (clean.label, clean.api_key, clean.user_id) == ("my main", "abcd1234efgh5678", "AB1234")
    assert validate(kite_input(label="")).label == "Zerodha"
    assert validate(kite_input(redirect_url="http://localhost:8000/cb")).redirect_url.startswith("http://")
    assert validate(kite_input(api_secret=""), require_secret=False).api_secret == ""
    assert KITE_SECRET not in repr(kite_input())


# ----------------------------------------------------------------------------- where a login may go


def account(broker: str, redirect: str, api_root: str = "") -> AccountRecord:
    return AccountRecord(1, broker, "x", "", "key", redirect, api_root)


def test_kite_policy_allows_only_kite_hosts_over_https() -> None:
    policy = LoginPolicy.for_account(account("kite", "https://127.0.0.1:5000/cb"))
    for url in (
        "https://kite.zerodha.com/connect/login?api_key=x&v=3",
        "https://kite.trade/connect/login?api_key=x",
        "https://auth.kite.zerodha.com/x",
        "https://KITE.ZERODHA.COM/",
        "about:blank",
    ):
        assert policy.allows(url), url
    for url in (
        "http://kite.zerodha.com/connect/login",  # not https
        "https://kite.zerodha.com.evil.example/",
        "https://evilkite.trade/",
        "https://zerodha.com/",
        "https://api.upstox.com/",
        "http://127.0.0.1:5000/",
        "http://example.invalid/",
        "data:text/html,<form>",
        "javascript:alert(1)",
        "file:///etc/passwd",
    ):
        assert not policy.allows(url), url


def test_upstox_policy_allows_its_login_hosts_only() -> None:
    policy = LoginPolicy.for_account(account("upstox", "https://127.0.0.1/cb"))
    for url in (
        "https://api.upstox.com/v2/login/authorization/dialog",
        "https://login.upstox.com/",
    ):
        assert policy.allows(url), url
    for url in (
        "https://upstox.com.evil.example/",
        "https://notupstox.com/",
        "http://login.upstox.com/",
        "https://x.upstox.com/",  # not a login host: narrowed from every *.upstox.com
        "https://upstox.com/",
    ):
        assert not policy.allows(url), url
    assert policy.describe() == "api.upstox.com, login.upstox.com"


def test_requests_inside_the_page_follow_the_same_hosts() -> None:
    policy = LoginPolicy.for_account(account("kite", "http://127.0.0.1:5000/cb"))
    for url in (
        "https://kite.zerodha.com/static/app.js",
        "wss://kite.zerodha.com/socket",
        "data:image/png;base64,AAAA",
        "blob:https://kite.zerodha.com/1234",
        "http://127.0.0.1:5000/cb?request_token=x",  # the redirect: the view reads it, never loads it
    ):
        assert policy.allows_request(url), url
    for url in (
        "https://evil.example/collect",
        "wss://evil.example/socket",
        "ws://kite.zerodha.com/socket",  # not encrypted
        "http://127.0.0.1:5001/",
        "file:///etc/passwd",
    ):
        assert not policy.allows_request(url), url


def test_simulator_policy_allows_exactly_its_origin() -> None:
    policy = LoginPolicy.for_account(
        account("kite", "http://127.0.0.1:4000/redirect/kite", "http://127.0.0.1:4000")
    )
    assert policy.allows("http://127.0.0.1:4000/connect/login?api_key=x")
    for url in (
        "http://127.0.0.1:4001/connect/login",
        "http://127.0.0.2:4000/",
        "https://127.0.0.1:4000/",
        "http://localhost:4000/",
        "https://kite.zerodha.com/connect/login",
    ):
        assert not policy.allows(url), url


def test_redirect_is_an_exact_scheme_host_port_path_match() -> None:
    policy = LoginPolicy.for_account(account("kite", "https://127.0.0.1:5000/callback"))
    assert policy.is_redirect("https://127.0.0.1:5000/callback?request_token=abc&status=success")
    assert policy.is_redirect("https://127.0.0.1:5000/callback/?request_token=abc")
    for url in (
        "https://127.0.0.1:5000/other?request_token=abc",
        "https://127.0.0.1:5000/callback/more?request_token=abc",
        "https://127.0.0.1:5001/callback?request_token=abc",
        "http://127.0.0.1:5000/callback?request_token=abc",
        "https://127.0.0.2:5000/callback?request_token=abc",
        "https://kite.zerodha.com/callback?request_token=abc",
    ):
        assert not policy.is_redirect(url), url
    default_port = LoginPolicy.for_account(account("kite", "https://example.com/cb"))
    assert default_port.is_redirect("https://example.com:443/cb?request_token=x")
    assert LoginPolicy.params("https://x/cb?request_token=a%2Bb&status=success&status=x") == {
        "request_token": "a+b",
        "status": "success",
    }


def test_origin_of_never_shows_the_path_or_query() -> None:
    assert origin_of("http://127.0.0.2:8080/steal?request_token=SECRET") == "http://127.0.0.2:8080"
    assert origin_of("https://kite.zerodha.com/connect/login?api_key=x") == "https://kite.zerodha.com"
    assert "SECRET" not in origin_of("data:text/html,SECRET")


# ----------------------------------------------------------------------------- the manager


@pytest.fixture
def rig(tmp_path: Path, qtbot: QtBot) -> Iterator[tuple[ProtectionStore, SecretStore, ProtectionService]]:
    store = ProtectionStore(tmp_path / "accounts.db")
    service = ProtectionService(store)
    yield store, SecretStore(), service
    service.shutdown()
    store.close()


def db_bytes(store: ProtectionStore) -> bytes:
    store.flush()
    return b"".join(p.read_bytes() for p in Path(store.path).parent.glob(Path(store.path).name + "*"))


def open_protection(store: ProtectionStore, account_id: int) -> int:
    return protection(store, account_id, quantity=1, entry_price=100.0).id


def test_add_keeps_the_secret_in_the_keyring_only(rig, memory_keyring: MemoryKeyring) -> None:  # type: ignore[no-untyped-def]
    store, secrets, service = rig
    manager = AccountManager(store, secrets, service)
    added = manager.add(kite_input())
    assert (added.broker, added.label, added.user_id, added.api_key) == (
        "kite",
        "Zerodha",
        "AB1234",
        "abcd1234efgh5678",
    )
    assert memory_keyring.passwords[("trailstop", f"account-{added.id}/api_secret")] == KITE_SECRET
    assert KITE_SECRET.encode() not in db_bytes(store)
    assert service.sessions[added.id].account == added
    assert account_title(added) == "Zerodha (AB1234)"
    with pytest.raises(ValidationError, match="API secret"):
        manager.add(kite_input(api_secret=""))
    assert len(store.accounts()) == 1  # nothing stored for the refused one


def test_update_keeps_or_replaces_the_secret(rig, memory_keyring: MemoryKeyring) -> None:  # type: ignore[no-untyped-def]
    store, secrets, service = rig
    manager = AccountManager(store, secrets, service)
    added = manager.add(kite_input())
    session = service.sessions[added.id]
    secrets.set(added.id, "access_token", "tok")
    changed = manager.update(added.id, kite_input(label="Main", api_secret=""))
    assert changed.label == "Main" and secrets.get(added.id, "api_secret") == KITE_SECRET
    assert service.sessions[added.id] is session and session.account.label == "Main"
    assert secrets.get(added.id, "access_token") == "tok"  # a label change keeps the login
    manager.update(added.id, kite_input(api_secret="n3wsecret"))
    assert memory_keyring.passwords[("trailstop", f"account-{added.id}/api_secret")] == "n3wsecret"
    # A new API key belongs to another app: the old login ends, a new session replaces the old one.
    manager.update(added.id, kite_input(api_key="zzzz1234zzzz5678", api_secret=""))
    assert secrets.get(added.id, "access_token") is None
    assert service.sessions[added.id] is not session
    assert service.sessions[added.id].account.api_key == "zzzz1234zzzz5678"
    with pytest.raises(ValidationError, match="^Broker"):
        manager.update(added.id, AccountInput("upstox", "x", "abcdef12", "", "https://127.0.0.1/cb"))


def test_app_change_refused_while_protections_are_live(rig) -> None:  # type: ignore[no-untyped-def]
    store, secrets, service = rig
    manager = AccountManager(store, secrets, service)
    added = manager.add(kite_input())
    open_protection(store, added.id)
    with pytest.raises(
        ValidationError, match=r"^API key: cannot change while 1 protection is live"
    ) as caught:
        manager.update(added.id, kite_input(api_key="zzzz1234zzzz5678"))
    assert caught.value.field == "api_key"
    with pytest.raises(ValidationError, match=r"^Redirect URL: cannot change"):
        manager.update(added.id, kite_input(redirect_url="https://127.0.0.1:5000/other"))
    assert manager.update(added.id, kite_input(label="Still fine")).label == "Still fine"


def test_remove_refused_while_live_then_removes_everything(rig, memory_keyring: MemoryKeyring) -> None:  # type: ignore[no-untyped-def]
    store, secrets, service = rig
    manager = AccountManager(store, secrets, service)
    added = manager.add(kite_input())
    other = manager.add(kite_input(label="Other", api_secret="othersecret"))
    secrets.set(added.id, "access_token", "tok")
    pid = open_protection(store, added.id)
    kept = open_protection(store, other.id)
    assert manager.removal_check(added.id) == (1, 0)
    with pytest.raises(AccountInUse, match=r"Zerodha \(AB1234\) has 1 live protection"):
        manager.remove(added.id)
    assert store.account(added.id) == added and added.id in service.sessions
    store.transition(pid, Status.REMOVED, reason="test")
    assert manager.removal_check(added.id) == (0, 1)
    manager.remove(added.id)
    assert [a.id for a in store.accounts()] == [other.id]
    assert added.id not in service.sessions and other.id in service.sessions
    assert not any(name.startswith(f"account-{added.id}/") for _svc, name in memory_keyring.passwords)
    assert store.events(account_id=added.id) == []
    assert store.get(kept).status is Status.OPEN


def test_record_login_fills_a_missing_user_id(rig) -> None:  # type: ignore[no-untyped-def]
    store, secrets, service = rig
    manager = AccountManager(store, secrets, service)
    added = manager.add(kite_input(user_id=""))
    assert account_title(added) == "Zerodha"
    assert manager.record_login(added.id, "xy9876").user_id == "XY9876"
    assert service.sessions[added.id].account.user_id == "XY9876"
    assert manager.record_login(added.id, "ZZ0000").user_id == "XY9876"  # never overwritten
