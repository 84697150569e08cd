"""The window under load: GUI-thread stalls, cold start to first paint, resident memory.

A worker thread feeds the real main window through the service's own ``snapshot_ready`` signal, as the
feed threads do: 500 protections on 200 instruments, ticks worth 10,000 a second coalesced into ten
snapshots a second, with the table sorted by P&L (the worst case: prices reorder it) and the chart
following one protection. A 10 ms QTimer on the GUI thread measures how late it fires (a stall the trader
would feel), beside the same timer with no load (the baseline). Everything runs in a fresh offscreen
process so that start-up time and memory are the window's own.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PROTECTIONS = 500
INSTRUMENTS = 200
TICKS_PER_S = 10_000
SNAPSHOT_HZ = 10
LOAD_S = 6.0
IDLE_S = 2.0
TIMER_MS = 10
ROOT = Path(__file__).resolve().parents[1]


def build_database(path: Path) -> None:
    """500 armed protections on 200 instruments, 70 % long: a busy trader's book."""
    from trailstop_gui.models.domain import Product, Side, Status, TrailRule
    from trailstop_gui.models.store import ProtectionStore

    rng = random.Random(5)
    with ProtectionStore(path) as store:
        account = store.add_account("kite", "Zerodha", user_id="BENCH1")
        for n in range(PROTECTIONS):
            instrument = n % INSTRUMENTS + 1
            quantity = rng.choice((1, 5, 10, 25, 50))
            store.create_protection(
                account_id=account.id,
                broker="kite",
                instrument=instrument,
                symbol=f"SYM{instrument:03d}",
                exchange="NSE",
                side=Side.BUY if rng.random() < 0.7 else Side.SELL,
                product=Product.MIS if n % 2 else Product.CNC,
                quantity=quantity,
                filled_quantity=quantity,
                tick_size=0.05,
                rule=TrailRule.percent(10.0),
                entry_price=round(100 + instrument * 17.35, 2),
                status=Status.OPEN,
            )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))] if ordered else 0.0


def resident_mb() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


class SnapshotPump(threading.Thread):
    """Random-walk ticks for every instrument, coalesced like a FeedWorker, emitted from this thread."""

    def __init__(self, emit: Any, account_id: int, protections: list[Any]) -> None:
        super().__init__(name="bench-feed", daemon=True)
        from trailstop_gui.services.feed_worker import Quote

        self.quote_type = Quote
        self.emit = emit
        self.account_id = account_id
        self.rng = random.Random(9)
        self.prices = {i: 100 + i * 17.35 for i in range(1, INSTRUMENTS + 1)}
        self.by_instrument: dict[int, list[tuple[int, bool, float]]] = {}
        for p in protections:
            self.by_instrument.setdefault(int(p.instrument), []).append((p.id, p.side.is_long, p.stop))
        self.stops = {p.id: p.stop for p in protections}
        self.stopping = threading.Event()
        self.ticks = 0
        self.snapshots = 0

    def run(self) -> None:
        per_snapshot = TICKS_PER_S // SNAPSHOT_HZ
        interval = 1.0 / SNAPSHOT_HZ
        next_at = time.perf_counter()
        while not self.stopping.is_set():
            dirty: set[int] = set()
            moved: dict[int, float] = {}
            for _ in range(per_snapshot):
                i = self.rng.randrange(1, INSTRUMENTS + 1)
                price = self.prices[i] * (1 + self.rng.gauss(0.00005, 0.0008))
                self.prices[i] = price
                dirty.add(i)
                for pid, is_long, _ in self.by_instrument.get(i, ()):
                    candidate = round(price * (0.9 if is_long else 1.1), 2)
                    old = self.stops[pid]
                    if (is_long and candidate > old) or (not is_long and candidate < old):
                        self.stops[pid] = candidate
                        moved[pid] = candidate
            self.ticks += per_snapshot
            now = time.time()
            quotes = {i: self.quote_type(i, round(self.prices[i], 2), None, None, now) for i in sorted(dirty)}
            self.emit({"account_id": self.account_id, "quotes": quotes, "stops": moved})
            self.snapshots += 1
            next_at += interval
            self.stopping.wait(max(0.0, next_at - time.perf_counter()))


