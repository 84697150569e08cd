"""Accounts in the protections' database: the broker, label and endpoints of each (never a secret)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peewee as pw

from trailstop_gui.models import db


@dataclass(frozen=True, slots=True)
class AccountRecord:
    id: int
    broker: str
    label: str
    user_id: str
    api_key: str
    redirect_url: str
    api_root: str
    mode: str = "live"

    @property
    def is_paper(self) -> bool:
        return self.mode == "paper"


class AccountRepository:
    """The account rows. Safe to call from any thread (peewee: one connection per thread)."""

    def __init__(self, database: pw.Database) -> None:
        self._db = database

    def add(
        self,
        broker: str,
        label: str,
        *,
        user_id: str = "",
        api_key: str = "",
        redirect_url: str = "",
        api_root: str = "",
        mode: str = "live",
    ) -> AccountRecord:
        if mode not in ("live", "paper"):
            raise ValueError(f"mode: live or paper, got {mode!r}")
        if not broker.strip():
            raise ValueError("broker: must not be empty")
        if not label.strip():
            raise ValueError("label: must not be empty")
        with self._db.atomic():
            row = db.Account.create(
                broker=broker.strip(),
                label=label.strip(),
                user_id=user_id,
                api_key=api_key,
                redirect_url=redirect_url,
                api_root=api_root,
                mode=mode,
            )
        return _record(row)

    def all(self) -> list[AccountRecord]:
        return [_record(row) for row in db.Account.select().order_by(db.Account.id)]

    def get(self, account_id: int) -> AccountRecord:
        row = db.Account.get_or_none(db.Account.id == account_id)
        if row is None:
            raise KeyError(f"account {account_id} does not exist")
        return _record(row)

    def update(self, account_id: int, **fields: str) -> AccountRecord:
        allowed = {"label", "user_id", "api_key", "redirect_url", "api_root", "mode"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"account: cannot change {', '.join(sorted(unknown))}")
        with self._db.atomic():
            db.Account.update(**fields).where(db.Account.id == account_id).execute()
        return self.get(account_id)

    def delete(self, account_id: int) -> None:
        """The account row alone; its protections must be gone first (they refer to it: RESTRICT)."""
        db.Account.delete().where(db.Account.id == account_id).execute()


def _record(row: Any) -> AccountRecord:
    return AccountRecord(
        id=row.id,
        broker=row.broker,
        label=row.label,
        user_id=row.user_id,
        api_key=row.api_key,
        redirect_url=row.redirect_url,
        api_root=row.api_root,
        mode=row.mode,
    )
