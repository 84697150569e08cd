"""The protection repository: durable transitions, write-behind stop updates, the journal.

``ProtectionStore`` is also the one door to the rest of the database: accounts (account_store.py),
settings (settings_store.py) and the instrument master (instrument_store.py) are small repositories of
their own over the same SQLite file, reached through it (``store.account(...)``) or directly
(``store.accounts_repo``). Nothing outside ``models`` writes SQL.

Two kinds of write, on purpose:
- Transitions (PENDING -> OPEN -> TRIGGERED -> ...) commit before ``transition`` returns. An exit is only
  sent after TRIGGERED is on disk, so a restart can never send a second one.
- Stop moves are write-behind: the latest stop per protection is kept in memory and flushed in one
  transaction within ``flush_interval`` (and on close). A tick path that waited on fsync would be slow;
  losing the last fraction of a second of trail in a crash costs far less.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import peewee as pw

from trailstop_gui.models import db, prepared_sql
from trailstop_gui.models.account_store import AccountRecord, AccountRepository
from trailstop_gui.models.domain import (
    SAFETY_BUFFER_PERCENT,
    SAFETY_BUFFER_TICKS,
    Product,
    Protection,
    SafetyKind,
    SafetyState,
    Side,
    Status,
    TrailRule,
    check_safety_buffer,
    require_positive,
    require_positive_int,
)
from trailstop_gui.models.engine import checked_initial_stop
from trailstop_gui.models.instrument_store import InstrumentRecord, InstrumentRepository
from trailstop_gui.models.lifecycle import LIVE, TERMINAL, IllegalTransition, check_transition
from trailstop_gui.models.settings_store import SettingsRepository

__all__ = [
    "AccountRecord",
    "AccountHasLiveProtections",
    "ConcurrentTransition",
    "InstrumentRecord",
    "JournalEntry",
    "ProtectionEnded",
    "ProtectionStore",
    "TransitionRequest",
]

log = logging.getLogger("trailstop.store")

MAX_TAG_LENGTH = 20  # Kite's limit; Upstox allows more
TAG_ID_WIDTH = 6  # base-36 digits of the protection id in an exit tag: two billion protections


class ConcurrentTransition(RuntimeError):
    """Another thread moved the protection on first; the caller's view of it is stale."""


class ProtectionEnded(ConcurrentTransition, ValueError):
    """The protection is closed, cancelled or rejected: nothing about it can change any more.

    A ValueError for a trader's edit of an ended row (the window shows the message); a
    ConcurrentTransition for a service that read it live a moment ago (an exit closed it meanwhile).
    """


class AccountHasLiveProtections(RuntimeError):
    """An account with live protections cannot be removed: nothing would watch them any more."""


@dataclass(frozen=True, slots=True)
class TransitionRequest:
    """One move of :meth:`ProtectionStore.transition_many`, with :meth:`~ProtectionStore.transition`'s
    arguments."""

    protection_id: int
    target: Status
    expected: Status | Sequence[Status] | None = None
    reason: str | None = None
    price: float | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    # Journal events (kind, message) written with the transition, in its savepoint: they commit with it
    # or not at all (the exit path's "exit_sending" marker rides on the TRIGGERED commit: one fsync).
    events: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class JournalEntry:
    id: int
    ts: datetime
    protection_id: int | None
    account_id: int | None
    kind: str
    old: str
    new: str
    price: float | None
    message: str


# Fields a transition or an update may change; everything else is fixed at creation.
_MUTABLE = frozenset(
    {
        "quantity",
        "filled_quantity",
        "entry_order_id",
        "entry_price",
        "rule",
        "tick_size",
        "stop",
        "peak",
        "reason",
        "paused",
        "exit_order_id",
        "exit_price",
        "exit_quantity",
        *(
            "safety_enabled",
            "safety_buffer_percent",
            "safety_buffer_ticks",
            "safety_state",
            "safety_kind",
            "safety_order_id",
            "safety_level",
            "safety_price",
            "safety_quantity",
            "safety_modifications",
        ),
    }
)
# The safety stop's own fields: ``update_safety`` may change them even after the protection has ended
# (a broker-held stop is cleaned up after its protection closed).
_SAFETY_FIELDS = frozenset(name for name in _MUTABLE if name.startswith("safety_"))


def kept_connection() -> AbstractContextManager[None]:
    """For a pool task: its OS thread's connection, kept from the task before it for the next one
    (``SerialWriteDatabase.kept_connection``)."""
    return db.database.kept_connection()


def _text(value: object) -> str:
    return "" if value is None else str(value)


