"""One run (`Run`): the simulator in this process, the app in a subprocess, the trader's workload, the
faults and the kills, then the checks; and the campaign of runs (`run_chaos`)."""

from __future__ import annotations

import random
import signal
import sqlite3
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.chaos.app import AppProcess
from bench.chaos.checker import Checker
from bench.chaos.config import BROKERS, ChaosConfig, Out
from bench.chaos.faults import Faults
from bench.chaos.feed import FeedTracker
from bench.chaos.holdings import HoldingPlay, Holdings
from bench.chaos.kills import Kills
from bench.chaos.positions import Episode, Positions
from bench.chaos.report import ChaosReport, RunReport, Violation, describe
from bench.chaos.soak import soak
from bench.chaos.trader import OutsideTrader
from bench.chaos.workload import Workload, write_baskets
from trailstop_gui.simulator.runner import start_simulator


class Run:
    """Everything one run needs: simulator, app, tracker, trader, workload and chaos."""

    def __init__(self, config: ChaosConfig, index: int, seed: int, folder: Path, out: Out) -> None:
        self.config = config
        self.index = index
        self.rng = random.Random(seed)
        self.folder = folder
        self.out = out
        self.report = RunReport(index, seed)
        self.sim = start_simulator(seed=seed, auto=False, fill_delay=0.1)
        self.data_dir = folder / "data"
        self.db_path = self.data_dir / "trailstop.db"
        self.tracker = FeedTracker()
        self.transcript = open(folder / "app-output.log", "w", encoding="utf-8")  # noqa: SIM115
        self.app = AppProcess(
            self.sim.url,
            self.data_dir,
            config.rule,
            self.tracker,
            self.transcript,
            env={"TRAILSTOP_SIM_TOKEN": self.sim.control_headers["X-Sim-Token"]},
            extra_args=[
                "--auto-protect-holdings",
                *(["--safety-stop"] if config.safety else []),
                *(["--baskets", str(write_baskets(folder, config))] if config.baskets else []),
            ],
        )
        self.app_lock = threading.Lock()
        self.chaos_stop = threading.Event()
        self.faults = Faults(self)  # with --route-flaps, sets up the order route before the app starts
        self.kills = Kills(self)
        self.app.on_line = self.kills.on_app_line
        self.trader = OutsideTrader(self.sim, self.faults.trader_proxy_url)
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="chaos-trader")
        self.workload = Workload(self)
        self.positions = Positions(self)
        self.holdings = Holdings(self)

    # What the checker reads of the workload.

    @property
    def episodes(self) -> list[Episode]:
        return self.positions.episodes

    @property
    def plays(self) -> list[HoldingPlay]:
        return self.holdings.plays

    @property
    def held(self) -> Counter[str]:
        return self.workload.held

    @property
    def outside_tags(self) -> set[str]:
        return self.workload.outside_tags

    @property
    def extra_protections(self) -> set[int]:
        return self.workload.extra_protections

    # ------------------------------------------------------------------------------------- the simulator

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.sim.url}/_sim/{path}"
        if body is None:
            response = requests.get(url, headers=self.sim.control_headers, timeout=10)
        else:
            response = requests.post(url, json=body, headers=self.sim.control_headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def quote(self, symbol: str) -> dict[str, Any]:
        return dict(self.control(f"quote?symbol={urllib.parse.quote(symbol)}"))

    def db(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.db_path.exists():
            return []
        try:
            conn = sqlite3.connect(self.db_path, timeout=5)
            try:
                return conn.execute(sql, args).fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            return []  # created this moment, or mid-migration: ask again later

    def violation(self, kind: str, detail: str) -> None:
        self.report.violations.append(Violation(self.index, kind, detail))

    def wait_live(self, timeout: float = 30.0) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(self.tracker.is_up(b) for b in BROKERS):
                return True
            time.sleep(0.05)
        return False

    # ------------------------------------------------------------------------------------- the run

    def chaos_loop(self) -> None:
        """The chaos thread: the order route, the kills and the faults, each on its own clock."""
        now = time.time()
        self.faults.schedule_fault(now)
        self.kills.schedule(now)
        self.faults.schedule_flap(now)
        while not self.chaos_stop.wait(0.05):
            now = time.time()
            try:
                self.faults.on_clock_route(now)
                self.kills.on_clock(now)
                self.faults.on_clock(now)
            except Exception as exc:  # the harness must outlive anything the app or the network does
                self.out(f"  chaos thread: {type(exc).__name__}: {exc}")

    def step(self, now: float, starting: bool) -> None:
        self.positions.step(now, starting)
        self.holdings.step(now, starting)

    def execute(self) -> RunReport:
        cfg = self.config
        started = time.time()
        self.report.data_dir = self.data_dir
        chaos = threading.Thread(target=self.chaos_loop, name="chaos", daemon=True)
        try:
            self.app.start()
            if not self.wait_live():
                raise RuntimeError("the app's feeds never went live; see " + str(self.folder))
            chaos.start()
            self.holdings.new_plays(time.time())
            end = time.time() + cfg.duration
            while time.time() < end:
                self.step(time.time(), starting=True)
                time.sleep(0.03)
            self.chaos_stop.set()
            chaos.join(60)
            # Settle: no more faults or kills; every position still being worked runs to its end.
            self.faults.settle()
            with self.app_lock:
                if not self.app.running:
                    self.app.start()
            deadline = time.time() + cfg.settle_timeout
            while (
                self.positions.active or any(p.state != "done" for p in self.plays)
            ) and time.time() < deadline:
                self.kills.restart_if_due()
                self.step(time.time(), starting=False)
                time.sleep(0.03)
            for ep in list(self.positions.active):
                ep.problem = ep.problem or f"still {ep.state} when the run ended"
                self.positions.finish(ep, "unfinished", time.time())
            for play in self.plays:
                if play.state != "done":
                    play.problem = play.problem or f"still {play.state} when the run ended"
                    play.state = "done"
            time.sleep(0.5)
            ready = self.app.ready_at is not None
            code = self.app.stop(signal.SIGTERM)
            if ready and code != 0:
                self.violation("unclean shutdown", f"the final SIGTERM gave exit code {code}")
            self.report.seconds = time.time() - started
            Checker(self).check()
        finally:
            self.chaos_stop.set()
            if self.app.running:
                self.app.stop(signal.SIGKILL)
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.faults.stop_proxies()
            self.sim.stop()
            self.transcript.close()
        return self.report


def run_chaos(config: ChaosConfig, workdir: Path | None = None, out: Out = print) -> ChaosReport:
    """Run the campaign, print each run's figures, end with ``N violations``; returns the report."""
    report = ChaosReport(config)
    base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="trailstop-chaos-"))
    for index in range(1, config.runs + 1):
        seed = config.seed + index - 1
        folder = base / f"run{index}"
        folder.mkdir(parents=True, exist_ok=True)
        run = Run(config, index, seed, folder, out)
        result = run.execute()
        report.runs.append(result)
        for line in describe(result, config):
            out(line)
    if config.soak > 0:
        folder = base / "soak"
        folder.mkdir(parents=True, exist_ok=True)
        report.runs.append(soak(config, config.runs + 1, folder, out))
    if config.runs > 1:
        total = RunReport(0, config.seed)
        for r in report.runs:
            if r.soak_seconds:
                total.violations += r.violations
                continue
            total.add(r)
        out(f"all {config.runs} runs:")
        for line in describe(total, config)[1:]:
            out(line)
    out(f"{len(report.violations)} violations")
    if not config.keep and not report.violations:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    else:
        out(f"(data folders and app transcripts kept in {base})")
    return report
