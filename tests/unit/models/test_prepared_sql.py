"""prepared_sql: the exit path's reads (get, live_like, ended_since, a transition's own row) give what
peewee's queries gave, row for row, and build no SQL per call (peewee's query building was most of each
read: bench/tick_to_exit_stages.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from tests.unit.models.test_store import new_protection
from trailstop_gui.models import db, prepared_sql
from trailstop_gui.models.domain import Product, Protection, SafetyKind, SafetyState, Side, Status, TrailRule
from trailstop_gui.models.lifecycle import LIVE, TERMINAL
from trailstop_gui.models.store import ProtectionStore, TransitionRequest
from trailstop_gui.services.positions import position_name


def _by_peewee(store: ProtectionStore, query: Any) -> list[Any]:
    """What the store's reads returned when peewee built them (the reference)."""
    return [store._with_pending(store._protection(row)) for row in query]


def _varied(store: ProtectionStore) -> list[int]:
    """Rows with every kind of value: names with LIKE's wildcards, ended ones, a safety stop, paused."""
    kite = store.add_account("kite", "Zerodha", user_id="AB1234").id
    upstox = store.add_account("upstox", "Upstox", user_id="ZZ9999").id
    plain = new_protection(store, kite)
    odd = new_protection(store, kite, instrument="NSE_EQ|IN_E%1\\x", symbol="M_M%", product=Product.CNC)
    like_odd = new_protection(store, kite, instrument="NSE_EQ|INXE%1\\x", product=Product.CNC)
    upper = new_protection(store, kite, instrument="BSE_EQ|ine062a01020", symbol="sbin", product=Product.CNC)
    isin = new_protection(store, kite, instrument="NSE_EQ|INE062A01020", symbol="SBIN", product=Product.CNC)
    short = new_protection(store, upstox, side=Side.SELL, rule=TrailRule.points(5.0), broker="upstox")
    safety = new_protection(store, kite, safety_enabled=True)
    store.update_safety(
        safety.id,
        safety_state=SafetyState.PLACED.value,
        safety_kind=SafetyKind.SL_M.value,
        safety_order_id="9001",
        safety_level=97.5,
        safety_price=97.0,
        safety_quantity=10,
    )
    paused = new_protection(store, kite)
    store.update(paused.id, paused=True)
    store.record_stop(plain.id, 99.0, 101.0)  # a pending stop move: reads show it
    closed = new_protection(store, kite)
    store.transition(closed.id, Status.TRIGGERED)
    store.transition(closed.id, Status.EXITING, exit_order_id="1", exit_quantity=10)
    store.transition(closed.id, Status.CLOSED, exit_price=98.5)
    removed = new_protection(store, kite)
    store.transition(removed.id, Status.REMOVED)
    pending = new_protection(store, kite, status=Status.PENDING, filled_quantity=0, stop=None)
    return [
        p.id for p in (plain, odd, like_odd, upper, isin, short, safety, paused, closed, removed, pending)
    ]


def test_a_row_by_id_reads_as_peewee_read_it(tmp_path: Path) -> None:
    with ProtectionStore(tmp_path / "rows.db") as store:
        for pid in _varied(store):
            row = db.ProtectionRow.get_by_id(pid)
            assert store.get(pid) == _by_peewee(store, [row])[0]
        with pytest.raises(KeyError):
            store.get(10_000)


def _on_position(p: Protection, name: str) -> Any:
    """Peewee's condition for the rows of ``p``'s position: what live_like and ended_like must match."""
    row = db.ProtectionRow
    return (
        (row.product == p.product.value)
        & (row.side == p.side.value)
        & ((row.instrument == p.instrument) | (row.symbol == name) | row.instrument.endswith(f"|{name}"))
    )