def child(database: str) -> None:
    """The measured process: start the window, report its first paint, then measure stalls."""
    from PySide6.QtCore import QEvent, QObject, QSettings, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication([sys.argv[0]])
    from trailstop_gui.app import settle_heap
    from trailstop_gui.event_loop import install_event_loop, run_event_loop
    from trailstop_gui.models.store import ProtectionStore
    from trailstop_gui.services.notifier import Notifier
    from trailstop_gui.services.protection_service import ProtectionService
    from trailstop_gui.views import theme
    from trailstop_gui.views.main_window import MainWindow
    from trailstop_gui.views.tray import TrayController

    theme.apply_theme(app, "light")
    loop = install_event_loop(app)  # as the app's window has it: its refresh flows are coroutines
    workdir = Path(database).parent
    store = ProtectionStore(database)
    notifier = Notifier()
    service = ProtectionService(store, notifier)
    window = MainWindow(
        service,
        store,
        notifier,
        str(workdir),
        settings=QSettings(str(workdir / "ui.ini"), QSettings.Format.IniFormat),
        tray=TrayController(notifier, available=False),
    )

    class FirstPaint(QObject):
        def eventFilter(self, watched: QObject, event: QEvent) -> bool:
            if event.type() == QEvent.Type.Paint:
                print("painted", flush=True)
                watched.removeEventFilter(self)
            return False

    first_paint = FirstPaint()
    window.positions.table.viewport().installEventFilter(first_paint)
    window.resize(1400, 900)
    window.show()
    QTimer.singleShot(0, settle_heap)  # as the app does once its window is up

    late: dict[str, list[float]] = {"idle": [], "load": []}
    phase = ["idle"]
    last = [0.0]

    def tick() -> None:
        now = time.perf_counter()
        if last[0]:
            late[phase[0]].append(max(0.0, (now - last[0]) * 1000.0 - TIMER_MS))
        last[0] = now

    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(TIMER_MS)
    timer.timeout.connect(tick)

    protections = store.live()
    pump = SnapshotPump(service.snapshot_ready.emit, protections[0].account_id, protections)
    result: dict[str, Any] = {}

    def start_load() -> None:
        phase[0] = "load"
        last[0] = 0.0
        window.positions.select_pid(protections[0].id)  # the chart follows one protection, as in use
        # Sorted by P&L, the worst case: every batch of prices re-sorts the table.
        window.positions.table.sortByColumn(8, Qt.SortOrder.DescendingOrder)
        pump.start()
        QTimer.singleShot(int(LOAD_S * 1000), finish)

    def finish() -> None:
        pump.stopping.set()
        pump.join()
        timer.stop()
        result.update(
            idle_p99=percentile(late["idle"], 0.99),
            idle_max=max(late["idle"], default=0.0),
            load_p99=percentile(late["load"], 0.99),
            load_max=max(late["load"], default=0.0),
            samples=len(late["load"]),
            ticks=pump.ticks,
            snapshots=pump.snapshots,
            rss_mb=resident_mb(),
            rows=window.model.rowCount(),
        )
        app.exit(0)

    def start_idle() -> None:
        timer.start()
        QTimer.singleShot(int(IDLE_S * 1000), start_load)

    QTimer.singleShot(300, start_idle)  # let the first paint and its layout settle
    run_event_loop(loop)
    window.stop()
    store.close()
    print("result " + json.dumps(result), flush=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="trailstop-bench-gui-") as tmp:
        database = Path(tmp) / "bench.db"
        build_database(database)
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.gui", "--child", str(database)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        cold_ms: float | None = None
        result: dict[str, Any] = {}
        for line in proc.stdout:
            if line.startswith("painted") and cold_ms is None:
                cold_ms = (time.perf_counter() - started) * 1000.0
            elif line.startswith("result "):
                result = json.loads(line[len("result ") :])
        if proc.wait(60) != 0 or not result:
            raise RuntimeError(f"gui bench child failed with exit code {proc.returncode}")
    rate = result["ticks"] / LOAD_S
    print(f"gui stall: p99 {result['load_p99']:.1f} ms, max {result['load_max']:.1f} ms")
    print(
        f"gui stall baseline (no load): p99 {result['idle_p99']:.1f} ms, max {result['idle_max']:.1f} ms"
        f"; load was {result['rows']} protections, {rate:,.0f} ticks/s in {result['snapshots']} snapshots"
    )
    print(f"gui cold start: {cold_ms or float('nan'):.0f} ms to first paint")
    print(f"gui memory: {result['rss_mb']:.0f} MB resident")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main()
