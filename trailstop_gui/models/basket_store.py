"""Durable baskets: their rules, members, lock and state, beside the protections; every change journalled.

A basket's breach is committed (ACTIVE -> TRIGGERED, compare-and-set) before any member is exited, as a
protection's TRIGGERED is: after a crash mid-exit, a TRIGGERED basket tells the services to finish it.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import date, datetime, time

from trailstop_gui.models import db
from trailstop_gui.models.basket import BasketRules
from trailstop_gui.models.domain import Protection, Status
from trailstop_gui.models.square_off import format_exit_time, parse_exit_time, to_ist
from trailstop_gui.models.store import ConcurrentTransition, ProtectionStore

ALL_POSITIONS = "all"


class BasketStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    TRIGGERED = "TRIGGERED"  # breached: its members are being exited
    EXITED = "EXITED"  # every member ended
    REMOVED = "REMOVED"  # the trader took the basket away; members keep their own stops


@dataclass(frozen=True, slots=True)
class Basket:
    id: int
    account_id: int
    name: str
    rules: BasketRules
    status: BasketStatus
    members: tuple[int, ...]
    whole_account: bool = False
    selectors: tuple[tuple[str, str], ...] = ()  # (exchange, symbol) that join as they are protected
    reason: str = ""
    best: float | None = None
    lock: float | None = None
    breach_mtm: float | None = None
    created_at: datetime | None = None
    square_off: time | None = None


def realised_today(p: Protection, today: date) -> float:
    """Rupees a member's own exit realised today (0 without a known exit price: closed outside).

    ``today`` is the trading day in IST; ``closed_at`` is the machine's local time (a VPS keeps UTC, where an
    exit at 00:15 IST on the 7th is stamped 18:45 on the 6th), so it is taken to IST before the dates meet.
    """
    closed = p.closed_at
    if p.status is not Status.CLOSED or closed is None or to_ist(closed).date() != today:
        return 0.0
    if p.exit_price is None or p.entry_price is None or not p.exit_quantity:
        return 0.0
    move = p.exit_price - p.entry_price if p.side.is_long else p.entry_price - p.exit_price
    return move * p.exit_quantity


class BasketStore:
    """Baskets in the protections' database. Safe to call from any thread (peewee: one connection each)."""

    def __init__(self, store: ProtectionStore) -> None:
        self.store = store

    # ----------------------------------------------------------------- creating and changing

    def create(
        self,
        account_id: int,
        name: str,
        rules: BasketRules,
        members: list[int] | tuple[int, ...] = (),
        *,
        whole_account: bool = False,
        selectors: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    ) -> Basket:
        """Store a new ACTIVE basket. Members must be live protections of the account; nothing is written
        if any is not."""
        name = str(name).strip()
        if not name:
            raise ValueError("name: a basket needs a name")
        if not isinstance(rules, BasketRules):
            raise ValueError(f"rules: expected basket rules, got {rules!r}")
        if db.Account.get_or_none(db.Account.id == account_id) is None:
            raise ValueError(f"account: no account with id {account_id}")
        self._check_members(account_id, members)
        if not members and not whole_account and not selectors:
            raise ValueError("members: a basket needs members, symbols that join, or the whole account")
        now = datetime.now()
        with db.database.atomic():
            row = db.BasketRow.create(
                account=account_id,
                name=name,
                rules=json.dumps(rules.to_dict()),
                selectors=json.dumps(ALL_POSITIONS if whole_account else [list(s) for s in selectors]),
                status=BasketStatus.ACTIVE.value,
                created_at=now,
                updated_at=now,
            )
            for pid in dict.fromkeys(members):
                db.BasketMemberRow.create(basket=row.id, protection=pid)
            self.store._journal(None, account_id, "basket_created", "", name, None, rules.describe())
        return self.get(row.id)

    def _check_members(self, account_id: int, members: list[int] | tuple[int, ...]) -> None:
        for pid in members:
            p = self.store.get(pid)  # KeyError names an unknown one
            if p.account_id != account_id:
                raise ValueError(f"members: protection {pid} belongs to another account")
            if p.status not in (Status.PENDING, Status.OPEN):
                raise ValueError(f"members: protection {pid} ({p.symbol}) is {p.status.value}, not live")

    def add_members(self, basket_id: int, members: list[int] | tuple[int, ...]) -> Basket:
        """Join live protections to an ACTIVE basket (already members are left as they are)."""
        basket = self.get(basket_id)
        new = [pid for pid in dict.fromkeys(members) if pid not in basket.members]
        if not new:
            return basket
        if basket.status is not BasketStatus.ACTIVE:
            raise ConcurrentTransition(f"basket {basket_id}: is {basket.status.value}, members are fixed")
        self._check_members(basket.account_id, new)
        with db.database.atomic():
            for pid in new:
                db.BasketMemberRow.insert(basket=basket_id, protection=pid).on_conflict_ignore().execute()
                self.store._journal(pid, basket.account_id, "basket_joined", "", basket.name, None, "")
        return self.get(basket_id)

    def set_rules(self, basket_id: int, rules: BasketRules) -> Basket:
        basket = self.get(basket_id)
        if basket.status is not BasketStatus.ACTIVE:
            raise ConcurrentTransition(f"basket {basket_id}: is {basket.status.value}, its rules are fixed")
        with db.database.atomic():
            db.BasketRow.update(rules=json.dumps(rules.to_dict()), updated_at=datetime.now()).where(
                db.BasketRow.id == basket_id
            ).execute()
            self.store._journal(
                None,
                basket.account_id,
                "basket_rules",
                basket.rules.describe(),
                rules.describe(),
                None,
                basket.name,
            )
        return self.get(basket_id)

    def set_square_off(self, basket_id: int, at: time | str | None) -> Basket:
        """The time (HH:MM IST) the whole basket exits, or None for none."""
        basket = self.get(basket_id)
        parsed = None if at in (None, "") else parse_exit_time(at, "square-off time")
        text = "" if parsed is None else format_exit_time(parsed)
        old = "" if basket.square_off is None else format_exit_time(basket.square_off)
        if text != old:
            with db.database.atomic():
                db.BasketRow.update(square_off=text, updated_at=datetime.now()).where(
                    db.BasketRow.id == basket_id
                ).execute()
                self.store._journal(
                    None, basket.account_id, "basket_square_off", old, text, None, basket.name
                )
        return self.get(basket_id)

    def record_lock(self, basket_id: int, best: float, lock: float | None) -> None:
        """Keep the best MTM and the lock (a restart goes on from them; the lock never goes down)."""
        row = db.BasketRow.get_by_id(basket_id)
        if lock is not None and row.lock is not None and lock < row.lock:
            lock = row.lock
        with db.database.atomic():
            db.BasketRow.update(best=best, lock=lock, updated_at=datetime.now()).where(
                db.BasketRow.id == basket_id
            ).execute()
            if lock is not None and lock != row.lock:
                self.store._journal(None, row.account_id, "basket_lock", row.lock, lock, best, row.name)

    def trigger(self, basket_id: int, reason: str, mtm: float, members: list[int]) -> Basket:
        """ACTIVE -> TRIGGERED, committed with the members it will exit (the joiners of this moment)."""
        with db.database.atomic():
            row = db.BasketRow.get_by_id(basket_id)
            changed = (
                db.BasketRow.update(
                    status=BasketStatus.TRIGGERED.value,
                    reason=reason,
                    breach_mtm=mtm,
                    updated_at=datetime.now(),
                )
                .where((db.BasketRow.id == basket_id) & (db.BasketRow.status == BasketStatus.ACTIVE.value))
                .execute()
            )
            if changed != 1:
                raise ConcurrentTransition(f"basket {basket_id}: not ACTIVE any more")
            for pid in members:
                db.BasketMemberRow.insert(basket=basket_id, protection=pid).on_conflict_ignore().execute()
            self.store._journal(None, row.account_id, "basket_triggered", "ACTIVE", "TRIGGERED", mtm, reason)
        return self.get(basket_id)

    def finish(self, basket_id: int) -> Basket:
        """TRIGGERED -> EXITED once every member has ended."""
        self._move(basket_id, BasketStatus.TRIGGERED, BasketStatus.EXITED, "basket_exited")
        return self.get(basket_id)

    def remove(self, basket_id: int) -> Basket:
        """ACTIVE -> REMOVED: the members stay protected by their own stops."""
        self._move(basket_id, BasketStatus.ACTIVE, BasketStatus.REMOVED, "basket_removed")
        return self.get(basket_id)

    def _move(self, basket_id: int, current: BasketStatus, target: BasketStatus, kind: str) -> None:
        with db.database.atomic():
            row = db.BasketRow.get_by_id(basket_id)
            now = datetime.now()
            changed = (
                db.BasketRow.update(status=target.value, updated_at=now, closed_at=now)
                .where((db.BasketRow.id == basket_id) & (db.BasketRow.status == current.value))
                .execute()
            )
            if changed != 1:
                raise ConcurrentTransition(f"basket {basket_id}: is {row.status}, expected {current.value}")
            self.store._journal(None, row.account_id, kind, current.value, target.value, None, row.name)

    # ----------------------------------------------------------------- reading

    def get(self, basket_id: int) -> Basket:
        row = db.BasketRow.get_or_none(db.BasketRow.id == basket_id)
        if row is None:
            raise KeyError(f"basket {basket_id} does not exist")
        return self._basket(row)

    def baskets(
        self, statuses: list[BasketStatus] | None = None, account_id: int | None = None
    ) -> list[Basket]:
        query = db.BasketRow.select().order_by(db.BasketRow.id)
        if statuses is not None:
            query = query.where(db.BasketRow.status.in_([s.value for s in statuses]))
        if account_id is not None:
            query = query.where(db.BasketRow.account == account_id)
        return [self._basket(row) for row in query]

    def find(self, account_id: int, name: str) -> list[Basket]:
        """Every basket of the account with this name, oldest first."""
        query = (
            db.BasketRow.select()
            .where((db.BasketRow.account == account_id) & (db.BasketRow.name == name))
            .order_by(db.BasketRow.id)
        )
        return [self._basket(row) for row in query]

    def baskets_of(self, protection_id: int) -> list[Basket]:
        rows = db.BasketMemberRow.select().where(db.BasketMemberRow.protection == protection_id)
        return [self.get(row.basket_id) for row in rows]

    @staticmethod
    def _basket(row: db.BasketRow) -> Basket:
        members = tuple(
            m.protection_id
            for m in db.BasketMemberRow.select()
            .where(db.BasketMemberRow.basket == row.id)
            .order_by(db.BasketMemberRow.id)
        )
        raw = json.loads(row.selectors)
        whole = raw == ALL_POSITIONS
        selectors = () if whole else tuple((str(e), str(s)) for e, s in raw)
        return Basket(
            id=row.id,
            account_id=row.account_id,
            name=row.name,
            rules=BasketRules.from_dict(json.loads(row.rules)),
            status=BasketStatus(row.status),
            members=members,
            whole_account=whole,
            selectors=selectors,
            reason=row.reason,
            best=row.best,
            lock=row.lock,
            breach_mtm=row.breach_mtm,
            created_at=row.created_at,
            square_off=parse_exit_time(row.square_off) if row.square_off else None,
        )