def test_live_like_finds_what_peewee_found_wildcards_and_case_included(tmp_path: Path) -> None:
    with ProtectionStore(tmp_path / "rows.db") as store:
        ids = _varied(store)
        row = db.ProtectionRow
        for pid in ids:
            p = store.get(pid)
            name = position_name(p)
            reference = (
                row.select()
                .where(
                    (row.account == p.account_id)
                    & row.status.in_([s.value for s in LIVE])
                    & _on_position(p, name)
                )
                .order_by(row.id)
            )
            found = store.live_like(
                p.account_id, p.product.value, p.side.value, instrument=p.instrument, name=name
            )
            assert found == _by_peewee(store, reference)
        # "IN_E%1\x" is no pattern: the row named like it but with other characters is not found by it.
        odd = store.get(ids[1])
        found = store.live_like(odd.account_id, "CNC", "BUY", instrument="-", name="IN_E%1\\x")
        assert [p.id for p in found] == [ids[1]]
        # SQLite's LIKE ignores ASCII case, as it did through peewee: "ine062a01020" is the same ISIN.
        found = store.live_like(odd.account_id, "CNC", "BUY", instrument="-", name="INE062A01020")
        assert [p.id for p in found] == [ids[3], ids[4]]


def test_ended_since_finds_what_peewee_found(tmp_path: Path) -> None:
    with ProtectionStore(tmp_path / "rows.db") as store:
        ids = _varied(store)
        account = store.get(ids[0]).account_id
        closed_at = store.get(ids[8]).closed_at
        assert closed_at is not None
        row = db.ProtectionRow
        for since in (closed_at - timedelta(seconds=1), closed_at, closed_at + timedelta(microseconds=1)):
            reference = (
                row.select()
                .where(
                    (row.account == account)
                    & row.status.in_([s.value for s in TERMINAL])
                    & (row.closed_at >= since)
                )
                .order_by(row.id)
            )
            assert store.ended_since(account, since) == _by_peewee(store, reference)
        assert [p.id for p in store.ended_since(account, closed_at - timedelta(seconds=1))] == [
            ids[8],
            ids[9],
        ]
        assert store.ended_since(account, datetime.now() + timedelta(hours=1)) == []


