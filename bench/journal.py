"""The journal window's refresh on a large journal: what the GUI thread spends once a second while it is open.

A database with 100,000 journal events over 2,000 protections (a busy trader's months). While the window
is open, every change re-reads the journal at most once a second: this measures that refresh after 10
new events. The baseline, in the same run, is the earlier design: a full reload (every event read again,
the model reset, the filters rebuilt). The figure is the median of 20 refreshes, on the GUI thread.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QApplication

from trailstop_gui.models import db
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.views.journal_view import JournalView

EVENTS = 100_000
PROTECTIONS = 2_000
ROUNDS = 20
NEW_PER_ROUND = 10


def build(path: Path) -> ProtectionStore:
    store = ProtectionStore(path)
    account = store.add_account("kite", "Zerodha", user_id="AB1234")
    pids = []
    for n in range(PROTECTIONS):
        p = store.create_protection(
            account_id=account.id,
            broker="kite",
            instrument=408065 + n,
            symbol=f"SYM{n % 300}",
            exchange="NSE",
            side=Side.BUY,
            product=Product.MIS,
            quantity=5,
            filled_quantity=5,
            tick_size=0.05,
            rule=TrailRule.percent(2.0),
            entry_price=1500.0,
            status=Status.OPEN,
        )
        pids.append(p.id)
    # The bulk of a journal is stop moves: written straight into the table, as many as needed.
    have = db.JournalEvent.select().count()
    rows = [
        dict(
            ts=datetime.now(),
            protection=pids[i % PROTECTIONS],
            account_id=account.id,
            kind="stop_moved",
            old=f"{1470 + i % 50}",
            new=f"{1471 + i % 50}",
            price=1471.0,
            message="",
        )
        for i in range(EVENTS - have)
    ]
    with store._db.atomic():
        for start in range(0, len(rows), 5_000):
            db.JournalEvent.insert_many(rows[start : start + 5_000]).execute()
    return store


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as folder:
        store = build(Path(folder) / "journal.db")
        try:
            view = JournalView(store)
            view.show()
            app.processEvents()
            assert view.model.rowCount() == EVENTS
            pids = [p.id for p in store.protections()][:NEW_PER_ROUND]
            incremental, full = [], []
            for _ in range(ROUNDS):
                for pid in pids:
                    store.record_stop(pid, 1480.0, 1510.0)
                store.flush()
                incremental.append(timed(view.refresh_new))
                app.processEvents()
            for _ in range(ROUNDS // 4):
                full.append(timed(view.reload))
                app.processEvents()
            shown = view.model.rowCount()
            view.close()
        finally:
            store.close()
    inc, base = statistics.median(incremental), statistics.median(full)
    print(
        f"journal refresh: {inc:.1f} ms for {NEW_PER_ROUND} new events in a {shown:,}-event journal, "
        f"{base / inc:.0f} x faster than a full reload ({base:.0f} ms)"
    )


if __name__ == "__main__":
    main()
