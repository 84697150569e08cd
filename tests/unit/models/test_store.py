"""ProtectionStore: durable transitions, write-behind stops, journal, bad input, resume after reopen."""

from __future__ import annotations

import os
import random
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trailstop_gui.models import db
from trailstop_gui.models.domain import Product, Side, Status, Tick, TrailRule
from trailstop_gui.models.engine import StopMoved, StopTriggered, TrailingEngine
from trailstop_gui.models.lifecycle import IllegalTransition
from trailstop_gui.models.store import (
    ConcurrentTransition,
    ProtectionEnded,
    ProtectionStore,
    TransitionRequest,
)

INFY = 408065


def new_protection(store: ProtectionStore, account_id: int | None = None, **overrides: object):  # type: ignore[no-untyped-def]
    if account_id is None:
        account_id = store.add_account("kite", "Zerodha", user_id="AB1234").id
    params: dict[str, object] = dict(
        account_id=account_id,
        broker="kite",
        instrument=INFY,
        symbol="INFY",
        exchange="NSE",
        side=Side.BUY,
        product=Product.MIS,
        quantity=10,
        filled_quantity=10,
        tick_size=0.05,
        rule=TrailRule.percent(2.0),
        entry_price=100.0,
        status=Status.OPEN,
        stop=98.0,
    )
    params.update(overrides)
    return store.create_protection(**params)  # type: ignore[arg-type]


def raw_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read with a separate sqlite3 connection: what another process would see on disk."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_wal_mode_and_owner_only_file(store: ProtectionStore) -> None:
    assert raw_rows(Path(store.path), "PRAGMA journal_mode")[0][0] == "wal"
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert db.schema_version() == db.SCHEMA_VERSION


def test_create_round_trip_and_unique_tag(store: ProtectionStore) -> None:
    first = new_protection(store)
    second = new_protection(store, account_id=first.account_id, rule=TrailRule.points(5, target=3))
    assert first.exit_tag != second.exit_tag
    for p in (first, second):
        assert p.exit_tag.isalnum() and len(p.exit_tag) <= 20
    again = store.get(second.id)
    assert again.rule == TrailRule.points(5, target=3)
    assert again.side is Side.BUY and again.product is Product.MIS and again.status is Status.OPEN
    assert store.find_by_tag(first.exit_tag) == store.get(first.id)


def test_no_tag_of_one_protection_is_a_tag_of_another(store: ProtectionStore) -> None:
    """Entry and safety tags append a letter to the exit tag; the id's fixed width keeps them apart.

    Found by the chaos run with safety stops: with ids of any width, protection 1's safety tag ("...1S")
    was protection 64's exit tag and its entry tag ("...1E") protection 50's.
    """
    tags = [store.exit_tag_for(pid) for pid in (*range(1, 3000), 36**5, 36**6 - 1)]
    assert len({len(t) for t in tags}) == 1 and all(t.isalnum() and len(t) + 1 <= 20 for t in tags)
    derived = [t + suffix for t in tags for suffix in "ES"]
    assert len(set(tags) | set(derived)) == 3 * len(tags)
    first = new_protection(store)
    assert store.find_by_tag(first.safety_tag[:-1]) == first
    assert store.find_by_tag(first.safety_tag) is None and store.find_by_tag(first.entry_tag) is None
    with pytest.raises(ValueError, match="exit tag"):
        store.exit_tag_for(36**6)


def test_transition_commits_before_returning(store: ProtectionStore) -> None:
    p = new_protection(store)
    store.transition(p.id, Status.TRIGGERED, reason="stop", price=97.9)
    # Another connection sees it immediately: nothing waits for a later flush.
    assert raw_rows(Path(store.path), f"SELECT status FROM protection WHERE id={p.id}") == [("TRIGGERED",)]
    store.transition(p.id, Status.EXITING, exit_order_id="X1")
    done = store.transition(p.id, Status.CLOSED, exit_price=97.85, exit_quantity=10)
    assert done.closed_at is not None and done.exit_order_id == "X1" and done.exit_price == 97.85
    kinds = [(e.kind, e.old, e.new) for e in store.events(protection_id=p.id)]
    assert kinds == [
        ("created", "", "OPEN"),
        ("transition", "OPEN", "TRIGGERED"),
        ("transition", "TRIGGERED", "EXITING"),
        ("transition", "EXITING", "CLOSED"),
    ]


