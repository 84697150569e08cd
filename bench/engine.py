"""Engine throughput beside the per-tick SQLite design it replaces, measured in the same run.

The baseline is the seed's design: for every tick, SELECT the open protections of the instrument from
SQLite, trail them in Python, and UPDATE (and commit) every stop that moved.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
import time
from pathlib import Path

from trailstop_gui.models.domain import Product, Side, Tick, TrailRule, round_down, round_up
from trailstop_gui.models.engine import TrailingEngine

PROTECTIONS = 500
INSTRUMENTS = 200
TICK_SIZE = 0.05


def make_ticks(count: int, seed: int = 7) -> list[Tick]:
    rng = random.Random(seed)
    prices = [rng.uniform(50, 5000) for _ in range(INSTRUMENTS)]
    ticks = []
    for _ in range(count):
        i = rng.randrange(INSTRUMENTS)
        # A slight upward drift keeps longs trailing and shorts far from their stops, so most
        # protections stay armed for the whole run, as in a quiet session.
        prices[i] *= 1 + rng.gauss(0.0002, 0.001)
        p = prices[i]
        ticks.append(Tick(i + 1, ltp=round(p, 2), bid=round(p - 0.05, 2), ask=round(p + 0.05, 2)))
    return ticks


def protections(seed: int = 11) -> list[tuple[int, Side, Product, float]]:
    rng = random.Random(seed)
    out = []
    for n in range(PROTECTIONS):
        instrument = n % INSTRUMENTS + 1
        side = Side.BUY if rng.random() < 0.7 else Side.SELL
        product = Product.MIS if rng.random() < 0.5 else Product.CNC
        out.append((instrument, side, product, 10.0))  # 10 %: wide enough to stay armed
    return out


def entry_prices(ticks: list[Tick]) -> dict[int, float]:
    first: dict[int, float] = {}
    for t in ticks:
        first.setdefault(int(t.instrument), t.ltp)
    return first


def engine_seconds(ticks: list[Tick]) -> float:
    """Seconds the engine takes over ``ticks``, armed with every protection at its first price."""
    engine = TrailingEngine()
    entries = entry_prices(ticks)
    for n, (instrument, side, product, pct) in enumerate(protections()):
        engine.arm(
            str(n),
            instrument=instrument,
            side=side,
            product=product,
            entry_price=entries[instrument],
            tick_size=TICK_SIZE,
            rule=TrailRule.percent(pct),
        )
    on_tick = engine.on_tick
    start = time.perf_counter()
    for tick in ticks:
        on_tick(tick)
    return time.perf_counter() - start


def run_engine(ticks: list[Tick]) -> float:
    """Ticks per second through the engine."""
    return len(ticks) / engine_seconds(ticks)


def run_sqlite_baseline(ticks: list[Tick], folder: Path, synchronous: str = "FULL") -> float:
    conn = sqlite3.connect(folder / f"baseline-{synchronous}.db", isolation_level=None)
    # FULL is the durability the app's store gives a committed write: the seed persisted every trail as
    # it happened, which is what the write-behind store gives up on purpose. NORMAL is printed too, as
    # the kindest baseline (a trail survives an app crash but maybe not a power cut).
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, instrument INTEGER, side TEXT, product TEXT,"
        " pct REAL, stop REAL, status TEXT)"
    )
    conn.execute("CREATE INDEX orders_instrument ON orders (instrument, status)")
    entries = entry_prices(ticks)
    for instrument, side, product, pct in protections():
        entry = entries[instrument]
        stop = entry * (1 - pct / 100) if side is Side.BUY else entry * (1 + pct / 100)
        conn.execute(
            "INSERT INTO orders (instrument, side, product, pct, stop, status) VALUES (?,?,?,?,?,'OPEN')",
            (instrument, side.value, product.value, pct, stop),
        )
    start = time.perf_counter()
    for tick in ticks:
        rows = conn.execute(
            "SELECT id, side, product, pct, stop FROM orders WHERE instrument=? AND status='OPEN'",
            (tick.instrument,),
        ).fetchall()
        for oid, side, product, pct, stop in rows:
            long = side == "BUY"
            if (tick.ltp <= stop) if long else (tick.ltp >= stop):
                conn.execute("UPDATE orders SET status='TRIGGERED' WHERE id=?", (oid,))
                continue
            price = (tick.bid if long else tick.ask) if product == "MIS" else tick.ltp
            assert price is not None
            if long:
                candidate = round_down(price * (1 - pct / 100), TICK_SIZE)
                if candidate > stop:
                    conn.execute("UPDATE orders SET stop=? WHERE id=?", (candidate, oid))
            else:
                candidate = round_up(price * (1 + pct / 100), TICK_SIZE)
                if candidate < stop:
                    conn.execute("UPDATE orders SET stop=? WHERE id=?", (candidate, oid))
    rate = len(ticks) / (time.perf_counter() - start)
    conn.close()
    return rate


def main() -> None:
    engine_ticks = make_ticks(300_000)
    baseline_ticks = engine_ticks[:20_000]
    engine_rate = max(run_engine(engine_ticks) for _ in range(3))
    with tempfile.TemporaryDirectory() as folder:
        baseline_rate = run_sqlite_baseline(baseline_ticks, Path(folder), "FULL")
        relaxed_rate = run_sqlite_baseline(baseline_ticks, Path(folder), "NORMAL")
    print(
        f"engine: {engine_rate:,.0f} ticks/s, {engine_rate / baseline_rate:.1f} x the per-tick SQLite design "
        f"({baseline_rate:,.0f} ticks/s with the app's synchronous=FULL; "
        f"{engine_rate / relaxed_rate:.1f} x its synchronous=NORMAL variant at {relaxed_rate:,.0f} ticks/s; "
        f"{PROTECTIONS} protections over {INSTRUMENTS} instruments)",
        flush=True,
    )


if __name__ == "__main__":
    main()
