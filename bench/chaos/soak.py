"""The soak: one app instance for minutes with no kills (the runs restart it every few seconds, which
would hide a fault that needs uptime to show)."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import requests

from bench.chaos.app import AppProcess
from bench.chaos.config import BROKERS, ChaosConfig, Out
from bench.chaos.feed import FeedTracker
from bench.chaos.report import RunReport, Violation
from bench.chaos.trader import OutsideTrader
from trailstop_gui.simulator.runner import start_simulator


def soak(config: ChaosConfig, index: int, folder: Path, out: Out) -> RunReport:
    """Endurance: one app instance, never killed, ten protected positions and a steady stream of prices.

    The chaos runs restart the app every few seconds; a fault that only shows after minutes of uptime (a
    leak, a slow drift) would hide there. Violations: the app ends by itself, or a feed is not live at
    the end, or the SIGTERM at the end is not a clean shutdown.
    """
    report = RunReport(index, config.seed)
    sim = start_simulator(seed=config.seed, auto=True, tick_interval=0.1, fill_delay=0.05)
    tracker = FeedTracker()
    transcript = open(folder / "app-output.log", "w", encoding="utf-8")  # noqa: SIM115
    # A wide trail: the random walk must not close the positions; this is about staying up.
    app = AppProcess(
        sim.url,
        folder / "data",
        "percent:30",
        tracker,
        transcript,
        env={"TRAILSTOP_SIM_TOKEN": sim.control_headers["X-Sim-Token"]},
    )
    trader = OutsideTrader(sim)

    def violation(kind: str, detail: str) -> None:
        report.violations.append(Violation(index, kind, detail))

    started = time.time()
    try:
        app.start()
        deadline = time.time() + 30
        while not all(tracker.is_up(b) for b in BROKERS) and time.time() < deadline:
            time.sleep(0.1)
        symbols = ("NSE:INFY", "NSE:SBIN", "NSE:TCS", "NSE:ITC", "NSE:WIPRO")
        for n, (broker, symbol) in enumerate(((b, s) for b in BROKERS for s in symbols), start=1):
            key = requests.get(
                f"{sim.url}/_sim/quote", params={"symbol": symbol}, headers=sim.control_headers, timeout=10
            ).json()
            order = {"symbol": symbol, "upstox_key": key["upstox_key"], "side": "BUY", "product": "MIS"}
            trader.place(broker, dict(order, quantity=1, tag=f"SOAK{n}"))
            report.episodes[broker] += 1
        end = time.time() + config.soak
        while time.time() < end and app.running:
            time.sleep(1.0)
        report.soak_seconds = time.time() - started
        if not app.running:
            code = app.proc.returncode if app.proc is not None else None
            fatal = [line for _t, _g, line in app.output() if "Fatal Python error" in line or "Error" in line]
            violation(
                "app died in the soak", f"after {report.soak_seconds:.0f} s, exit code {code}: {fatal[:2]}"
            )
        else:
            for broker in BROKERS:
                if not tracker.is_up(broker):
                    violation("feed down at the end of the soak", broker)
            code = app.stop(signal.SIGTERM)
            if code != 0:
                violation("unclean shutdown", f"the soak's SIGTERM gave exit code {code}")
        conn = sqlite3.connect(folder / "data" / "trailstop.db")
        try:
            protected = conn.execute("SELECT count(*) FROM protection WHERE status = 'OPEN'").fetchone()[0]
        finally:
            conn.close()
        if protected != 2 * len(symbols):
            violation("positions not protected in the soak", f"{protected} of {2 * len(symbols)} OPEN")
    finally:
        if app.running:
            app.stop(signal.SIGKILL)
        sim.stop()
        transcript.close()
    report.seconds = time.time() - started
    report.ticks = int(report.soak_seconds / 0.1)
    out(
        f"soak: one instance for {report.soak_seconds:.0f} s (no kills), 10 protected positions, "
        f"a price step every 0.1 s; violations: {len(report.violations)}"
    )
    for v in report.violations:
        out(f"    {v}")
    return report