def test_illegal_transition_raises_and_changes_nothing(store: ProtectionStore) -> None:
    p = new_protection(store)
    with pytest.raises(IllegalTransition, match="OPEN -> EXITING"):
        store.transition(p.id, Status.EXITING)
    assert store.get(p.id).status is Status.OPEN
    store.transition(p.id, Status.REMOVED)
    with pytest.raises(IllegalTransition):
        store.transition(p.id, Status.OPEN)


def test_only_one_thread_wins_the_trigger(store: ProtectionStore) -> None:
    p = new_protection(store)
    wins: list[str] = []
    losses: list[Exception] = []
    barrier = threading.Barrier(4)

    def race(name: str) -> None:
        barrier.wait()
        try:
            store.transition(p.id, Status.TRIGGERED, expected=Status.OPEN)
            wins.append(name)
        except (ConcurrentTransition, IllegalTransition) as exc:
            losses.append(exc)

    threads = [threading.Thread(target=race, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 3
    assert [e.new for e in store.events(protection_id=p.id, kinds=["transition"])] == ["TRIGGERED"]


def test_expected_state_mismatch(store: ProtectionStore) -> None:
    p = new_protection(store)
    with pytest.raises(ConcurrentTransition, match="expected PENDING"):
        store.transition(p.id, Status.CLOSED, expected=Status.PENDING)


def test_stop_moves_are_write_behind_and_coalesced(tmp_path: Path) -> None:
    store = ProtectionStore(tmp_path / "t.db", flush_interval=0.25)
    try:
        p = new_protection(store)
        for stop in (98.5, 99.0, 99.5):
            store.record_stop(p.id, stop, stop + 2)
        assert store.get(p.id).stop == 99.5  # readers see the latest value at once
        deadline = time.monotonic() + 2
        while raw_rows(tmp_path / "t.db", f"SELECT stop FROM protection WHERE id={p.id}") != [(99.5,)]:
            assert time.monotonic() < deadline, "stop move not flushed within 2 s"
            time.sleep(0.02)
        moves = store.events(protection_id=p.id, kinds=["stop_moved"])
        assert [(m.old, m.new) for m in moves] == [("98", "99.5")]
    finally:
        store.close()


def test_stop_flush_within_250ms(tmp_path: Path) -> None:
    store = ProtectionStore(tmp_path / "t.db")
    try:
        p = new_protection(store)
        store.record_stop(p.id, 98.5, 100.5)
        started = time.monotonic()
        while raw_rows(tmp_path / "t.db", f"SELECT stop FROM protection WHERE id={p.id}") != [(98.5,)]:
            time.sleep(0.01)
            assert time.monotonic() - started < 2
        # Not a timing assertion on the machine's speed: the flusher's own interval is 0.1 s.
        assert store._flush_interval <= 0.25
    finally:
        store.close()


def test_close_flushes_pending_moves(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = ProtectionStore(path)
    p = new_protection(store)
    store.record_stop(p.id, 99.0, 101.0)
    store.close()
    assert raw_rows(path, f"SELECT stop, peak FROM protection WHERE id={p.id}") == [(99.0, 101.0)]


def test_transition_carries_pending_stop_and_late_flush_cannot_overwrite(store: ProtectionStore) -> None:
    p = new_protection(store)
    store.record_stop(p.id, 99.0, 101.0)
    triggered = store.transition(p.id, Status.TRIGGERED)
    assert triggered.stop == 99.0
    store.record_stop(p.id, 99.5, 101.5)  # a move that lost the race with the trigger
    store.flush()
    assert store.get(p.id).stop == 99.0


def test_an_update_that_writes_a_pending_stop_journals_the_move(store: ProtectionStore) -> None:
    """Found by the chaos run: a quantity change mid-trail wrote the pending stop with no stop_moved event,
    and the journal's chain of stops skipped a step (98 -> 99.5 with the event saying 99 -> 99.5)."""
    p = new_protection(store)  # stop 98.0
    store.record_stop(p.id, 99.0, 101.0)
    store.update(p.id, kind="quantity_changed", filled_quantity=7)
    store.record_stop(p.id, 99.5, 101.5)
    store.flush()
    moves = [(e.old, e.new) for e in store.events(protection_id=p.id, kinds=["stop_moved"])]
    assert moves == [("98", "99"), ("99", "99.5")] and store.get(p.id).stop == 99.5


def test_a_trigger_carrying_a_newer_stop_journals_the_move(store: ProtectionStore) -> None:
    """Found by the chaos run with safety stops: a flush had taken the pending move when the trigger came;
    the trigger wrote the engine's stop, the flush then found the row no longer armed, and the journal's
    chain of stops ended below the stop the database held."""
    p = new_protection(store)  # stop 98.0
    store.transition(p.id, Status.TRIGGERED, stop=99.5, price=99.4, reason="stop")
    moves = [(e.old, e.new) for e in store.events(protection_id=p.id, kinds=["stop_moved"])]
    assert moves == [("98", "99.5")] and store.get(p.id).stop == 99.5
    # A trigger at the stored stop adds no move.
    q = new_protection(store, account_id=p.account_id)
    store.transition(q.id, Status.TRIGGERED, stop=98.0, price=97.9, reason="stop")
    assert store.events(protection_id=q.id, kinds=["stop_moved"]) == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"quantity": 0}, "quantity"),
        ({"quantity": -5}, "quantity"),
        ({"quantity": 1.5}, "quantity"),
        ({"tick_size": 0}, "tick size"),
        ({"tick_size": -0.05}, "tick size"),
        ({"side": "LONG"}, "side"),
        ({"product": "BO"}, "product"),
        ({"entry_price": 0}, "entry price"),
        ({"symbol": " "}, "symbol"),
        ({"rule": "percent:2"}, "rule"),
        ({"account_id": 999}, "account"),
    ],
)
def test_bad_input_names_field_and_stores_nothing(
    store: ProtectionStore, overrides: dict[str, object], field: str
) -> None:
    account = store.add_account("kite", "Zerodha")
    before = store.protections()
    params = {"account_id": account.id, **overrides}
    with pytest.raises(ValueError, match=field):
        new_protection(store, **params)
    assert store.protections() == before
    assert store.events(kinds=["created"]) == []