def test_the_exit_paths_reads_and_commit_build_no_select(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ProtectionStore(tmp_path / "rows.db") as store:
        ids = _varied(store)
        built: list[str] = []
        original = pw.Select.__sql__

        def counted(self: pw.Select, ctx: pw.Context) -> pw.Context:
            built.append(type(self).__name__)
            return original(self, ctx)

        monkeypatch.setattr(pw.Select, "__sql__", counted)
        p = store.get(ids[0])
        store.live_like(p.account_id, "MIS", "BUY", instrument=p.instrument, name=position_name(p))
        store.ended_since(p.account_id, datetime.now() - timedelta(seconds=5))
        failures = store.commit_transitions([TransitionRequest(p.id, Status.TRIGGERED, expected=Status.OPEN)])
        assert failures == [None]
        assert built == []
        assert store.get(p.id).status is Status.TRIGGERED


def _raw(store: ProtectionStore, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Values and their SQLite types as stored (a text where peewee wrote text, an integer for a bool)."""
    cursor = store._db.execute_sql(sql, params)
    return [tuple((value, type(value).__name__) for value in row) for row in cursor.fetchall()]


def test_a_row_updated_is_stored_as_peewee_stored_it(tmp_path: Path) -> None:
    with ProtectionStore(tmp_path / "rows.db") as store:
        ids = _varied(store)
        mine, theirs = new_protection(store, store.get(ids[0]).account_id), new_protection(store, None)
        values = {
            "quantity": 7,
            "filled_quantity": 5,
            "entry_order_id": "77",
            "entry_price": 101.25,
            "rule": json.dumps(TrailRule.points(3.0).to_dict()),
            "stop": 97.15,
            "peak": None,
            "reason": "stop",
            "paused": True,
            "exit_order_id": None,
            "exit_quantity": 5,
            "safety_enabled": False,
            "safety_state": SafetyState.PLACED.value,
            "status": Status.TRIGGERED.value,
            "updated_at": datetime(2026, 1, 2, 3, 4, 5, 678901),
            "closed_at": datetime(2026, 1, 2, 3, 4, 6),
        }
        assert prepared_sql.update(store._db, mine.id, values, status=Status.OPEN.value) == 1
        assert (
            prepared_sql.update(store._db, mine.id, values, status=Status.OPEN.value) == 0
        )  # no longer OPEN
        db.ProtectionRow.update(**values).where(db.ProtectionRow.id == theirs.id).execute()
        columns = ", ".join(
            f'"{c}"' for c in prepared_sql.COLUMNS if c not in ("id", "account_id", "created_at", "exit_tag")
        )
        mine_raw = _raw(store, f"SELECT {columns} FROM protection WHERE id = ?", mine.id)
        assert mine_raw == _raw(store, f"SELECT {columns} FROM protection WHERE id = ?", theirs.id)


def test_a_journal_event_is_stored_as_peewee_stored_it(tmp_path: Path) -> None:
    with ProtectionStore(tmp_path / "rows.db") as store:
        pid = _varied(store)[0]
        account = store.get(pid).account_id
        written: list[int] = []
        for protection_id, price in ((pid, 98.5), (None, None)):
            fields = dict(account_id=account, kind="exit_sending", old="1", new="", price=price, message="m")
            db.JournalEvent.create(protection=protection_id, **fields)
            prepared_sql.insert_event(store._db, protection_id=protection_id, **fields)  # type: ignore[arg-type]
            written += [e.id for e in store.events(account_id=account, kinds=["exit_sending"])][-2:]
        rows = _raw(store, "SELECT * FROM journal_event WHERE kind = 'exit_sending' ORDER BY id")
        assert len(rows) == 4
        for theirs, mine in (rows[0:2], rows[2:4]):
            # The id and the time differ; their types and every other value are the same.
            assert [v for v in mine[0:2]] != [v for v in theirs[0:2]]
            assert [t for _, t in mine] == [t for _, t in theirs]
            assert mine[2:] == theirs[2:]
        stamped = store.events(account_id=account, kinds=["exit_sending"])
        assert all(isinstance(e.ts, datetime) for e in stamped)


def test_ended_like_finds_what_peewee_found_for_each_position(tmp_path: Path) -> None:
    """The settling twins' read (ExitJobs._settling): ended since ``since`` and on the position, by
    instrument, symbol or the ISIN ending the instrument (another listing of the same delivery shares)."""
    with ProtectionStore(tmp_path / "rows.db") as store:
        ids = _varied(store)
        account = store.get(ids[0]).account_id
        nse_isin = store.get(ids[4])
        bse = new_protection(
            store,
            account,
            instrument="BSE_EQ|INE062A01020",
            symbol="SBIN",
            exchange="BSE",
            product=Product.CNC,
        )
        for pid in (ids[3], bse.id):  # the lower-case ISIN's listing, and the BSE one, end
            store.transition(pid, Status.TRIGGERED)
            store.transition(pid, Status.EXITING, exit_order_id="2", exit_quantity=10)
            store.transition(pid, Status.CLOSED, exit_price=99.0)
        since = store.get(ids[8]).closed_at - timedelta(seconds=1)
        row = db.ProtectionRow
        for pid in [*ids, bse.id]:
            p = store.get(pid)
            name = position_name(p)
            reference = (
                row.select()
                .where(
                    (row.account == p.account_id)
                    & row.status.in_([s.value for s in TERMINAL])
                    & (row.closed_at >= since)
                    & _on_position(p, name)
                )
                .order_by(row.id)
            )
            found = store.ended_like(
                p.account_id, since, p.product.value, p.side.value, instrument=p.instrument, name=name
            )
            assert found == _by_peewee(store, reference)
        found = store.ended_like(
            account, since, "CNC", "BUY", instrument=nse_isin.instrument, name=position_name(nse_isin)
        )
        assert [p.id for p in found] == [ids[3], bse.id]  # both listings of the ISIN, either case
        assert store.ended_like(
            account, since, "MIS", "BUY", instrument=store.get(ids[0]).instrument, name="INFY"
        )
        assert not store.ended_like(account, since, "MIS", "SELL", instrument="-", name="INFY")
        later = datetime.now() + timedelta(hours=1)
        assert not store.ended_like(account, later, "CNC", "BUY", instrument="-", name="INE062A01020")
