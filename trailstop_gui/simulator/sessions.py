"""Login codes and access tokens the simulator issues, per broker."""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_ALPHANUM = string.ascii_letters + string.digits
LOGIN_CODE_TTL = 300.0  # a request_token / code must be redeemed within five minutes, once


def random_token(length: int = 32) -> str:
    return "".join(secrets.choice(_ALPHANUM) for _ in range(length))


@dataclass(slots=True)
class Session:
    """One login: the code the redirect carried and the access token it was exchanged for."""

    broker: str
    user_id: str
    client_id: str  # Kite api_key or Upstox client_id
    login_code: str  # Kite request_token or Upstox code
    issued_at: float
    access_token: str | None = None
    public_token: str | None = None
    redeemed_at: float | None = None
    expired: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        code_name = "request_token" if self.broker == "kite" else "code"
        return {
            "broker": self.broker,
            "user_id": self.user_id,
            "client_id": self.client_id,
            code_name: self.login_code,
            "access_token": self.access_token,
            "public_token": self.public_token,
            "issued_at": self.issued_at,
            "redeemed_at": self.redeemed_at,
            "expired": self.expired,
        }


class Sessions:
    """Issues one-time login codes, exchanges them for access tokens and checks tokens."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._by_code: dict[tuple[str, str], Session] = {}
        self._by_token: dict[tuple[str, str], Session] = {}
        self._all: list[Session] = []

    def issue_code(self, broker: str, user_id: str, client_id: str) -> str:
        code = random_token(32) if broker == "kite" else random_token(6)
        session = Session(broker, user_id, client_id, code, self._clock())
        self._by_code[(broker, code)] = session
        self._all.append(session)
        return code

    def redeem(
        self, broker: str, code: str, client_id: str, make_token: Callable[[], str] | None = None
    ) -> Session | None:
        """Exchange a login code for a new access token; None when the code is unknown, used or stale."""
        session = self._by_code.pop((broker, code), None)
        if session is None or session.client_id != client_id:
            return None
        if self._clock() - session.issued_at > LOGIN_CODE_TTL:
            return None
        session.access_token = make_token() if make_token else random_token(32)
        session.public_token = random_token(32)
        session.redeemed_at = self._clock()
        self._by_token[(broker, session.access_token)] = session
        return session

    def validate(self, broker: str, access_token: str, client_id: str | None = None) -> Session | None:
        session = self._by_token.get((broker, access_token))
        if session is None or session.expired:
            return None
        if client_id is not None and session.client_id != client_id:
            return None
        return session

    def invalidate(self, broker: str, access_token: str) -> bool:
        session = self._by_token.get((broker, access_token))
        if session is None or session.expired:
            return False
        session.expired = True
        return True

    def expire_all(self, broker: str | None = None) -> list[Session]:
        expired = []
        for session in self._by_token.values():
            if not session.expired and broker in (None, session.broker):
                session.expired = True
                expired.append(session)
        return expired

    def all(self) -> list[Session]:
        return list(self._all)