class ProtectionStore:
    """Durable protections and their journal in one SQLite file. Safe to call from any thread."""

    def __init__(self, path: str | os.PathLike[str], *, flush_interval: float = 0.1) -> None:
        if not 0 < flush_interval <= 0.25:
            raise ValueError(f"flush interval: must be in (0, 0.25] seconds, got {flush_interval!r}")
        self.path = os.fspath(path)
        self._db = db.init_db(self.path)
        self._salt = db.tag_salt()
        self.accounts_repo = AccountRepository(self._db)
        self.settings_repo = SettingsRepository(self._db)
        self.instruments_repo = InstrumentRepository(self._db)
        self._lock = threading.Lock()
        # One flush at a time: close()'s last flush racing the flusher's wrote an older move after a newer
        # one (found by make chaos-safety: a SIGTERM mid-trail, "stop moved against the trader").
        self._flush_lock = threading.Lock()
        # protection id -> (stop before the first unflushed move, latest stop, latest peak)
        self._pending: dict[int, tuple[float, float, float | None]] = {}
        # The batch a flush is writing right now: readers still see it until it is committed (without
        # it, a read in between would find neither the pending move nor the new row, only the old stop).
        self._inflight: dict[int, tuple[float, float, float | None]] = {}
        self._flush_interval = flush_interval
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="store-flusher", daemon=True)
        self._flusher.start()

    # ----------------------------------------------------------------- lifecycle of the store itself

    def close(self) -> None:
        """Flush pending stop moves and close this thread's connection."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._wake.set()
        self._flusher.join(timeout=5)
        self.flush()
        self._db.close()

    def __enter__(self) -> ProtectionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- accounts (account_store.py)
    # This and the settings and instruments sections below only forward to the repositories: services call
    # ``accounts_repo``, ``settings_repo`` and ``instruments_repo`` themselves; views, runtime and tests
    # still use these short names.

    def add_account(self, broker: str, label: str, **fields: str) -> AccountRecord:
        """A new account; ``fields`` as AccountRepository.add takes them (user_id, api_key, mode...)."""
        return self.accounts_repo.add(broker, label, **fields)

    def accounts(self) -> list[AccountRecord]:
        return self.accounts_repo.all()

    def account(self, account_id: int) -> AccountRecord:
        return self.accounts_repo.get(account_id)

    def update_account(self, account_id: int, **fields: str) -> AccountRecord:
        return self.accounts_repo.update(account_id, **fields)

    def protection_count(self, account_id: int) -> int:
        """Every protection of the account, live or ended."""
        return int(db.ProtectionRow.select().where(db.ProtectionRow.account == account_id).count())

    def remove_account(self, account_id: int) -> None:
        """Remove an account with its ended protections and their journal, in one transaction.

        Raises AccountHasLiveProtections (and removes nothing) while any of its protections is live.
        """
        with self._db.atomic():
            if self.live(account_id):
                raise AccountHasLiveProtections(f"account {account_id} has live protections")
            # Protections refer to their account (RESTRICT): they go first, with their journal (both this
            # store's own tables), then the account's row through its repository, in the one transaction.
            db.JournalEvent.delete().where(db.JournalEvent.account_id == account_id).execute()
            db.ProtectionRow.delete().where(db.ProtectionRow.account == account_id).execute()
            self.accounts_repo.delete(account_id)

    # ----------------------------------------------------------------- protections

    def create_protection(
        self,
        *,
        account_id: int,
        broker: str,
        instrument: str | int,
        symbol: str,
        exchange: str,
        side: Side | str,
        product: Product | str,
        quantity: int,
        tick_size: float,
        rule: TrailRule,
        entry_price: float | None = None,
        filled_quantity: int = 0,
        status: Status = Status.PENDING,
        stop: float | None = None,
        entry_order_id: str | None = None,
        reason: str = "",
        safety_enabled: bool = False,
        safety_buffer_percent: float = SAFETY_BUFFER_PERCENT,
        safety_buffer_ticks: int = SAFETY_BUFFER_TICKS,
    ) -> Protection:
        """Validate everything, then store a new protection. Nothing is written if any field is bad."""
        safety_buffer_percent, safety_buffer_ticks = check_safety_buffer(
            safety_buffer_percent, safety_buffer_ticks
        )
        if not isinstance(safety_enabled, bool):
            raise ValueError(f"safety stop: must be true or false, got {safety_enabled!r}")
        side = Side.parse(side)
        product = Product.parse(product)
        quantity = require_positive_int(quantity, "quantity")
        tick_size = require_positive(tick_size, "tick size")
        if not isinstance(rule, TrailRule):
            raise ValueError(f"rule: expected a trailing rule, got {rule!r}")
        instrument_text = str(instrument).strip()
        if not instrument_text:
            raise ValueError("instrument: must not be empty")
        if not str(symbol).strip():
            raise ValueError("symbol: must not be empty")
        if entry_price is not None:
            entry_price = require_positive(entry_price, "entry price")
        if stop is not None:
            stop = require_positive(stop, "stop")
        elif entry_price is not None:
            stop = checked_initial_stop(side, entry_price, tick_size, rule)
        if not isinstance(filled_quantity, int) or not 0 <= filled_quantity <= quantity:
            raise ValueError(f"filled quantity: must be between 0 and {quantity}, got {filled_quantity!r}")
        status = Status(status)
        if status not in (Status.PENDING, Status.OPEN):
            raise ValueError(f"status: a new protection starts PENDING or OPEN, not {status.value}")
        if status is Status.OPEN and (entry_price is None or filled_quantity == 0):
            raise ValueError("entry price: an OPEN protection needs its entry price and a filled quantity")
        if db.Account.get_or_none(db.Account.id == account_id) is None:
            raise ValueError(f"account: no account with id {account_id}")
        now = datetime.now()
        with self._db.atomic():
            row = db.ProtectionRow.create(
                account=account_id,
                broker=broker,
                instrument=instrument_text,
                symbol=str(symbol).strip(),
                exchange=exchange,
                side=side.value,
                product=product.value,
                quantity=quantity,
                filled_quantity=filled_quantity,
                entry_order_id=entry_order_id,
                entry_price=entry_price,
                tick_size=tick_size,
                rule=json.dumps(rule.to_dict()),
                stop=stop,
                peak=entry_price,
                status=status.value,
                reason=reason,
                created_at=now,
                updated_at=now,
                safety_enabled=safety_enabled,
                safety_buffer_percent=safety_buffer_percent,
                safety_buffer_ticks=safety_buffer_ticks,
                safety_state=(SafetyState.PLACING if safety_enabled else SafetyState.OFF).value,
            )
            row.exit_tag = self.exit_tag_for(row.id)
            row.save(only=[db.ProtectionRow.exit_tag])
            self._journal(row.id, account_id, "created", "", status.value, entry_price, rule.describe())
        return self._protection(row)

    def exit_tag_for(self, protection_id: int) -> str:
        """The one exit tag of a protection: alphanumeric, at most 20 characters, unique per database.

        The id has a fixed width: the entry and safety tags append one letter to the exit tag, and with a
        variable width protection 1's safety tag ("...1" + "S") was protection 64's exit tag ("...1S"),
        so one protection's lookup by tag could find another's order.
        """
        if not 0 < protection_id < 36**TAG_ID_WIDTH:
            raise ValueError(f"protection id {protection_id} does not fit an exit tag")
        tag = f"TS{self._salt}{_base36(protection_id).rjust(TAG_ID_WIDTH, '0')}"
        assert len(tag) + 1 <= MAX_TAG_LENGTH and tag.isalnum()
        return tag

    def get(self, protection_id: int) -> Protection:
        row = prepared_sql.by_id(self._db, protection_id)  # on the tick path: its SQL written once
        if row is None:
            raise KeyError(f"protection {protection_id} does not exist")
        return self._with_pending(self._protection(row))

    def find_by_tag(self, tag: str) -> Protection | None:
        row = db.ProtectionRow.get_or_none(db.ProtectionRow.exit_tag == tag)
        return None if row is None else self._with_pending(self._protection(row))

    def protections(
        self, statuses: Iterable[Status] | None = None, account_id: int | None = None
    ) -> list[Protection]:
        query = db.ProtectionRow.select().order_by(db.ProtectionRow.id)
        if statuses is not None:
            query = query.where(db.ProtectionRow.status.in_([Status(s).value for s in statuses]))
        if account_id is not None:
            query = query.where(db.ProtectionRow.account == account_id)
        return [self._with_pending(self._protection(row)) for row in query]

    def safety_left_behind(self, account_id: int | None = None) -> list[Protection]:
        """Ended protections whose broker-held stop may still be at the broker (to be taken away)."""
        waiting = [SafetyState.PLACING, SafetyState.PLACED, SafetyState.MOVING, SafetyState.MISSING]
        query = db.ProtectionRow.select().where(
            db.ProtectionRow.status.in_([s.value for s in TERMINAL])
            & db.ProtectionRow.safety_state.in_([s.value for s in waiting])
        )
        if account_id is not None:
            query = query.where(db.ProtectionRow.account == account_id)
        return [self._with_pending(self._protection(row)) for row in query.order_by(db.ProtectionRow.id)]

    def ended_since(self, account_id: int, since: datetime) -> list[Protection]:
        """The account's protections that ended at or after ``since`` (local time, as stored)."""
        ended = [s.value for s in TERMINAL]
        rows = prepared_sql.select(
            self._db,
            f'"account_id" = ? AND "status" IN ({", ".join("?" * len(ended))}) AND "closed_at" >= ?'
            ' ORDER BY "id"',
            (account_id, *ended, prepared_sql.db_value(db.ProtectionRow.closed_at, since)),
        )
        return [self._with_pending(self._protection(row)) for row in rows]

    def ended_like(
        self, account_id: int, since: datetime, product: str, side: str, *, instrument: str, name: str
    ) -> list[Protection]:
        """:meth:`ended_since` narrowed as :meth:`live_like` narrows: the protections of this product and
        side on ``instrument`` (or named ``name``) that ended at or after ``since``. An exit job reads
        this while TRIGGERED commits on the feed thread: every ended row of the account since the book's
        last read (up to half a minute of exits) cost the interpreter that commit needs, for the one or
        two that can share the position (bench/tick_to_exit_stages.py)."""
        ended = [s.value for s in TERMINAL]
        where, params = _on_position(product, side, instrument, name)
        rows = prepared_sql.select(
            self._db,
            f'"account_id" = ? AND "status" IN ({", ".join("?" * len(ended))}) AND "closed_at" >= ?'
            f' AND {where} ORDER BY "id"',
            (account_id, *ended, prepared_sql.db_value(db.ProtectionRow.closed_at, since), *params),
        )
        return [self._with_pending(self._protection(row)) for row in rows]

    def live(self, account_id: int | None = None) -> list[Protection]:
        """Protections that still need attention: what a restart resumes."""
        return self.protections(LIVE, account_id)

    def live_like(
        self, account_id: int, product: str, side: str, *, instrument: str, name: str
    ) -> list[Protection]:
        """The account's live protections of this product and side on ``instrument``, or named ``name``
        (a trading symbol, or the ISIN that ends an instrument id such as "NSE_EQ|INE..."): a superset of
        the protections on one position, which the caller narrows. An exit job reads this while TRIGGERED
        commits on the feed thread: every row it builds holds the interpreter, and ``live()`` builds them
        all (60 protections: 2-10 ms that the commit then waited for, bench/tick_to_exit_stages.py)."""
        live = [s.value for s in LIVE]
        where, params = _on_position(product, side, instrument, name)
        rows = prepared_sql.select(
            self._db,
            f'"account_id" = ? AND "status" IN ({", ".join("?" * len(live))}) AND {where} ORDER BY "id"',
            (account_id, *live, *params),
        )
        return [self._with_pending(self._protection(r)) for r in rows]

    def transition(
        self,
        protection_id: int,
        target: Status,
        *,
        expected: Status | Sequence[Status] | None = None,
        reason: str | None = None,
        price: float | None = None,
        **fields: Any,
    ) -> Protection:
        """Move a protection to ``target`` and commit before returning.

        Raises IllegalTransition for a move the state machine forbids, and ConcurrentTransition when
        ``expected`` is given and the stored state is another, or another thread got there first.
        """
        target = Status(target)
        self._check_fields(fields)
        with self._lock:
            pending = self._take_pending(protection_id)
        try:
            with self._db.atomic():
                self._transition_row(protection_id, target, expected, reason, price, fields, pending)
        except BaseException:
            self._give_back(protection_id, pending)
            raise
        return self.get(protection_id)

    def _give_back(self, protection_id: int, pending: tuple[float, float, float | None] | None) -> None:
        """A write that took the pending stop move failed: the move is pending again (unless a newer one
        came meanwhile). Found by a flaky test: the reconciler's PENDING -> OPEN, refused because the order
        stream had already opened it, took the first trailed stop with it, and the store kept the initial
        stop while the engine trailed on (the window showed a stop that was not the one watched)."""
        if pending is None:
            return
        with self._lock:
            self._pending.setdefault(protection_id, pending)
        self._wake.set()

    def transition_many(self, moves: Sequence[TransitionRequest]) -> list[Protection | Exception]:
        """Several transitions committed in ONE transaction (the triggers of one tick: one fsync, not N).

        Each move is checked as :meth:`transition` checks it; a move that fails (ConcurrentTransition,
        IllegalTransition, KeyError) is rolled back alone (a savepoint) and reported in its place in the
        result, the others commit. An error of the database itself fails the whole batch.
        """
        failures = self.commit_transitions(moves)
        return [f or self.get(m.protection_id) for f, m in zip(failures, moves, strict=True)]

    def commit_transitions(
        self, moves: Sequence[TransitionRequest], before_commit: Callable[[], None] | None = None
    ) -> list[Exception | None]:
        """:meth:`transition_many` without reading the rows back: each move's failure, None once it is on
        disk. The tick path's: its exit orders go as this returns, and a read-back on the feed thread then
        held the interpreter the exit threads were waiting for (bench/tick_to_exit_stages.py).

        ``before_commit`` is called once every row is written, just before the COMMIT (its fsync, during
        which this thread holds no interpreter lock); not called when the batch is refused first."""
        failures: dict[int, Exception] = {}
        checked = [dict(m.fields) for m in moves]
        for fields in checked:
            self._check_fields(fields)  # a bad field refuses the batch before anything is written
        with self._lock:
            pendings = [self._take_pending(m.protection_id) for m in moves]
        if len(moves) == 1:
            # One stop on the tick (the usual case): the transaction is the move's own, so a failed move
            # rolls it all back, and no savepoint is needed (two statements fewer before the exit leaves).
            try:
                with self._db.atomic():
                    self._move_row(moves[0], checked[0], pendings[0])
                    if before_commit is not None:
                        before_commit()
            except (ConcurrentTransition, IllegalTransition, KeyError) as exc:
                self._give_back(moves[0].protection_id, pendings[0])
                return [exc]
            return [None]
        with self._db.atomic():
            for index, (move, fields, pending) in enumerate(zip(moves, checked, pendings, strict=True)):
                try:
                    with self._db.atomic():  # a savepoint: a failed move leaves no trace
                        self._move_row(move, fields, pending)
                except (ConcurrentTransition, IllegalTransition, KeyError) as exc:
                    failures[index] = exc
                    self._give_back(move.protection_id, pending)
            if before_commit is not None:
                before_commit()
        return [failures.get(i) for i in range(len(moves))]

    def _move_row(
        self,
        move: TransitionRequest,
        fields: dict[str, Any],
        pending: tuple[float, float, float | None] | None,
    ) -> None:
        """One move of :meth:`commit_transitions` and its journal events, inside the caller's transaction."""
        account_id = self._transition_row(
            move.protection_id,
            Status(move.target),
            move.expected,
            move.reason,
            move.price,
            fields,
            pending,
        )
        for kind, message in move.events:
            self._journal(move.protection_id, account_id, kind, None, None, None, message)

    def _transition_row(
        self,
        protection_id: int,
        target: Status,
        expected: Status | Sequence[Status] | None,
        reason: str | None,
        price: float | None,
        fields: dict[str, Any],
        pending: tuple[float, float, float | None] | None,
    ) -> int:
        """One compare-and-set transition inside the caller's transaction; returns the account id."""
        row = prepared_sql.by_id(self._db, protection_id)  # the tick path's commit: SQL written once
        if row is None:
            raise KeyError(f"protection {protection_id} does not exist")
        current = Status(row.status)
        if expected is not None:
            allowed = {Status(expected)} if isinstance(expected, str) else {Status(s) for s in expected}
            if current not in allowed:
                raise ConcurrentTransition(
                    f"protection {protection_id}: is {current.value}, expected "
                    + " or ".join(sorted(s.value for s in allowed))
                )
        check_transition(current, target, protection_id)
        values = self._db_values(fields)
        # Only an armed protection trails. A move the engine made after a manual (basket, timed) exit had
        # committed TRIGGERED, before it was disarmed, is no stop of the protection's: written by the next
        # transition it left a stop that no journal event explains (found by the chaos run's checker).
        if pending is not None and "stop" not in fields and current is Status.OPEN:
            values["stop"], values["peak"] = pending[1], pending[2]
        values["status"] = target.value
        values["updated_at"] = datetime.now()
        if reason is not None:
            values["reason"] = reason
        if target in TERMINAL:
            values["closed_at"] = values["updated_at"]
        # Compare-and-set on the status: two threads racing OPEN -> TRIGGERED cannot both win.
        changed = prepared_sql.update(self._db, protection_id, values, status=current.value)
        if changed != 1:
            raise ConcurrentTransition(f"protection {protection_id}: changed by another thread")
        # Every write of the stop is journalled, so that the journal's chain of stops has no gap: the
        # pending move carried here, or the stop the caller passed (the engine's at a trigger, which is
        # newer than a move a concurrent flush holds: that flush then finds the row no longer armed).
        new_stop = values.get("stop")
        if current is Status.OPEN and new_stop is not None and new_stop != row.stop:
            peak = values.get("peak", row.peak)
            self._journal(protection_id, row.account_id, "stop_moved", row.stop, new_stop, peak)
        self._journal(
            protection_id,
            row.account_id,
            "transition",
            current.value,
            target.value,
            price,
            reason or "",
        )
        return int(row.account_id)

    def update(
        self,
        protection_id: int,
        *,
        kind: str = "updated",
        message: str = "",
        expected: Status | None = None,
        **fields: Any,
    ) -> Protection:
        """Change fields without a state change (a rule, pause, a quantity), durably and journalled.

        Raises ProtectionEnded when it has ended, and ConcurrentTransition when ``expected`` is given
        and the stored state is another (a reader's view of it is stale).
        """
        self._check_fields(fields)
        if not fields:
            raise ValueError("update: nothing to change")
        with self._lock:
            pending = self._take_pending(protection_id)
        try:
            return self._update_row(protection_id, kind, message, expected, fields, pending)
        except BaseException:
            self._give_back(protection_id, pending)
            raise

    def _update_row(
        self,
        protection_id: int,
        kind: str,
        message: str,
        expected: Status | None,
        fields: dict[str, Any],
        pending: tuple[float, float, float | None] | None,
    ) -> Protection:
        with self._db.atomic():
            row = db.ProtectionRow.get_or_none(db.ProtectionRow.id == protection_id)
            if row is None:
                raise KeyError(f"protection {protection_id} does not exist")
            if Status(row.status) in TERMINAL:
                raise ProtectionEnded(
                    f"protection {protection_id}: is {row.status}; it cannot change any more"
                )
            if expected is not None and Status(row.status) is not expected:
                raise ConcurrentTransition(
                    f"protection {protection_id}: is {row.status}, expected {expected.value}"
                )
            values = self._db_values(fields)
            armed = Status(row.status) is Status.OPEN
            merged = pending if armed and "stop" not in fields else None
            if merged is not None:
                values["stop"], values["peak"] = merged[1], merged[2]
            values["updated_at"] = datetime.now()
            db.ProtectionRow.update(**values).where(db.ProtectionRow.id == protection_id).execute()
            if merged is not None and merged[1] != row.stop:
                # The pending move is written here, not by the flush: journalled here too, or the journal's
                # chain of stops would skip it (found by the chaos run: a quantity change mid-trail).
                self._journal(protection_id, row.account_id, "stop_moved", row.stop, merged[1], merged[2])
            described = ", ".join(f"{k}={_describe(v)}" for k, v in sorted(fields.items()))
            self._journal(protection_id, row.account_id, kind, "", described, None, message)
        return self.get(protection_id)

    def record_entry_order(self, protection_id: int, order_id: str) -> Protection | None:
        """Store the entry's order id, journalled ("entry_placed") once: the placing reply, the pushed order
        update and a reconcile's lookup by tag each name it, in any order (the pushed update often comes
        first). Returns None when that id was stored already; raises ProtectionEnded once it has ended."""
        row_t = db.ProtectionRow
        with self._db.atomic():
            # One conditional UPDATE: two threads naming the same order cannot both see it missing.
            changed = (
                row_t.update(entry_order_id=order_id, updated_at=datetime.now())
                .where(
                    (row_t.id == protection_id)
                    & row_t.status.not_in([s.value for s in TERMINAL])
                    & (row_t.entry_order_id.is_null() | (row_t.entry_order_id != order_id))
                )
                .execute()
            )
            row = row_t.get_or_none(row_t.id == protection_id)
            if row is None:
                raise KeyError(f"protection {protection_id} does not exist")
            if not changed:
                if row.entry_order_id == order_id:
                    return None
                raise ProtectionEnded(
                    f"protection {protection_id}: is {row.status}; it cannot change any more"
                )
            self._journal(
                protection_id,
                row.account_id,
                "entry_placed",
                "",
                f"entry_order_id={_describe(order_id)}",
                None,
            )
        return self.get(protection_id)

    def update_safety(
        self, protection_id: int, *, kind: str = "safety", message: str = "", **fields: Any
    ) -> Protection:
        """Change the safety stop's fields only, in any status (cleaning up after a close), journalled.

        ``kind`` names the journal event (safety_placed, safety_moved, safety_missing, ...); the event's
        ``price`` is the new ``safety_level`` when one is given.
        """
        unknown = set(fields) - _SAFETY_FIELDS
        if unknown:
            raise ValueError(f"safety stop: cannot change {', '.join(sorted(unknown))}")
        if not fields:
            raise ValueError("update: nothing to change")
        self._check_fields(fields)
        with self._db.atomic():
            row = db.ProtectionRow.get_or_none(db.ProtectionRow.id == protection_id)
            if row is None:
                raise KeyError(f"protection {protection_id} does not exist")
            values = self._db_values(fields)
            db.ProtectionRow.update(**values).where(db.ProtectionRow.id == protection_id).execute()
            described = ", ".join(f"{k}={_describe(v)}" for k, v in sorted(fields.items()))
            price = fields.get("safety_level")
            self._journal(protection_id, row.account_id, kind, "", described, price, message)
        return self.get(protection_id)

    def _check_fields(self, fields: dict[str, Any]) -> None:
        unknown = set(fields) - _MUTABLE
        if unknown:
            raise ValueError(f"protection: cannot change {', '.join(sorted(unknown))}")
        if "tick_size" in fields:
            fields["tick_size"] = require_positive(fields["tick_size"], "tick size")
        if "safety_state" in fields:
            fields["safety_state"] = SafetyState.parse(fields["safety_state"])
        if "safety_kind" in fields:
            fields["safety_kind"] = SafetyKind.parse(fields["safety_kind"])
        if "safety_buffer_percent" in fields or "safety_buffer_ticks" in fields:
            check_safety_buffer(
                fields.get("safety_buffer_percent", SAFETY_BUFFER_PERCENT),
                fields.get("safety_buffer_ticks", SAFETY_BUFFER_TICKS),
            )
        for name in ("safety_level", "safety_price"):
            if fields.get(name) is not None:
                require_positive(fields[name], name.replace("_", " "))
        if "quantity" in fields:
            require_positive_int(fields["quantity"], "quantity")
        for name in ("entry_price", "stop", "exit_price"):
            if fields.get(name) is not None:
                require_positive(fields[name], name.replace("_", " "))
        if "rule" in fields and not isinstance(fields["rule"], TrailRule):
            raise ValueError(f"rule: expected a trailing rule, got {fields['rule']!r}")

    @staticmethod
    def _db_values(fields: dict[str, Any]) -> dict[str, Any]:
        values = dict(fields)
        if "rule" in values:
            values["rule"] = json.dumps(values["rule"].to_dict())
        for name in ("safety_state", "safety_kind"):
            if name in values:
                values[name] = str(values[name].value)
        return values

    # ----------------------------------------------------------------- write-behind stop moves

    def record_stop(self, protection_id: int, stop: float, peak: float | None = None) -> None:
        """Remember a stop move; it reaches the disk within the flush interval. Never blocks on I/O."""
        if not math.isfinite(stop) or stop <= 0:
            raise ValueError(f"stop: must be a positive price, got {stop!r}")
        with self._lock:
            previous = self._pending.get(protection_id)
            first_old = previous[0] if previous is not None else math.nan
            self._pending[protection_id] = (first_old, stop, peak)
        self._wake.set()

    def _take_pending(self, protection_id: int) -> tuple[float, float, float | None] | None:
        """The newest stop move not yet on disk, for a write that carries it (call with the lock held).

        Also a move the flusher holds but may not write: its write only lands on a row that is still armed,
        so a transition committed first would lose it (found by a property test: a TRIGGERED row kept the
        stop from before the last move; the trigger of a manual exit or a basket passes no stop of its own).
        Writing a move the flusher did commit first writes the same value again.
        """
        return self._pending.pop(protection_id, None) or self._inflight.get(protection_id)

    def flush(self) -> int:
        """Write every pending stop move now. Returns how many protections were written."""
        with self._flush_lock:
            return self._write_batch(self._take_batch())

    def _take_batch(self) -> dict[int, tuple[float, float, float | None]]:
        with self._lock:
            batch, self._pending = self._pending, {}
            self._inflight = batch
        return batch

    def _write_batch(self, batch: dict[int, tuple[float, float, float | None]]) -> int:
        if not batch:
            return 0
        written = 0
        try:
            with self._db.atomic():
                rows = {
                    row.id: row
                    for row in db.ProtectionRow.select(
                        db.ProtectionRow.id,
                        db.ProtectionRow.stop,
                        db.ProtectionRow.account,
                        db.ProtectionRow.side,
                    ).where(db.ProtectionRow.id.in_(list(batch)))
                }
                now = datetime.now()
                for pid, (first_old, stop, peak) in batch.items():
                    row = rows.get(pid)
                    if row is None:
                        continue
                    old = row.stop if math.isnan(first_old) else first_old
                    # Only an armed protection trails: a stop move that loses the race with a transition
                    # must not overwrite the stop the transition recorded. And a trailing stop only moves
                    # the trader's way: a move an update() or transition already overtook with a newer one
                    # (it took the newer pending move while this batch was on its way) is not written back.
                    column = db.ProtectionRow.stop
                    ahead = column < stop if row.side == Side.BUY.value else column > stop
                    changed = (
                        db.ProtectionRow.update(stop=stop, peak=peak, updated_at=now)
                        .where(
                            (db.ProtectionRow.id == pid)
                            & (db.ProtectionRow.status == Status.OPEN.value)
                            & (column.is_null() | ahead)
                        )
                        .execute()
                    )
                    if changed:
                        written += 1
                        self._journal(pid, row.account_id, "stop_moved", old, stop, peak)
        except pw.PeeweeException:
            # Keep the moves for the next attempt rather than lose them; newer moves win.
            with self._lock:
                for pid, entry in batch.items():
                    self._pending.setdefault(pid, entry)
            raise
        finally:
            with self._lock:
                self._inflight = {}
        return written

    def pending_stops(self) -> dict[int, float]:
        with self._lock:
            return {pid: entry[1] for pid, entry in self._pending.items()}

    def _flush_loop(self) -> None:
        while not self._closing.is_set():
            self._wake.wait()
            if self._closing.is_set():
                break
            # Coalesce: let a burst of ticks land before writing once.
            self._closing.wait(self._flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                log.exception("flushing stop moves failed; will retry")
        self._db.close()

    def _with_pending(self, protection: Protection) -> Protection:
        with self._lock:
            pending = self._pending.get(protection.id) or self._inflight.get(protection.id)
        if pending is None or protection.status is not Status.OPEN:
            return protection
        return protection.with_changes(stop=pending[1], peak=pending[2])

    # ----------------------------------------------------------------- journal

    def journal(
        self,
        kind: str,
        *,
        protection_id: int | None = None,
        account_id: int | None = None,
        old: object = None,
        new: object = None,
        price: float | None = None,
        message: str = "",
    ) -> None:
        """Append an event that is not a transition or a stop move (an alert, an order sent, a login)."""
        if protection_id is not None and account_id is None:
            row = db.ProtectionRow.get_or_none(db.ProtectionRow.id == protection_id)
            account_id = None if row is None else row.account_id
        with self._db.atomic():
            self._journal(protection_id, account_id, kind, old, new, price, message)

    def next_run(self) -> int:
        """Count one more start of the app on this database, durably, and return its number."""
        with self._db.atomic():
            run = int(db._meta_get("run") or 0) + 1
            db._meta_set("run", str(run))
        return run

    def last_event_id(self) -> int:
        """The id of the newest journal entry (0 for none): later entries are written after this call."""
        newest = db.JournalEvent.select(db.JournalEvent.id).order_by(db.JournalEvent.id.desc()).first()
        return 0 if newest is None else int(newest.id)

    @staticmethod
    def _journal(
        protection_id: int | None,
        account_id: int | None,
        kind: str,
        old: object,
        new: object,
        price: float | None,
        message: str = "",
    ) -> None:
        prepared_sql.insert_event(
            db.database,
            protection_id=protection_id,
            account_id=account_id,
            kind=kind,
            old=_describe(old),
            new=_describe(new),
            price=price,
            message=message,
        )

    def events(
        self,
        *,
        protection_id: int | None = None,
        account_id: int | None = None,
        kinds: Iterable[str] | None = None,
        limit: int | None = None,
        after_id: int | None = None,
    ) -> list[JournalEntry]:
        """Journal entries, oldest first; ``after_id``: only those written after that entry."""
        query = db.JournalEvent.select().order_by(db.JournalEvent.id)
        if after_id is not None:
            query = query.where(db.JournalEvent.id > after_id)
        if protection_id is not None:
            query = query.where(db.JournalEvent.protection == protection_id)
        if account_id is not None:
            query = query.where(db.JournalEvent.account_id == account_id)
        if kinds is not None:
            query = query.where(db.JournalEvent.kind.in_(list(kinds)))
        if limit is not None:
            query = query.limit(limit)
        return [
            JournalEntry(
                id=row.id,
                ts=row.ts,
                protection_id=row.protection_id,
                account_id=row.account_id,
                kind=row.kind,
                old=row.old,
                new=row.new,
                price=row.price,
                message=row.message,
            )
            for row in query
        ]

    # ----------------------------------------------------------------- settings (settings_store.py)

    def get_setting(self, key: str, default: Any = None) -> Any:
        return self.settings_repo.get(key, default)

    def set_setting(self, key: str, value: Any) -> None:
        self.settings_repo.set(key, value)

    # ----------------------------------------------------------------- conversions

    @staticmethod
    def _protection(row: Any) -> Protection:
        return Protection(
            id=row.id,
            account_id=row.account_id,
            broker=row.broker,
            instrument=row.instrument,
            symbol=row.symbol,
            exchange=row.exchange,
            side=Side(row.side),
            product=Product(row.product),
            quantity=row.quantity,
            filled_quantity=row.filled_quantity,
            entry_price=row.entry_price,
            tick_size=row.tick_size,
            rule=TrailRule.from_dict(json.loads(row.rule)),
            stop=row.stop,
            peak=row.peak,
            status=Status(row.status),
            exit_tag=row.exit_tag or "",
            reason=row.reason,
            paused=bool(row.paused),
            entry_order_id=row.entry_order_id,
            exit_order_id=row.exit_order_id,
            exit_price=row.exit_price,
            exit_quantity=row.exit_quantity,
            created_at=row.created_at,
            updated_at=row.updated_at,
            closed_at=row.closed_at,
            safety_enabled=bool(row.safety_enabled),
            safety_buffer_percent=row.safety_buffer_percent,
            safety_buffer_ticks=row.safety_buffer_ticks,
            safety_state=SafetyState.parse(row.safety_state or "off"),
            safety_kind=SafetyKind.parse(row.safety_kind),
            safety_order_id=row.safety_order_id,
            safety_level=row.safety_level,
            safety_price=row.safety_price,
            safety_quantity=row.safety_quantity,
            safety_modifications=row.safety_modifications or 0,
        )

    # ----------------------------------------------------------------- instruments (instrument_store.py)

    def upsert_instruments(
        self, master: str, records: Iterable[InstrumentRecord], *, replace: bool = True
    ) -> int:
        return self.instruments_repo.upsert(master, records, replace=replace)

    def search_instruments(self, master: str, text: str, limit: int = 20) -> list[InstrumentRecord]:
        return self.instruments_repo.search(master, text, limit)

    def instrument(self, master: str, token: str | int) -> InstrumentRecord | None:
        return self.instruments_repo.get(master, token)

    def find_instrument(self, master: str, exchange: str, symbol: str) -> InstrumentRecord | None:
        return self.instruments_repo.find(master, exchange, symbol)

    def instrument_count(self, master: str) -> int:
        return self.instruments_repo.count(master)


def _describe(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.10g}"
    if isinstance(value, TrailRule):
        return json.dumps(value.to_dict(), sort_keys=True)
    return _text(value)


def _base36(number: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while True:
        number, rem = divmod(number, 36)
        out = digits[rem] + out
        if number == 0:
            return out


def _on_position(product: str, side: str, instrument: str, name: str) -> tuple[str, tuple[str, ...]]:
    """The SQL condition (and its parameters) for rows of this product and side on ``instrument``, or named
    ``name`` (a trading symbol, or the ISIN that ends an instrument id such as "NSE_EQ|INE...")."""
    where = (
        '"product" = ? AND "side" = ? AND ("instrument" = ? OR "symbol" = ? OR "instrument" LIKE ? ESCAPE ?)'
    )
    return where, (product, side, instrument, name, prepared_sql.like_pattern(f"|{name}"), "\\")