def test_bad_update_keeps_what_is_stored(store: ProtectionStore) -> None:
    p = new_protection(store)
    with pytest.raises(ValueError, match="quantity"):
        store.update(p.id, quantity=0)
    with pytest.raises(ValueError, match="cannot change"):
        store.update(p.id, status="CLOSED")
    assert store.get(p.id) == p


def test_update_is_journalled(store: ProtectionStore) -> None:
    p = new_protection(store)
    updated = store.update(p.id, kind="paused", paused=True)
    assert updated.paused
    assert store.events(protection_id=p.id, kinds=["paused"])[0].new == "paused=True"


def test_the_entry_order_is_journalled_once_whoever_names_it_first(store: ProtectionStore) -> None:
    # The pushed order update and the placing reply both name the entry's order (every screenshot's
    # journal showed "Entry placed" twice with the same id).
    p = new_protection(store, status=Status.PENDING, stop=None, entry_price=None, filled_quantity=0)
    recorded = store.record_entry_order(p.id, "E1")
    assert recorded is not None and recorded.entry_order_id == "E1"
    assert store.record_entry_order(p.id, "E1") is None
    assert [e.new for e in store.events(protection_id=p.id, kinds=["entry_placed"])] == ["entry_order_id=E1"]


def test_the_entry_order_named_by_two_threads_at_once_is_journalled_once(store: ProtectionStore) -> None:
    p = new_protection(store, status=Status.PENDING, stop=None, entry_price=None, filled_quantity=0)
    start = threading.Barrier(4)

    def name_it() -> None:
        start.wait()
        store.record_entry_order(p.id, "E7")

    threads = [threading.Thread(target=name_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.events(protection_id=p.id, kinds=["entry_placed"])) == 1
    assert store.get(p.id).entry_order_id == "E7"


def test_an_ended_protection_takes_no_entry_order(store: ProtectionStore) -> None:
    p = new_protection(store, status=Status.PENDING, stop=None, entry_price=None, filled_quantity=0)
    store.transition(p.id, Status.CANCELLED, reason="cancelled")
    with pytest.raises(ProtectionEnded):
        store.record_entry_order(p.id, "E2")
    assert store.get(p.id).entry_order_id is None


def test_settings_round_trip(store: ProtectionStore) -> None:
    assert store.get_setting("default_rule", {"kind": "percent"}) == {"kind": "percent"}
    store.set_setting("default_rule", {"kind": "points", "value": 5})
    assert store.get_setting("default_rule") == {"kind": "points", "value": 5}


def test_accounts_hold_no_secret_columns(store: ProtectionStore) -> None:
    columns = {c[1] for c in raw_rows(Path(store.path), "PRAGMA table_info(account)")}
    assert not {c for c in columns if "secret" in c or "token" in c}


def test_migration_hook_runs_once(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    ProtectionStore(path).close()
    calls: list[int] = []
    following = db.SCHEMA_VERSION + 1

    def add_note_column(database: object) -> None:
        calls.append(following)
        db.database.execute_sql("ALTER TABLE protection ADD COLUMN note TEXT DEFAULT ''")

    db.init_db(path, migrations={following: add_note_column})
    db.init_db(path, migrations={following: add_note_column})
    db.database.close()
    assert calls == [following]
    assert raw_rows(path, "SELECT value FROM meta WHERE key='schema_version'") == [(str(following),)]
    with pytest.raises(db.DatabaseError, match="newer"):
        db.init_db(path)


def test_version_1_file_is_migrated_without_losing_anything(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with ProtectionStore(path) as store:
        p = new_protection(store)
    # Make the file look like a version-1 database: no account mode, no paper tables.
    conn = sqlite3.connect(path)
    conn.executescript(
        "ALTER TABLE account DROP COLUMN mode; DROP TABLE paper_trade; DROP TABLE paper_order;"
        "UPDATE meta SET value='1' WHERE key='schema_version';"
    )
    conn.close()
    with ProtectionStore(path) as store:
        assert db.schema_version() == db.SCHEMA_VERSION
        assert store.get(p.id) == p
        assert store.account(p.account_id).mode == "live"
    tables = {row[0] for row in raw_rows(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"paper_order", "paper_trade"} <= tables


# ----------------------------------------------------------------------------- resume after reopen


def drive(engine: TrailingEngine, store: ProtectionStore, ticks: list[Tick], fired: list[str]) -> None:
    for tick in ticks:
        for event in engine.on_tick(tick):
            if isinstance(event, StopMoved):
                store.record_stop(int(event.key), event.new, engine.peak(event.key))
            elif isinstance(event, StopTriggered):
                store.transition(int(event.key), Status.TRIGGERED, price=event.ltp)
                fired.append(event.key)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    split=st.integers(1, 199),
    rule=st.sampled_from(
        [
            TrailRule.percent(1.5),
            TrailRule.points(3.0),
            TrailRule.percent(2.0, activation=1.0, breakeven=0.5),
            TrailRule.points(2.0, ladder_step=1.0, ladder_raise=0.5, target=15.0),
        ]
    ),
)
def test_reopen_mid_path_gives_same_stops(tmp_path_factory, seed: int, split: int, rule: TrailRule) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    instruments = [INFY, 2953217, 738561]
    ticks = []
    prices = dict.fromkeys(instruments, 100.0)
    for _ in range(200):
        inst = rng.choice(instruments)
        prices[inst] = max(1.0, prices[inst] * (1 + rng.uniform(-0.01, 0.0125)))
        ticks.append(Tick(inst, ltp=prices[inst], bid=prices[inst] - 0.05, ask=prices[inst] + 0.05))

    def setup(store: ProtectionStore) -> TrailingEngine:
        account = store.add_account("kite", "Z")
        engine = TrailingEngine()
        for i, inst in enumerate(instruments * 2):
            side = Side.BUY if i % 2 == 0 else Side.SELL
            product = Product.MIS if i < 3 else Product.CNC
            p = new_protection(
                store,
                account_id=account.id,
                instrument=inst,
                side=side,
                product=product,
                rule=rule,
                stop=None,
            )
            engine.arm_protection(p)
        return engine

    base = tmp_path_factory.mktemp("rt")
    straight = ProtectionStore(base / "straight.db")
    engine = setup(straight)
    fired_straight: list[str] = []
    drive(engine, straight, ticks, fired_straight)
    straight.close()

    first = ProtectionStore(base / "split.db")
    engine = setup(first)
    fired_split: list[str] = []
    drive(engine, first, ticks[:split], fired_split)
    first.close()  # the app stops (or crashes after a flush) mid-path

    reopened = ProtectionStore(base / "split.db")
    resumed = TrailingEngine()
    for p in reopened.protections([Status.OPEN]):
        resumed.arm_protection(p)
    drive(resumed, reopened, ticks[split:], fired_split)
    reopened.close()

    assert fired_split == fired_straight
    a = raw_rows(base / "straight.db", "SELECT id, status, stop FROM protection ORDER BY id")
    b = raw_rows(base / "split.db", "SELECT id, status, stop FROM protection ORDER BY id")
    assert a == b


def test_a_transition_carries_a_stop_move_the_flusher_holds_but_has_not_written(tmp_path: Path) -> None:
    """Found by test_reopen_mid_path_gives_same_stops on a loaded machine: the flusher took the pending
    move, the transition (a manual exit or a basket passes no stop) committed first, and the flusher's write
    then found the row no longer armed: the TRIGGERED row kept the stop from before the move."""
    with ProtectionStore(tmp_path / "race.db") as store:
        p = new_protection(store, stop=100.0)
        store.record_stop(p.id, 103.5, 104.0)
        with store._lock:  # the flusher's first half: the batch taken, not written yet
            store._inflight, store._pending = store._pending, {}
        store.transition(p.id, Status.TRIGGERED, price=103.0)
        assert store.get(p.id).stop == 103.5
        moves = [(e.old, e.new) for e in store.events(protection_id=p.id, kinds=["stop_moved"])]
        assert moves == [("100", "103.5")]  # journalled once, with the transition


def test_runs_are_counted_durably_and_the_last_event_id_marks_a_start(tmp_path: Path) -> None:
    """For the restart's look-up (services/exit_send_log.py): which start wrote a record, and which
    journal entries came before this start."""
    first = ProtectionStore(tmp_path / "runs.db")
    assert first.last_event_id() == 0
    assert first.next_run() == 1
    p = new_protection(first)
    first.journal("exit_sending", protection_id=p.id, message="attempt 1")
    marker = first.events(kinds=["exit_sending"])[-1].id
    assert first.last_event_id() == marker
    first.close()
    second = ProtectionStore(tmp_path / "runs.db")
    try:
        assert second.next_run() == 2 and second.last_event_id() == marker
    finally:
        second.close()


def test_a_stop_move_after_the_trigger_is_not_written_by_a_later_transition(tmp_path: Path) -> None:
    """Found by the chaos run's checker: a basket's exit committed TRIGGERED while the engine still had the
    protection armed; its next tick moved the stop, and TRIGGERED -> EXITING wrote that move with no journal
    event (the stored stop no longer followed from the journal)."""
    with ProtectionStore(tmp_path / "late.db") as store:
        p = new_protection(store, stop=100.0)
        store.transition(p.id, Status.TRIGGERED, reason="basket")
        store.record_stop(p.id, 101.5, 102.0)  # the engine, before the disarm reached it
        store.transition(p.id, Status.EXITING, exit_order_id="X1", exit_quantity=3)
        store.flush()
        assert store.get(p.id).stop == 100.0
        assert store.events(protection_id=p.id, kinds=["stop_moved"]) == []


def test_a_flush_never_writes_a_stop_the_row_is_already_past(tmp_path: Path) -> None:
    """Found by make chaos-safety: the flusher held a move while a newer one reached the row another way
    (an update or a transition takes the newer pending move), then wrote its older move over it: "stop
    moved against the trader". A trailing stop only ever moves the trader's way, whoever writes last."""
    with ProtectionStore(tmp_path / "order.db") as store:
        long = new_protection(store, stop=100.0)
        short = new_protection(store, long.account_id, side=Side.SELL, stop=110.0)
        store.record_stop(long.id, 101.5, 103.0)
        store.record_stop(short.id, 108.5, 106.0)
        batch = store._take_batch()  # the flusher's first half
        store.record_stop(long.id, 102.0, 104.0)
        store.record_stop(short.id, 108.0, 105.0)
        store.update(long.id, kind="quantity_changed", filled_quantity=3)  # carries the newer moves
        store.update(short.id, kind="quantity_changed", filled_quantity=3)
        store._write_batch(batch)  # the flusher's second half, late
        assert (store.get(long.id).stop, store.get(short.id).stop) == (102.0, 108.0)
        chain = [(e.old, e.new) for e in store.events(kinds=["stop_moved"])]
        assert sorted(chain) == [("100", "102"), ("110", "108")]


def test_a_refused_transition_leaves_the_pending_stop_move_pending(tmp_path: Path) -> None:
    """Found by a flaky test: the reconciler's PENDING -> OPEN, refused because the order stream had opened
    the protection first, took the first trailed stop move with it; the store kept the initial stop while
    the engine trailed on."""
    with ProtectionStore(tmp_path / "refused.db") as store:
        p = new_protection(store, stop=100.0)
        store.record_stop(p.id, 103.5, 104.0)
        with pytest.raises(ConcurrentTransition):
            store.transition(p.id, Status.OPEN, expected=Status.PENDING, stop=100.0)
        with pytest.raises(ConcurrentTransition):
            store.update(p.id, kind="quantity_changed", expected=Status.PENDING, filled_quantity=2)
        assert (
            store.commit_transitions(
                [TransitionRequest(p.id, Status.OPEN, expected=Status.PENDING, fields={"stop": 100.0})]
            )[0]
            is not None
        )
        assert store.get(p.id).stop == 103.5
        store.flush()
        assert store.get(p.id).stop == 103.5 and store.pending_stops() == {}
