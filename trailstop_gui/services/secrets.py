"""API secrets and access tokens, kept in the OS keyring and nowhere else.

Where the OS has no keyring (a headless Linux box, CI), keyring raises NoKeyringError. Then the values live
in this process's memory only, and ``persistent`` is False so the app can say so plainly: a simulator or
demo session works, but a real login will be asked for again after a restart.
"""

from __future__ import annotations

import logging
import threading

import keyring
from keyring.errors import KeyringError, NoKeyringError, PasswordDeleteError

log = logging.getLogger("trailstop.secrets")

SERVICE = "trailstop"


class SecretStore:
    """Per-account secrets: ``api_secret`` and ``access_token``."""

    KINDS = ("api_secret", "access_token", "route_password")  # route_password: the order route's proxy

    def __init__(self, service: str = SERVICE) -> None:
        self.service = service
        self._memory: dict[str, str] = {}
        self._lock = threading.Lock()
        self.persistent = True

    @staticmethod
    def _name(account_id: int, kind: str) -> str:
        if kind not in SecretStore.KINDS:
            raise ValueError(f"secret kind: one of {', '.join(SecretStore.KINDS)}, got {kind!r}")
        return f"account-{account_id}/{kind}"

    def _fallback(self, exc: Exception) -> None:
        if self.persistent:
            # Never the value: only that there is nowhere safe to keep it.
            log.warning(
                "no usable OS keyring (%s): secrets are kept in memory for this run only", type(exc).__name__
            )
        self.persistent = False

    def set(self, account_id: int, kind: str, value: str) -> None:
        name = self._name(account_id, kind)
        with self._lock:
            self._memory[name] = value
        if not self.persistent:
            return
        try:
            keyring.set_password(self.service, name, value)
        except (NoKeyringError, KeyringError, RuntimeError) as exc:
            self._fallback(exc)

    def get(self, account_id: int, kind: str) -> str | None:
        name = self._name(account_id, kind)
        with self._lock:
            if name in self._memory:
                return self._memory[name]
        if not self.persistent:
            return None
        try:
            value = keyring.get_password(self.service, name)
        except (NoKeyringError, KeyringError, RuntimeError) as exc:
            self._fallback(exc)
            return None
        if value is not None:
            with self._lock:
                self._memory[name] = value
        return value

    def probe(self) -> bool:
        """Whether secrets outlive this run: asks the keyring once (reads a name nobody stores), so that
        every window says the same thing before the first secret is saved."""
        if self.persistent:
            try:
                keyring.get_password(self.service, "probe")
            except (NoKeyringError, KeyringError, RuntimeError) as exc:
                self._fallback(exc)
        return self.persistent

    def delete(self, account_id: int, kind: str) -> None:
        name = self._name(account_id, kind)
        with self._lock:
            self._memory.pop(name, None)
        if not self.persistent:
            return
        try:
            keyring.delete_password(self.service, name)
        except PasswordDeleteError:
            pass
        except (NoKeyringError, KeyringError, RuntimeError) as exc:
            self._fallback(exc)

    def forget_account(self, account_id: int) -> None:
        for kind in self.KINDS:
            self.delete(account_id, kind)
