"""Chaos run: the real headless app against the simulator, under random faults, SIGKILLs and restarts.

One simulator runs in this process; ``python -m trailstop_gui --headless --broker both --auto-protect
percent:2`` runs in a subprocess. Positions are opened "outside the app" with the brokers' official clients
(kiteconnect, upstox_client): both brokers, long and short, MIS, CNC and NRML. The app adopts each one,
the price trails it (up for a long, down for a short), then crosses the stop and stays beyond it. Meanwhile
the simulator injects every kind of fault (dropped and stalled sockets, HTTP 5xx, 429s and timeouts,
malformed replies, rejected orders, token expiry, fill delays, partial fills, lost replies, a lagging order
book, freeze quantities (exits sliced), 429s with a Retry-After, price gaps)
and the app is killed with SIGKILL (sometimes SIGTERM) at random moments, some of them just after a stop
was crossed, and restarted. The demo account's delivery holdings (INFY, ITC, SBIN on NSE and BSE, TCS) are
protected too (``--auto-protect-holdings``) and traded outside the app while their protections watch them:
part sold, all sold, or part sold and bought back, then the stop crossed. Some positions are protected
twice (a second adoption written while the app is down, as the window's Protect stores it): the two
share the position. NIFTY options are traded too (the exchange has no SL-M for them).

After every run the invariants are checked against the simulator's own order log and trades:

- at most one exit per protection (the slices of one sliced order, and the rest of a partly filled exit
  placed again, are that one exit); no exit larger than the open position, none that flips it; the exits
  of every protection sharing one position never more than it holds;
- no order that nobody asked for: every order at the broker is the trader's own (a tag the harness sent),
  a protection's exit or safety stop (its tag, on its instrument), a slice of those, or the order a
  protection's GTT fired into;
- a sale from holdings is never adopted as a short and nothing ever buys delivery shares back; a holding
  whose stop was crossed ends with nothing protected left unsold, one sold outside closes with no order;
- every position that crossed its stop is flat within 10 s of the app being up with a working feed
  (the time the app was down, or its feed was dropped, stalled or waiting for a login, does not count);
- no stop ever moved against the trader (the journal's stop_moved events);
- the journal and the database agree (status chain, stops, exit order ids), and both agree with the broker.

``python -m bench.chaos`` (``make chaos``) runs the long version, then a soak: one app instance for minutes
with no kills (the runs restart it every few seconds, which would hide a fault that needs uptime to show);
tests/reliability/test_chaos.py runs a short one. Each run prints its figures; the last line is
``N violations``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import requests

from trailstop_gui.models.domain import Side, TrailRule
from trailstop_gui.models.engine import initial_stop
from trailstop_gui.services.safety_stop import SAFETY_STOP_REASON
from trailstop_gui.simulator.exchange import DEMO_HOLDINGS
from trailstop_gui.simulator.login_flow import kite_request_token
from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator
from trailstop_gui.simulator.upstox_login import upstox_code

BROKERS = ("kite", "upstox")
USERS = {"kite": "DM1234", "upstox": "SIM0001"}
INJECTED_REJECTION = "CHAOS injected rejection: RMS margin exceeds"
TERMINAL = frozenset({"CLOSED", "CANCELLED", "REJECTED", "REMOVED", "EXIT_FAILED"})
LIVE_STATES = ("live",)
DOWN_STATES = ("connecting", "stale", "reconnecting", "login needed", "stopped", "connection lost")
_FEED_LINE = re.compile(r"trailstop\.feed: (kite|upstox) feed: ([a-z ]+?)(?: \(|$)")
_EPS = 1e-6
_SAFETY_ID = re.compile(r"safety_order_id=([^,\s]+)")
_GTT_LIVE = frozenset({"active", "pending", "scheduled"})  # Kite's and Upstox's words for a waiting GTT
# fmt: off
PROTECTION_COLUMNS = (
    "id", "broker", "instrument", "symbol", "exchange", "side", "product", "quantity", "filled_quantity",
    "entry_price", "tick_size", "rule", "stop", "status", "reason", "exit_tag", "exit_order_id",
    "exit_quantity", "created_at", "closed_at", "safety_enabled", "safety_kind", "safety_state",
    "safety_order_id",
)
# fmt: on
KILL_REASONS = ("at a random moment", "just after a crossing", "new login")

Out = Callable[[str], None]
Interval = tuple[float, float]


@dataclass(frozen=True)
class ChaosConfig:
    """One chaos campaign: ``runs`` runs of ``duration`` seconds of workload each (plus settling)."""

    seed: int = 20240
    runs: int = 1
    duration: float = 70.0
    slots: int = 8  # positions being worked at once
    start_every: float = 0.6  # at most one new position this often
    fault_every: tuple[float, float] = (1.0, 3.5)
    kill_every: tuple[float, float] = (7.0, 16.0)
    kill_after_crossing: float = 0.15  # the chance that a crossing is followed by a kill within 0.4 s
    downtime: tuple[float, float] = (0.2, 2.5)
    rule: str = "percent:2"
    flat_budget: float = 10.0  # seconds of working feed from crossing to flat
    protect_budget: float = 45.0  # seconds of working feed for auto-protect to find a new position
    give_up_after: float = 60.0  # seconds of working feed before an episode is declared stuck
    feed_recovery_budget: float = 30.0  # the longest a feed may stay down while the app runs
    settle_timeout: float = 60.0
    soak: float = 0.0  # then this many seconds of one app instance, no kills: does it stay up?
    safety: bool = False  # every protection also holds a broker-held safety stop (``--safety-stop``)
    # Orders from a registered static IP only: the app's orders take a SOCKS5 order route (a real proxy on
    # 127.0.0.2, the registered primary IP) that the chaos turns off (every connection cut, new ones
    # refused) and on again; the trader's own orders leave from 127.0.0.3 (the secondary IP).
    route_flaps: bool = False
    route_every: tuple[float, float] = (6.0, 15.0)
    route_down: tuple[float, float] = (0.5, 4.0)
    keep: bool = False  # keep the data folders and transcripts
    # A basket of every position per account (``--baskets FILE``, "positions": "all") with this max loss:
    # its breach exits every protection at once, and a kill often follows it within 0.3 s.
    baskets: bool = False
    basket_max_loss: float = 4000.0


@dataclass(frozen=True)
class Violation:
    run: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"run {self.run}: {self.kind}: {self.detail}"


@dataclass
class RunReport:
    run: int
    seed: int
    seconds: float = 0.0
    episodes: Counter[str] = field(default_factory=Counter)
    ticks: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    exits: int = 0
    protections: int = 0
    exits_refused: int = 0  # injected rejections: EXIT_FAILED and an alert, as designed
    basket_breaches: int = 0
    basket_exits: int = 0  # exits of protections that a basket's breach exited
    safety_held: int = 0  # protections that held a broker-held safety stop at some point
    safety_orders: int = 0  # SL-M orders and GTTs placed for them (re-placements included)
    safety_closes: int = 0  # protections closed by the broker-held stop (its order was the exit)
    entries_not_placed: int = 0
    latencies: list[float] = field(default_factory=list)  # crossing -> flat, seconds of working feed
    holdings: Counter[str] = field(default_factory=Counter)  # plays and their outcomes
    wall_latencies: list[float] = field(default_factory=list)
    restart_to_live: list[float] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    data_dir: Path | None = None
    soak_seconds: float = 0.0  # how long one instance stayed up in the soak (0: no soak)


@dataclass
class ChaosReport:
    config: ChaosConfig
    runs: list[RunReport] = field(default_factory=list)

    @property
    def violations(self) -> list[Violation]:
        return [v for r in self.runs for v in r.violations]


# ================================================================================================ intervals


def _overlap(intervals: Iterable[Interval], t0: float, t1: float) -> float:
    return sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in intervals)


def _subtract(intervals: list[Interval], holes: Iterable[Interval]) -> list[Interval]:
    result = intervals
    for h0, h1 in holes:
        kept: list[Interval] = []
        for a, b in result:
            if h1 <= a or h0 >= b:
                kept.append((a, b))
                continue
            if a < h0:
                kept.append((a, h0))
            if h1 < b:
                kept.append((h1, b))
        result = kept
    return result


class FeedTracker:
    """When each broker's feed was working: the app's own log lines, minus the feed faults injected.

    A feed counts as working while the app runs, its last state line for that broker says ``live``, and no
    injected fault is silencing it: a stall for its whole duration; a drop or a token expiry until the
    app logs ``live`` again (after a reconnect, or after the restart that brings a new login).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.generations: list[list[float]] = []  # [start, end]; end is inf while it runs
        self._states: dict[str, list[tuple[float, bool]]] = {b: [] for b in BROKERS}
        self._holes: dict[str, list[tuple[float, float | None]]] = {b: [] for b in BROKERS}

    def process_started(self, t: float) -> None:
        with self._lock:
            self.generations.append([t, math.inf])
            for b in BROKERS:
                self._states[b].append((t, False))

    def process_ended(self, t: float) -> None:
        with self._lock:
            if self.generations and self.generations[-1][1] == math.inf:
                self.generations[-1][1] = t
            for b in BROKERS:
                self._states[b].append((t, False))

    def on_line(self, t: float, line: str) -> None:
        match = _FEED_LINE.search(line)
        if match is None:
            return
        broker, state = match.group(1), match.group(2).strip()
        if state in LIVE_STATES or state in DOWN_STATES:
            with self._lock:
                self._states[broker].append((t, state in LIVE_STATES))

    def silenced(self, t: float, brokers: Iterable[str], seconds: float | None = None) -> None:
        """A fault cut the feed at ``t``: for ``seconds``, or (None) until the app says live again."""
        with self._lock:
            for b in brokers:
                self._holes[b].append((t, None if seconds is None else t + seconds))

    def up_intervals(self, broker: str, now: float | None = None) -> list[Interval]:
        end = time.time() if now is None else now
        with self._lock:
            states = sorted(self._states[broker])
            holes = list(self._holes[broker])
        live: list[Interval] = []
        since: float | None = None
        for t, up in states:
            if up and since is None:
                since = t
            elif not up and since is not None:
                live.append((since, t))
                since = None
        if since is not None:
            live.append((since, end))
        resolved: list[Interval] = []
        for start, hard_end in holes:
            if hard_end is None:
                hard_end = next((t for t, up in states if up and t > start), end)
            resolved.append((start, hard_end))
        return _subtract(live, resolved)

    def available(self, broker: str, t0: float, t1: float, now: float | None = None) -> float:
        return _overlap(self.up_intervals(broker, now), t0, t1)

    def is_up(self, broker: str, t: float | None = None) -> bool:
        at = time.time() if t is None else t
        return any(a <= at < b for a, b in self.up_intervals(broker, at + 1e-3))

    def longest_outage(self, broker: str, now: float) -> tuple[float, float]:
        """The longest time the feed was not working while the app ran: (seconds, start)."""
        ups = self.up_intervals(broker, now)
        worst = (0.0, 0.0)
        with self._lock:
            generations = [(a, min(b, now)) for a, b in self.generations]
        for g0, g1 in generations:
            inside = [(max(a, g0), min(b, g1)) for a, b in ups if b > g0 and a < g1]
            edges = [g0, *[x for iv in inside for x in iv], g1]
            for i in range(0, len(edges), 2):
                gap = edges[i + 1] - edges[i]
                if gap > worst[0]:
                    worst = (gap, edges[i])
        return worst


# ================================================================================================ the app


class AppProcess:
    """``python -m trailstop_gui --headless`` in a subprocess; stdout to the tracker and a transcript."""

    def __init__(
        self,
        sim_url: str,
        data_dir: Path,
        rule: str,
        tracker: FeedTracker,
        transcript: TextIO,
        env: dict[str, str] | None = None,
        extra_args: Iterable[str] = (),
    ) -> None:
        self.env = dict(env or {})
        self.extra_args = list(extra_args)
        self.sim_url = sim_url
        self.data_dir = data_dir
        self.rule = rule
        self.tracker = tracker
        self.transcript = transcript
        self.proc: subprocess.Popen[str] | None = None
        self.generation = 0
        self.started_at = 0.0
        self.ready_at: float | None = None  # when it logged "headless" (its signal handlers are in place)
        self.lines: list[tuple[float, int, str]] = []
        self.start_times: dict[int, float] = {}
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._alive: int | None = None  # the generation whose lines still say something about the feeds
        self.on_line: Callable[[float, str], None] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONUNBUFFERED="1", **self.env)
        command = [
            sys.executable,
            "-m",
            "trailstop_gui",
            "--headless",
            "--sim",
            self.sim_url,
            "--data-dir",
            str(self.data_dir),
            "--broker",
            "both",
            "--auto-protect",
            self.rule,
            *self.extra_args,
        ]
        self.generation += 1
        self.ready_at = None
        self.started_at = time.time()
        self.start_times[self.generation] = self.started_at
        self.tracker.process_started(self.started_at)
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self._alive = self.generation
        self.transcript.write(f"----- start {self.generation} at {self.started_at:.3f}\n")
        self._reader = threading.Thread(
            target=self._read, args=(self.proc, self.generation), name="chaos-app-reader", daemon=True
        )
        self._reader.start()

    def _read(self, proc: subprocess.Popen[str], generation: int) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            t = time.time()
            line = raw.rstrip("\n")
            with self._lock:
                self.lines.append((t, generation, line))
                self.transcript.write(f"{t:.3f} {line}\n")
            if generation != self._alive:
                continue  # signalled already: whatever it says now, it is going down
            if " headless; data in " in line:
                self.ready_at = t
            self.tracker.on_line(t, line)
            if self.on_line is not None:
                self.on_line(t, line)

    def stop(self, sig: int) -> int | None:
        """Send ``sig`` and wait for the process to end; returns its exit code."""
        proc = self.proc
        if proc is None:
            return None
        t = time.time()
        self._alive = None
        if proc.poll() is None:
            proc.send_signal(sig)
        self.tracker.process_ended(t)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        with self._lock:
            self.transcript.write(f"----- end {self.generation}: signal {sig}, exit code {code}\n")
        self.proc = None
        return code

    def output(self) -> list[tuple[float, int, str]]:
        with self._lock:
            return list(self.lines)


# ================================================================================================ the trader


def _no_pool(client: Any) -> None:
    """Every ApiClient starts a thread pool for async requests, never used here: close it now, not at exit."""
    client.pool.close()
    client.pool.join()


class OutsideTrader:
    """The trader's own scripts: positions opened (and closed by hand) with the brokers' official clients."""

    def __init__(self, sim: SimulatorHandle, proxy_url: str | None = None) -> None:
        self.info = sim.info
        self.url = sim.url
        self.control_headers = sim.control_headers
        self.proxy_url = proxy_url  # where the trader's own orders leave from, if not this machine
        self._locks = {b: threading.Lock() for b in BROKERS}
        self._kite: Any = None
        self._upstox: Any = None

    def _kite_client(self, fresh: bool) -> Any:
        from kiteconnect import KiteConnect

        if self._kite is None or fresh:
            section = self.info["kite"]
            proxies = {"http": self.proxy_url, "https": self.proxy_url} if self.proxy_url else None
            kite = KiteConnect(section["api_key"], root=section["api_root"], timeout=3, proxies=proxies)
            session = kite.generate_session(kite_request_token(self.info), api_secret=section["api_secret"])
            kite.set_access_token(session["access_token"])
            self._kite = kite
        return self._kite

    def _upstox_orders(self, fresh: bool) -> Any:
        import upstox_client

        if self._upstox is None or fresh:
            section = self.info["upstox"]
            config = upstox_client.Configuration()  # a copy of the first one ever made: set everything
            config.sandbox = False
            config.host = section["api_root"]
            config.order_host = section["order_root"]
            config.access_token = ""
            login = upstox_client.ApiClient(config)
            _no_pool(login)
            token = upstox_client.LoginApi(login).token(
                "2.0",
                code=upstox_code(self.info),
                client_id=section["client_id"],
                client_secret=section["client_secret"],
                redirect_uri=section["redirect_uri"],
                grant_type="authorization_code",
                _request_timeout=(3, 3),
            )
            config.access_token = token.access_token
            client = upstox_client.ApiClient(config)
            _no_pool(client)
            if self.proxy_url:
                from urllib3.contrib.socks import SOCKSProxyManager

                client.rest_client.pool_manager = SOCKSProxyManager(self.proxy_url)
            self._upstox = upstox_client.OrderApi(client)
        return self._upstox

    def _send(self, broker: str, order: dict[str, Any], fresh: bool) -> None:
        if broker == "kite":
            exchange, symbol = order["symbol"].split(":", 1)
            self._kite_client(fresh).place_order(
                variety="regular",
                exchange=exchange,
                tradingsymbol=symbol,
                transaction_type=order["side"],
                quantity=order["quantity"],
                product=order["product"],
                order_type="MARKET",
                market_protection=-1,
                tag=order["tag"],
            )
            return
        import upstox_client

        body = upstox_client.PlaceOrderRequest(
            quantity=order["quantity"],
            product="I" if order["product"] == "MIS" else "D",
            validity="DAY",
            price=0.0,
            tag=order["tag"],
            instrument_token=order["upstox_key"],
            order_type="MARKET",
            transaction_type=order["side"],
            disclosed_quantity=0,
            trigger_price=0.0,
            is_amo=False,
        )
        self._upstox_orders(fresh).place_order(body, "2.0", _request_timeout=(3, 3))

    def order_status(self, tag: str) -> str | None:
        """The status of the order carrying ``tag`` in the simulator's log, if it got there."""
        for order in requests.get(f"{self.url}/_sim/orders", headers=self.control_headers, timeout=10).json():
            if order.get("tag") == tag:
                return str(order["status"])
        return None

    def place(self, broker: str, order: dict[str, Any]) -> str:
        """Place an order; after any error look its tag up before trying again. Returns its final verdict:
        ``placed``, ``rejected`` or ``failed``."""
        with self._locks[broker]:
            fresh = False
            for attempt in range(8):
                try:
                    self._send(broker, order, fresh)
                except Exception as exc:
                    name = type(exc).__name__
                    fresh = name == "TokenException" or getattr(exc, "status", None) == 401 or fresh
                    status = self.order_status(order["tag"])
                    if status is None:
                        time.sleep(0.3 * (attempt + 1))
                        continue
                else:
                    fresh = False
                    status = self.order_status(order["tag"]) or "?"
                return "rejected" if status == "REJECTED" else "placed"
        return "failed"


# ================================================================================================ episodes


@dataclass
class Episode:
    """One position from entry to flat: opened outside, adopted, trailed, crossed, exited."""

    number: int
    broker: str
    symbol: str  # NSE:INFY
    instrument: str  # as the app stores it: the Kite token, or the Upstox instrument key
    upstox_key: str
    tick: float
    side: str  # entry side: BUY long, SELL short
    product: str
    quantity: int
    tag: str
    state: str = "new"
    base: float = 0.0
    price: float = 0.0
    peak: float = 0.0
    steps: int = 0
    next_push: float = 0.0
    next_check: float = 0.0
    entered_at: float = 0.0
    protection_id: int | None = None
    crossed_at: float | None = None
    crossed_stop: float | None = None
    finished_at: float | None = None
    outcome: str = ""
    problem: str = ""
    flattens: int = 0
    flatten_tag: str = ""
    twice: bool = False  # a second protection was added for it
    future: Future[str] | None = None

    @property
    def sign(self) -> int:
        return 1 if self.side == "BUY" else -1

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.broker, self.symbol, self.product)

    @property
    def label(self) -> str:
        kind = "long" if self.side == "BUY" else "short"
        return f"#{self.number} {self.broker} {self.symbol} {self.product} {kind} x{self.quantity}"


HOLDING_PLAYS = ("sell part", "sell all", "buy back")


@dataclass
class HoldingPlay:
    """Delivery holdings traded outside the app while their protection watches them, then (unless all
    were sold) the stop crossed: the app must sell exactly what its protection still covers."""

    number: int
    broker: str
    symbol: str
    instrument: str
    upstox_key: str
    tick: float
    held: int  # every listing of the ISIN, T1 included
    play: str
    start_at: float
    state: str = "waiting"
    protection_id: int | None = None
    quantity: int = 0  # to sell (and, for a buy-back, to buy back)
    sold: int = 0
    bought: int = 0
    tags: list[str] = field(default_factory=list)
    future: Future[str] | None = None
    next_push: float = 0.0
    next_check: float = 0.0
    ready_at: float = 0.0
    price: float = 0.0
    crossed_at: float | None = None
    crossed_stop: float | None = None
    outcome: str = ""
    problem: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.broker, self.symbol, "CNC")

    @property
    def label(self) -> str:
        return f"holding #{self.number} {self.broker} {self.symbol} x{self.held} ({self.play})"


def _play_outcome(status: str, reason: str) -> str:
    if status == "CLOSED":
        return "closed outside" if reason == "external" else f"{reason} (sold)"
    return "exit refused" if status == "EXIT_FAILED" else status.lower()


def _truth(exchange: Any, broker: str) -> Any:
    """The demo user's account as it is: the harness never reads through the book_lag fault (its
    exchange.orders/positions/trades answer as the lagging REST API does; a trader fooled by them
    bought a short back five times over)."""
    return exchange.account(broker, USERS[broker])


def _round_tick(price: float, tick: float, up: bool) -> float:
    steps = price / tick
    steps = math.ceil(steps - 1e-9) if up else math.floor(steps + 1e-9)
    return round(max(steps, 1) * tick, 2)


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
                *(["--baskets", str(self._write_baskets(folder, config))] if config.baskets else []),
            ],
        )
        self.app.on_line = self.on_app_line
        self.route_proxy: Any = None
        self.trader_proxy: Any = None
        self.route_resume_at: float | None = None
        if config.route_flaps:
            self._set_up_route()
        self.trader = OutsideTrader(self.sim, self.trader_proxy.url if self.trader_proxy else None)
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="chaos-trader")
        self.episodes: list[Episode] = []
        self.active: list[Episode] = []
        self.used_keys: set[tuple[str, str, str]] = set()
        self.busy_symbols: set[str] = set()
        self.next_start = 0.0
        self.instruments = [i for i in requests.get(f"{self.sim.url}/_sim/instruments", timeout=10).json()]
        # The demo holdings are worked by the holding plays only: an episode on the same stock would mix
        # its own delivery buys with them.
        self.held: Counter[str] = Counter()
        for symbol, quantity, *_rest in DEMO_HOLDINGS:
            self.held[symbol] += quantity
        self.equities = [
            i
            for i in self.instruments
            if i["instrument_type"] == "EQ" and i["tradable"] and i["symbol"] not in self.held
        ]
        self.plays: list[HoldingPlay] = []
        self.futures = [i for i in self.instruments if i["instrument_type"] == "FUT"]
        self.kill_request: float | None = None
        self.restart_due: float | None = None
        self.chaos_stop = threading.Event()
        self.app_lock = threading.Lock()
        self.clears: list[tuple[float, str]] = []
        self.last_kill = 0.0
        self.outside_tags: set[str] = set()  # every order the trader sent (entries, closes, holdings)
        self.extra_protections: set[int] = set()  # second protections of a position, made while down
        self.options = [i for i in self.instruments if i["instrument_type"] in ("CE", "PE") and i["tradable"]]

    # ------------------------------------------------------------------------------------- control

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.sim.url}/_sim/{path}"
        if body is None:
            response = requests.get(url, headers=self.sim.control_headers, timeout=10)
        else:
            response = requests.post(url, json=body, headers=self.sim.control_headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def push(self, ep: Episode, ltp: float) -> None:
        ltp = _round_tick(ltp, ep.tick, up=False)
        self.sim.set_price(ep.symbol, ltp, bid=round(ltp - ep.tick, 2), ask=round(ltp + ep.tick, 2))
        ep.price = ltp
        self.report.ticks += 1

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

    def net_position(self, ep: Episode) -> int:
        """The broker's net quantity for the episode's instrument and product (the simulator's own book)."""
        exchange = self.sim.exchange

        def read() -> int:
            for pos in _truth(exchange, ep.broker).positions.values():
                if pos.instrument.symbol == ep.symbol and pos.product == ep.product:
                    return int(pos.quantity)
            return 0

        return self.sim.call(read)

    # ------------------------------------------------------------------------------------- the app

    def wait_live(self, timeout: float = 30.0) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(self.tracker.is_up(b) for b in BROKERS):
                return True
            time.sleep(0.05)
        return False

    def restart_app(self, why: str, sig: int) -> None:
        with self.app_lock:
            if self.app.running:
                ready = self.app.ready_at is not None
                code = self.app.stop(sig)
                name = "SIGKILL" if sig == signal.SIGKILL else "SIGTERM"
                self.report.kills[name] += 1
                self.report.kills[why] += 1
                if sig == signal.SIGTERM and ready and code != 0:
                    self.violation("unclean shutdown", f"SIGTERM ({why}) gave exit code {code}")
            if self.rng.random() < 0.4:
                self.protect_twice()
            time.sleep(self.rng.uniform(*self.config.downtime))
            self.app.start()
            self.last_kill = time.time()

    def violation(self, kind: str, detail: str) -> None:
        self.report.violations.append(Violation(self.index, kind, detail))

    @staticmethod
    def _write_baskets(folder: Path, config: ChaosConfig) -> Path:
        path = folder / "baskets.json"
        rules = {"max_loss": config.basket_max_loss}
        baskets = [
            {"name": f"chaos {broker}", "account": broker, "positions": "all", "rules": rules}
            for broker in BROKERS
        ]
        path.write_text(json.dumps({"baskets": baskets}), encoding="utf-8")
        return path

    def protect_twice(self) -> None:
        """A second protection of a position already protected, stored as the window's Protect (adopt)
        stores one: the whole position, OPEN, its entry price, the safety default. Written while the app
        is down (one writer at a time); the next start must share the position between the two."""
        from trailstop_gui.models.domain import Status
        from trailstop_gui.models.store import ProtectionStore

        candidates = [
            ep
            for ep in self.active
            if ep.state == "trailing" and ep.protection_id is not None and not ep.twice
        ]
        if not candidates or not self.db_path.exists():
            return
        ep = self.rng.choice(candidates)
        store = ProtectionStore(self.db_path)
        try:
            p = store.get(int(ep.protection_id or 0))
            if p.status is not Status.OPEN or not p.filled_quantity:
                return
            second = store.create_protection(
                account_id=p.account_id,
                broker=p.broker,
                instrument=p.instrument,
                symbol=p.symbol,
                exchange=p.exchange,
                side=p.side,
                product=p.product,
                quantity=p.filled_quantity,
                filled_quantity=p.filled_quantity,
                tick_size=p.tick_size,
                rule=p.rule,
                entry_price=p.entry_price,
                status=Status.OPEN,
                reason="adopted",
                safety_enabled=self.config.safety,
            )
        finally:
            store.close()
        ep.twice = True
        self.extra_protections.add(second.id)
        self.report.episodes["protected twice"] += 1

    def on_app_line(self, t: float, line: str) -> None:
        if self.config.baskets and "breached:" in line and "basket" in line:
            self.report.basket_breaches += 1
            if self.kill_request is None and self.rng.random() < 0.6:
                self.kill_request = t + self.rng.uniform(
                    0.0, 0.3
                )  # a kill in the middle of the basket's exits
        # The headless app cannot log in by itself once its login failed or its token was refused: the
        # trader does it, which for the headless app means a restart (it logs in as it starts).
        if ("simulator login failed" in line or ": login needed" in line) and self.restart_due is None:
            self.restart_due = t + self.rng.uniform(0.5, 3.0)

    def restart_if_due(self) -> None:
        if self.restart_due is not None and time.time() >= self.restart_due:
            self.restart_due = None
            sig = signal.SIGTERM if self.rng.random() < 0.5 else signal.SIGKILL
            self.restart_app("new login", sig)

    # ------------------------------------------------------------------------------------- order route

    def _set_up_route(self) -> None:
        """Two real SOCKS5 proxies on loopback aliases, both registered; the app's route stored in its data
        folder (as the Accounts dialog stores it) before its first start."""
        from tests.proxies import Socks5Proxy
        from trailstop_gui.models.store import ProtectionStore
        from trailstop_gui.runtime import _sim_account
        from trailstop_gui.services.brokers.order_route import parse_route

        self.route_proxy = Socks5Proxy("127.0.0.2").start()
        self.trader_proxy = Socks5Proxy("127.0.0.3").start()
        self.control("ips", {"ips": ["127.0.0.2", "127.0.0.3"]})
        self.data_dir.mkdir(parents=True, exist_ok=True)
        store = ProtectionStore(self.db_path)
        try:
            for broker in BROKERS:
                account = _sim_account(store, self.sim.info, broker, "live")
                store.set_setting(f"order_route.{account.id}", parse_route(self.route_proxy.url).as_setting())
        finally:
            store.close()

    def flap_route(self, now: float) -> None:
        """Turn the app's order route off for a while (its orders then fail to connect), then on again."""
        if self.route_resume_at is not None:
            if now >= self.route_resume_at:
                self.route_proxy.resume()
                self.route_resume_at = None
            return
        seconds = self.rng.uniform(*self.config.route_down)
        self.route_proxy.pause()
        self.route_resume_at = now + seconds
        # Exits cannot leave meanwhile: like a dead feed, the time does not count against the budgets.
        self.tracker.silenced(now, BROKERS, seconds)
        self.report.faults["route_off"] += 1

    # ------------------------------------------------------------------------------------- chaos

    def chaos_loop(self) -> None:
        cfg = self.config
        now = time.time()
        next_fault = now + self.rng.uniform(*cfg.fault_every)
        next_kill = now + self.rng.uniform(*cfg.kill_every)
        next_flap = now + self.rng.uniform(*cfg.route_every)
        while not self.chaos_stop.wait(0.05):
            now = time.time()
            try:
                if self.route_proxy is not None and (self.route_resume_at is not None or now >= next_flap):
                    self.flap_route(now)
                    if self.route_resume_at is None:
                        next_flap = now + self.rng.uniform(*cfg.route_every)
                if self.app.proc is not None and self.app.proc.poll() is not None:
                    code = self.app.proc.returncode
                    self.violation("app exited by itself", f"exit code {code}")
                    self.restart_app("after a crash", signal.SIGKILL)
                elif self.restart_due is not None and now >= self.restart_due:
                    self.restart_if_due()
                elif self.kill_request is not None and now >= self.kill_request:
                    self.kill_request = None
                    self.restart_app("just after a crossing", signal.SIGKILL)
                elif now >= next_kill:
                    sig = signal.SIGTERM if self.rng.random() < 0.15 else signal.SIGKILL
                    self.restart_app("at a random moment", sig)
                    next_kill = time.time() + self.rng.uniform(*cfg.kill_every)
                if now >= next_fault:
                    self.inject_fault()
                    next_fault = time.time() + self.rng.uniform(*cfg.fault_every)
                for when, kind in list(self.clears):
                    if now >= when:
                        self.clears.remove((when, kind))
                        self.control("fault", {"fault": "clear", "kind": kind})
            except Exception as exc:  # the harness must outlive anything the app or the network does
                self.out(f"  chaos thread: {type(exc).__name__}: {exc}")

    def inject_fault(self) -> None:
        rng = self.rng
        kinds = {
            "drop_ws": 12,
            "stall_ws": 6,
            "http_error": 18,
            "slow": 5,
            "reject_orders": 5,
            "expire_tokens": 3,
            "fill_delay": 6,
            "partial_fill": 6,
            "malformed": 6,
            "lost_reply": 5,
            "book_lag": 5,
            "freeze_quantity": 5,
        }
        kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
        spec: dict[str, Any] = {"fault": kind}
        broker = rng.choice([None, "kite", "upstox"])
        affected = BROKERS if broker is None else (broker,)
        now = time.time()
        if kind == "drop_ws":
            spec.update(mode=rng.choice(["abort", "close"]), broker=broker)
            self.tracker.silenced(now, affected)
        elif kind == "stall_ws":
            seconds = round(rng.uniform(1.5, 8.0), 2)
            spec["seconds"] = seconds
            self.tracker.silenced(now, BROKERS, seconds)
        elif kind == "http_error":
            spec["status"] = rng.choice([429, 500, 502, 503, 504])
            spec["path"] = rng.choice(
                ["/orders", "/portfolio", "/v2/order", "/v2/portfolio", "/v3/order", None]
            )
            spec["method"] = rng.choice([None, "POST", "GET"])
            # A 5xx may come after the broker acted on the request (ambiguous); a 429 means it did not.
            spec["phase"] = "before" if spec["status"] == 429 else rng.choice(["before", "after"])
            if spec["status"] == 429 and rng.random() < 0.6:
                # Retry-After as brokers send it, and broken ones (an hour, infinity): capped by the app.
                spec["retry_after"] = rng.choice([1, 2, "3600", "inf", "-1"])
            if rng.random() < 0.5:
                spec["count"] = rng.randint(1, 4)
            else:
                spec["probability"] = round(rng.uniform(0.2, 0.6), 2)
                self.clears.append((now + rng.uniform(1.0, 4.0), "http_error"))
        elif kind == "slow":
            spec.update(
                seconds=round(rng.uniform(4.0, 9.0), 2),
                path=rng.choice(["/orders", "/v2/order", "/portfolio", "/v2/portfolio"]),
                count=1,
                phase="after",
            )
        elif kind == "reject_orders":
            spec.update(count=1, broker=broker, reason=INJECTED_REJECTION)
        elif kind == "expire_tokens":
            spec["broker"] = broker
            self.tracker.silenced(now, affected)  # until a new login (see on_app_line)
        elif kind == "fill_delay":
            spec["seconds"] = round(rng.uniform(0.5, 2.5), 2)
            self.clears.append((now + rng.uniform(2.0, 6.0), "fill_delay"))
        elif kind == "partial_fill":
            spec.update(
                ratio=round(rng.uniform(0.3, 0.7), 2), count=1, rest_after=round(rng.uniform(0.3, 2), 2)
            )
        elif kind == "malformed":
            # An unreadable reply (null list, missing or textual quantity) must read as an error, never flat.
            spec.update(
                path=rng.choice(
                    [
                        "/portfolio/positions",
                        "/portfolio/holdings",
                        "/orders",
                        "/v2/portfolio/short-term-positions",
                        "/v2/portfolio/long-term-holdings",
                        "/v2/order/retrieve-all",
                    ]
                ),
                method="GET",
                mode=rng.choice(["null_list", "missing_field", "string_number"]),
                field=rng.choice(["quantity", "filled_quantity"]),
                value=rng.choice([None, "", "n/a"]),
                count=rng.randint(1, 3),
            )
        elif kind == "book_lag":
            # The order book, trades and positions trail the fills (Kite: 0.5-2 s); the streams do not.
            spec["seconds"] = round(rng.uniform(0.5, 2.0), 2)
            self.clears.append((now + rng.uniform(2.0, 8.0), "book_lag"))
        elif kind == "freeze_quantity":
            # A position above the exchange's freeze quantity: its exit is refused unless sliced (Kite:
            # autoslice, at most 10 slices; Upstox: slice=true). Slices stay within both brokers' caps.
            worked = [ep for ep in self.active if ep.state in ("trailing", "crossing", "waiting")]
            held = [p for p in self.plays if p.state not in ("done", "waiting") and p.held > 1]
            targets = [(ep.symbol, ep.quantity) for ep in worked if ep.quantity > 1]
            targets += [(p.symbol, p.held) for p in held]
            if not targets:
                return
            symbol, quantity = rng.choice(targets)
            lot = next((i["lot_size"] for i in self.instruments if i["symbol"] == symbol), 1)
            if quantity <= lot:
                return
            lots = quantity // lot
            spec.update(
                symbol=symbol, quantity=lot * rng.randint(max(1, math.ceil(lots / 10)), max(1, lots - 1))
            )
            self.clears.append((now + rng.uniform(3.0, 10.0), "freeze_quantity"))
        elif kind == "lost_reply":
            # The broker takes the order and the answer never comes (issue 13): the exit must be found by
            # its tag, never sent twice.
            spec.update(
                path=rng.choice(["/orders", "/v2/order", "/v3/order", "/portfolio", None]),
                method=rng.choice(["POST", None]),
                count=rng.randint(1, 2),
            )
        self.control("fault", spec)
        self.report.faults[kind] += 1

    # ------------------------------------------------------------------------------------- workload

    def new_episode(self, now: float) -> Episode | None:
        rng = self.rng
        broker = rng.choice(BROKERS)
        product = rng.choices(["MIS", "CNC", "NRML"], weights=[55, 30, 15])[0]
        pool = self.futures if product == "NRML" else self.equities
        if product != "CNC" and self.options and rng.random() < 0.2:
            pool = self.options  # no SL-M on options (NSE, 2021): the safety stop is an SL there
        candidates = [
            i
            for i in pool
            if i["symbol"] not in self.busy_symbols and (broker, i["symbol"], product) not in self.used_keys
        ]
        if not candidates:
            return None
        inst = rng.choice(candidates)
        side = "BUY" if product == "CNC" else rng.choice(["BUY", "SELL"])
        quantity = inst["lot_size"] if inst["lot_size"] > 1 else rng.randint(1, 40)
        number = len(self.episodes) + 1
        ep = Episode(
            number=number,
            broker=broker,
            symbol=inst["symbol"],
            instrument=str(inst["kite_token"]) if broker == "kite" else inst["upstox_key"],
            upstox_key=inst["upstox_key"],
            tick=inst["tick_size"],
            side=side,
            product=product,
            quantity=quantity,
            tag=f"CX{self.index}N{number}",
        )
        self.episodes.append(ep)
        self.active.append(ep)
        self.used_keys.add(ep.key)
        self.busy_symbols.add(ep.symbol)
        self.report.episodes[broker] += 1
        self.report.episodes["long" if side == "BUY" else "short"] += 1
        self.report.episodes[product] += 1
        ep.base = float(self.quote(ep.symbol)["ltp"])
        self.push(ep, ep.base)
        ep.peak = ep.price
        order = {
            "symbol": ep.symbol,
            "upstox_key": ep.upstox_key,
            "side": side,
            "product": product,
            "quantity": quantity,
            "tag": ep.tag,
        }
        self.outside_tags.add(ep.tag)
        ep.future = self.pool.submit(self.trader.place, broker, order)
        ep.state = "opening"
        ep.next_push = now + 0.3
        return ep

    def protection_row(self, ep: Episode) -> list[tuple[Any, ...]]:
        return self.db(
            "SELECT id, status, stop FROM protection WHERE broker = ? AND instrument = ? AND product = ?"
            " ORDER BY id",
            (ep.broker, ep.instrument, ep.product),
        )

    def noise(self, ep: Episode, now: float, around: float, spread: float) -> None:
        if now >= ep.next_push:
            self.push(ep, around * (1 + self.rng.uniform(-spread, spread)))
            ep.next_push = now + self.rng.uniform(0.2, 0.4)

    def finish(self, ep: Episode, outcome: str, now: float) -> None:
        ep.outcome = outcome
        ep.state = "done"
        ep.finished_at = now
        self.active.remove(ep)
        self.busy_symbols.discard(ep.symbol)

    def advance(self, ep: Episode, now: float) -> None:
        if ep.state == "opening":
            self.noise(ep, now, ep.base, 0.002)
            if ep.future is not None and ep.future.done():
                verdict = ep.future.result()
                if verdict != "placed":
                    self.report.entries_not_placed += 1
                    self.finish(ep, f"entry {verdict}", now)
                    return
                ep.state = "protecting"
                ep.entered_at = now
        elif ep.state == "protecting":
            self.noise(ep, now, ep.base, 0.002)
            if now >= ep.next_check:
                ep.next_check = now + 0.5
                self.check_protected(ep, now)
        elif ep.state == "trailing":
            if now >= ep.next_push:
                if self.rng.random() < 0.8:
                    move = ep.sign * self.rng.uniform(0.001, 0.006)
                else:
                    move = -ep.sign * self.rng.uniform(0.0, 0.003)
                price = ep.price * (1 + move)
                # Pull-backs stay well inside the 2 % trail: only the crash below crosses the stop.
                price = max(price, ep.peak * 0.992) if ep.sign > 0 else min(price, ep.peak * 1.008)
                self.push(ep, price)
                ep.peak = max(ep.peak, ep.price) if ep.sign > 0 else min(ep.peak, ep.price)
                ep.steps -= 1
                ep.next_push = now + self.rng.uniform(0.2, 0.35)
                if ep.steps <= 0:
                    ep.state = "crossing"
                    ep.next_push = now + 0.35  # the write-behind stop reaches the database meanwhile
        elif ep.state == "crossing":
            if now >= ep.next_push:
                self.cross(ep)
        elif ep.state == "waiting":
            if ep.crossed_at is not None and now >= ep.next_push:
                assert ep.crossed_stop is not None
                beyond = ep.crossed_stop * (1 - ep.sign * 0.004)
                self.push(ep, beyond - ep.sign * self.rng.randint(0, 2) * ep.tick)
                ep.next_push = now + self.rng.uniform(0.2, 0.4)
            if now >= ep.next_check:
                ep.next_check = now + 0.25
                self.check_flat(ep, now)
        elif ep.state == "flatten" and now >= ep.next_check:
            net = self.net_position(ep)
            if net == 0:
                self.finish(ep, ep.outcome or "flat", now)
                return
            ep.flattens += 1
            if ep.flattens > 6:
                ep.problem = ep.problem or f"the trader could not close it ({net} left)"
                self.finish(ep, "left open", now)
                return
            ep.flatten_tag = f"CX{self.index}N{ep.number}F{ep.flattens}"
            order = {
                "symbol": ep.symbol,
                "upstox_key": ep.upstox_key,
                "side": "SELL" if net > 0 else "BUY",
                "product": ep.product,
                "quantity": abs(net),
                "tag": ep.flatten_tag,
            }
            self.outside_tags.add(ep.flatten_tag)
            ep.future = self.pool.submit(self.trader.place, ep.broker, order)
            ep.state = "flattening"
            ep.next_check = now + 20.0  # the longest a placed order is waited for
        elif ep.state == "flattening" and ep.future is not None and ep.future.done():
            # Only once the trader's order is final is the position looked at again: a fill delay must
            # not make the trader sell twice.
            status, _filled = self.entry_state(ep, ep.flatten_tag)
            if status in ("COMPLETE", "CANCELLED", "REJECTED", "?") or now >= ep.next_check:
                ep.state = "flatten"
                ep.next_check = now + 0.3

    def exited_by_basket(self, pid: object) -> bool:
        """With --baskets: the protection was exited by a basket's breach (its TRIGGERED says so)."""
        if not self.config.baskets:
            return False
        rows = self.db(
            "SELECT count(*) FROM journal_event WHERE protection_id = ? AND kind = 'transition'"
            " AND new = 'TRIGGERED' AND message LIKE 'basket %'",
            (int(str(pid)),),
        )
        return bool(rows and rows[0][0])

    def cross(self, ep: Episode) -> None:
        rows = self.protection_row(ep)
        if not rows or rows[0][1] != "OPEN":
            if not (rows and self.exited_by_basket(rows[0][0])):  # a basket's exit came first: no problem
                ep.problem = f"protection was {rows[0][1] if rows else 'gone'} before its stop was crossed"
            else:
                ep.outcome = "exited by a basket"
            ep.state = "waiting"
            return
        stop = float(rows[0][2])
        target = stop * (1 - ep.sign * self.rng.uniform(0.003, 0.015))
        target = _round_tick(target, ep.tick, up=ep.sign < 0)
        ep.crossed_at = time.time()
        ep.crossed_stop = stop
        if self.rng.random() < 0.4:
            percent = (target / ep.price - 1) * 100
            answer = self.control("fault", {"fault": "price_gap", "symbol": ep.symbol, "percent": percent})
            ep.price = float(answer["quote"]["ltp"])
            self.report.faults["price_gap"] += 1
            self.report.ticks += 1
            if (ep.price - stop) * ep.sign > 0:  # a gap that fell short: finish the move by hand
                self.push(ep, target)
        else:
            self.push(ep, target)
        ep.state = "waiting"
        ep.next_push = time.time() + 0.3
        if (
            self.rng.random() < self.config.kill_after_crossing
            and self.kill_request is None
            and time.time() - self.last_kill > 4.0
        ):
            self.kill_request = time.time() + self.rng.uniform(0.0, 0.4)

    def entry_state(self, ep: Episode, tag: str | None = None) -> tuple[str, int]:
        """(status, filled quantity) of the episode's entry order (or another of its orders)."""
        exchange = self.sim.exchange
        wanted = tag or ep.tag

        def read() -> tuple[str, int]:
            for order in _truth(exchange, ep.broker).orders.values():
                if order.tag == wanted:
                    return order.status.value, order.state.filled_quantity
            return "?", 0

        return self.sim.call(read)

    def check_protected(self, ep: Episode, now: float) -> None:
        """The whole position must be protected before the price is moved: entry final, quantities equal."""
        rows = self.db(
            "SELECT id, status, filled_quantity FROM protection WHERE broker = ? AND instrument = ?"
            " AND product = ? ORDER BY id DESC LIMIT 1",
            (ep.broker, ep.instrument, ep.product),
        )
        status, _filled = self.entry_state(ep)
        net = self.net_position(ep)
        final = status in ("COMPLETE", "CANCELLED", "REJECTED")
        if final and net == 0:
            self.finish(ep, "entry never filled", now)
            return
        if rows and final:
            pid, state, covered = rows[0]
            ep.protection_id = int(pid)
            if state == "OPEN" and covered == abs(net):
                ep.state = "trailing"
                ep.steps = self.rng.randint(4, 20)
                ep.peak = ep.price
                return
            if state != "OPEN":
                if self.exited_by_basket(pid):
                    ep.outcome = "exited by a basket"
                else:
                    ep.problem = f"protection {pid} was {state} before its stop was crossed"
                ep.state = "waiting"
                return
        if self.tracker.available(ep.broker, ep.entered_at, now) > self.config.protect_budget:
            what = f"protection covers {rows[0][2]} of {abs(net)}" if rows else "no protection"
            ep.problem = (
                f"not fully protected after {self.config.protect_budget:g} s of working feed ({what})"
            )
            ep.state = "flatten"

    def check_flat(self, ep: Episode, now: float) -> None:
        net = self.net_position(ep)
        rows = self.protection_row(ep)
        status = rows[0][1] if rows else None
        if status == "EXIT_FAILED":
            ep.outcome = "exit refused; closed by the trader"
            ep.state = "flatten"
            return
        # Flat, and every protection of it ended (a second one on it may still be closing: the app is not
        # done with the position until then).
        if net == 0 and all(row[1] in TERMINAL for row in rows):
            self.finish(ep, "flat", now)
            return
        since = ep.crossed_at if ep.crossed_at is not None else ep.entered_at
        if self.tracker.available(ep.broker, since, now) > self.config.give_up_after:
            ep.problem = ep.problem or f"still open after {self.config.give_up_after:g} s of working feed"
            ep.state = "flatten"

    def step(self, now: float, starting: bool) -> None:
        if starting and len(self.active) < self.config.slots and now >= self.next_start:
            self.next_start = now + self.config.start_every
            self.new_episode(now)
        for ep in list(self.active):
            self.advance(ep, now)
        for play in self.plays:
            if play.state != "done" and (now >= play.start_at or not starting):
                self.advance_play(play, now)

    # ------------------------------------------------------------------------------------- holdings

    def new_plays(self, now: float) -> None:
        """One play per broker and demo holding, starting at random moments of the run."""
        by_symbol = {i["symbol"]: i for i in self.instruments}
        for broker in BROKERS:
            for symbol, held in sorted(self.held.items()):
                inst = by_symbol[symbol]
                play = HoldingPlay(
                    number=len(self.plays) + 1,
                    broker=broker,
                    symbol=symbol,
                    instrument=str(inst["kite_token"]) if broker == "kite" else inst["upstox_key"],
                    upstox_key=inst["upstox_key"],
                    tick=inst["tick_size"],
                    held=held,
                    play=self.rng.choice(HOLDING_PLAYS),
                    start_at=now + self.rng.uniform(2.0, self.config.duration * 0.6),
                )
                self.plays.append(play)
                self.report.episodes["holding"] += 1
                self.report.holdings[play.play] += 1

    def play_row(self, play: HoldingPlay) -> tuple[Any, ...] | None:
        """(id, status, stop, filled_quantity, reason) of the play's protection (the holding's first)."""
        if play.protection_id is None:
            rows = self.db(
                "SELECT id FROM protection WHERE broker = ? AND instrument = ? AND product = 'CNC'"
                " AND status = 'OPEN' AND filled_quantity = ? ORDER BY id LIMIT 1",
                (play.broker, play.instrument, play.held),
            )
            if not rows:
                return None
            play.protection_id = int(rows[0][0])
        rows = self.db(
            "SELECT id, status, stop, filled_quantity, reason FROM protection WHERE id = ?",
            (play.protection_id,),
        )
        return rows[0] if rows else None

    def outside(self, play: HoldingPlay, side: str, quantity: int) -> None:
        tag = f"CX{self.index}H{play.number}{side[0]}"
        play.tags.append(tag)
        self.outside_tags.add(tag)
        order = {
            "symbol": play.symbol,
            "upstox_key": play.upstox_key,
            "side": side,
            "product": "CNC",
            "quantity": quantity,
            "tag": tag,
        }
        play.future = self.pool.submit(self.trader.place, play.broker, order)
        play.next_check = time.time() + 20.0  # the longest a placed order is waited for

    def outside_filled(self, play: HoldingPlay, now: float) -> int | None:
        """The last outside order's filled quantity once it is final (None: not yet)."""
        if play.future is None or not play.future.done():
            return None
        ep = Episode(
            0, play.broker, play.symbol, play.instrument, play.upstox_key, play.tick, "", "CNC", 0, ""
        )
        status, filled = self.entry_state(ep, play.tags[-1])
        if status in ("COMPLETE", "CANCELLED", "REJECTED", "?") or now >= play.next_check:
            return filled
        return None

    def push_play(self, play: HoldingPlay, ltp: float) -> None:
        ltp = _round_tick(ltp, play.tick, up=False)
        self.sim.set_price(play.symbol, ltp, bid=round(ltp - play.tick, 2), ask=round(ltp + play.tick, 2))
        play.price = ltp
        self.report.ticks += 1

    def basket_took(self, play: HoldingPlay) -> bool:
        """With --baskets: a basket's breach exited this holding's protection (or all of the account's
        delivery shares) before the play got to cross its stop; the play then ends, its one exit checked as
        every exit is."""
        if not self.config.baskets:
            return False
        rows = self.db(
            "SELECT count(*) FROM journal_event"
            " JOIN protection ON protection.id = journal_event.protection_id"
            " WHERE protection.broker = ? AND protection.instrument = ? AND protection.product = 'CNC'"
            " AND journal_event.kind = 'transition' AND journal_event.new = 'TRIGGERED'"
            " AND journal_event.message LIKE 'basket %'",
            (play.broker, play.instrument),
        )
        return bool(rows and rows[0][0])

    def advance_play(self, play: HoldingPlay, now: float) -> None:
        if now < play.next_push and play.state not in ("crossed",):
            return
        if play.state in ("waiting", "before crossing", "watching") and self.basket_took(play):
            play.outcome = "exited by a basket"
            play.state = "done"
            return
        if play.state == "waiting":
            row = self.play_row(play)
            play.next_push = now + 0.5
            if row is None:
                return
            play.quantity = play.held if play.play == "sell all" else self.rng.randint(1, play.held - 1)
            self.outside(play, "SELL", play.quantity)
            play.state = "selling"
        elif play.state == "selling":
            filled = self.outside_filled(play, now)
            if filled is None:
                return
            play.sold = filled
            if play.play == "buy back" and filled:
                self.outside(play, "BUY", filled)
                play.state = "buying"
            else:
                play.state = (
                    "watching" if play.play == "sell all" and filled == play.held else "before crossing"
                )
                play.ready_at = now
                play.next_push = now + self.rng.uniform(0.5, 6.0)  # sometimes a reconcile comes first
        elif play.state == "buying":
            filled = self.outside_filled(play, now)
            if filled is None:
                return
            play.bought = filled
            play.state = "before crossing"
            play.ready_at = now
            play.next_push = now + self.rng.uniform(0.5, 6.0)
        elif play.state == "watching":
            # All sold outside: the protection must close as "closed outside", with no order.
            row = self.play_row(play)
            play.next_push = now + 0.5
            if row is not None and row[1] in TERMINAL:
                play.outcome = _play_outcome(str(row[1]), str(row[4]))
                play.state = "done"
            elif self.tracker.available(play.broker, play.ready_at, now) > self.config.give_up_after:
                play.problem = f"all sold outside, protection still {row[1] if row else 'gone'}"
                play.state = "done"
        elif play.state == "before crossing":
            # Both brokers' accounts hold the same stocks and share one price: the stock is crossed once
            # for both, when neither is still trading it (or waiting for an all-sold holding to close).
            sibling = next(
                (p for p in self.plays if p.symbol == play.symbol and p is not play and p.state != "done"),
                None,
            )
            if sibling is not None and sibling.state != "before crossing":
                play.next_push = now + 0.3
                return
            group = [play] if sibling is None else [play, sibling]
            stops = []
            for member in group:
                row = self.play_row(member)
                if row is None or row[1] != "OPEN":
                    member.problem = f"protection was {row[1] if row else 'gone'} before its stop was crossed"
                    member.state = "done"
                    continue
                stops.append(float(row[2]))
            group = [member for member in group if member.state != "done"]
            if not group:
                return
            stop = min(stops)
            target = _round_tick(stop * (1 - self.rng.uniform(0.003, 0.015)), play.tick, up=False)
            self.push_play(play, target)
            for member in group:
                member.crossed_at = now
                member.crossed_stop = stop
                member.state = "crossed"
                member.next_push = now + 0.3
                member.next_check = now + 0.25
        elif play.state == "crossed":
            assert play.crossed_stop is not None and play.crossed_at is not None
            if now >= play.next_push:
                self.push_play(play, play.crossed_stop * 0.996 - self.rng.randint(0, 2) * play.tick)
                play.next_push = now + self.rng.uniform(0.2, 0.4)
            if now >= play.next_check:
                play.next_check = now + 0.25
                row = self.play_row(play)
                if row is not None and row[1] in TERMINAL:
                    play.outcome = _play_outcome(str(row[1]), str(row[4]))
                    play.state = "done"
                elif self.tracker.available(play.broker, play.crossed_at, now) > self.config.give_up_after:
                    play.problem = f"stop crossed, protection still {row[1] if row else 'gone'}"
                    play.state = "done"

    # ------------------------------------------------------------------------------------- the run

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
            self.new_plays(time.time())
            end = time.time() + cfg.duration
            while time.time() < end:
                self.step(time.time(), starting=True)
                time.sleep(0.03)
            self.chaos_stop.set()
            chaos.join(60)
            # Settle: no more faults or kills; every position still being worked runs to its end.
            self.control("fault", {"fault": "clear"})
            if self.route_proxy is not None:
                self.route_proxy.resume()
            with self.app_lock:
                if not self.app.running:
                    self.app.start()
            deadline = time.time() + cfg.settle_timeout
            while (self.active or any(p.state != "done" for p in self.plays)) and time.time() < deadline:
                self.restart_if_due()
                self.step(time.time(), starting=False)
                time.sleep(0.03)
            for ep in list(self.active):
                ep.problem = ep.problem or f"still {ep.state} when the run ended"
                self.finish(ep, "unfinished", time.time())
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
            for proxy in (self.route_proxy, self.trader_proxy):
                if proxy is not None:
                    proxy.stop()
            self.sim.stop()
            self.transcript.close()
        return self.report


# ================================================================================================ checks


@dataclass
class SimOrder:
    order_id: str
    broker: str
    symbol: str
    product: str
    side: str
    quantity: int
    filled: int
    status: str
    status_message: str
    tag: str
    received_at: float
    tags: tuple[str, ...] = ()  # Kite's tags list: the slices of an autoslice order name their parent

    @property
    def slice_parent(self) -> str | None:
        """The parent order of a Kite autoslice child (``autoslice:<parent>``), else None."""
        return next((t.split(":", 1)[1] for t in self.tags if t.startswith("autoslice:")), None)


@dataclass
class SimTrade:
    order_id: str
    broker: str
    symbol: str
    product: str
    side: str
    quantity: int
    at: float


class Checker:
    """The invariants, checked after a run against the simulator's own records and the app's database."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.report = run.report

    def violation(self, kind: str, detail: str) -> None:
        self.run.violation(kind, detail)

    def load(self) -> None:
        run = self.run
        self.orders = [
            SimOrder(
                order_id=str(o["order_id"]),
                broker=o["broker"],
                symbol=f"{o['exchange']}:{o['tradingsymbol']}",
                product=o["product"],
                side=o["transaction_type"],
                quantity=int(o["quantity"]),
                filled=int(o["filled_quantity"]),
                status=o["status"],
                status_message=o.get("status_message") or "",
                tag=o.get("tag") or "",
                received_at=float(o["received_at"]),
                tags=tuple(str(t) for t in o.get("tags") or ()),
            )
            for o in run.control("orders")
        ]
        exchange = run.sim.exchange

        def trades() -> list[SimTrade]:
            return [
                SimTrade(
                    t.order_id,
                    b,
                    t.instrument.symbol,
                    t.product,
                    t.transaction_type,
                    t.quantity,
                    t.filled_at.timestamp(),
                )
                for b in USERS
                for t in _truth(exchange, b).trades
            ]

        self.trades = sorted(run.sim.call(trades), key=lambda t: t.at)
        self.rows = [
            dict(zip(PROTECTION_COLUMNS, row, strict=True))
            for row in run.db(f"SELECT {', '.join(PROTECTION_COLUMNS)} FROM protection ORDER BY id")
        ]
        self.events: dict[int, list[tuple[str, str, str]]] = {}
        for pid, kind, old, new in run.db(
            "SELECT protection_id, kind, old, new FROM journal_event"
            " WHERE protection_id IS NOT NULL ORDER BY id"
        ):
            self.events.setdefault(int(pid), []).append((kind, old, new))
        # A sliced exit (and the rest of a partly filled one placed again) journals its orders' ids.
        self.children: dict[int, list[list[str]]] = {}
        for pid, message in run.db(
            "SELECT protection_id, message FROM journal_event WHERE kind = 'exit_children'"
            " AND protection_id IS NOT NULL ORDER BY id"
        ):
            ids = [i.strip() for i in str(message or "").split(":", 1)[-1].split(",") if i.strip()]
            self.children.setdefault(int(pid), []).append(ids)
        salt = run.db("SELECT value FROM meta WHERE key = 'tag_salt'")
        self.salt = str(salt[0][0]) if salt else ""
        self.load_safety()

    def load_safety(self) -> None:
        """Which broker orders are a protection's broker-held safety stop (or were, or fired into).

        An SL-M safety order carries the exit tag plus "S". A GTT carries no tag, and neither does the
        order it fires into: the protection's journal names every GTT it ever held (``safety_order_id``
        in its safety events), and the simulator's GTT book names the order each one fired into.
        """
        self.gtts = {(g["broker"], str(g["id"])): g for g in self.run.control("gtts")}
        self.held: dict[int, set[str]] = {}  # protection id -> every safety order id / GTT id it held
        for pid, events in self.events.items():
            for kind, _old, new in events:
                if kind.startswith("safety") or kind == "transition":
                    for match in _SAFETY_ID.finditer(new):
                        self.held.setdefault(pid, set()).add(match.group(1))
        by_row = {row["id"]: row for row in self.rows}
        for row in self.rows:
            if row["safety_order_id"]:
                self.held.setdefault(row["id"], set()).add(str(row["safety_order_id"]))
        # The order a GTT fired into belongs to the protection that held the GTT.
        self.gtt_owner: dict[tuple[str, str], int] = {}  # (broker, GTT id) -> protection id
        self.fired_into: dict[tuple[str, str], int] = {}  # (broker, order id) -> protection id
        for pid, ids in self.held.items():
            broker = by_row[pid]["broker"] if pid in by_row else ""
            for held_id in ids:
                gtt = self.gtts.get((broker, held_id))
                if gtt is None:
                    continue
                self.gtt_owner[(broker, held_id)] = pid
                if gtt.get("order_id"):
                    self.fired_into[(broker, str(gtt["order_id"]))] = pid

    def check(self) -> None:
        self.load()
        run = self.run
        integrity = run.db("PRAGMA integrity_check")
        if integrity != [("ok",)]:
            self.violation("database damaged", repr(integrity[:3]))
        by_tag = {row["exit_tag"]: row for row in self.rows}
        self.check_orders(by_tag)
        episodes = {ep.key: ep for ep in run.episodes}
        keys: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for row in self.rows:
            symbol = f"{row['exchange']}:{row['symbol']}"
            keys.setdefault((row["broker"], symbol, row["product"]), []).append(row)
        self.check_baskets()
        extra = run.extra_protections
        for key, rows in keys.items():
            if len(rows) > 1:
                self.check_shared(key, rows)
            rows = [r for r in rows if r["id"] not in extra]  # a second protection the harness made
            for a, b in zip(rows, rows[1:], strict=False):
                if a["closed_at"] is None or str(a["closed_at"]) > str(b["created_at"]):
                    self.violation(
                        "two protections for one position at once",
                        f"{key}: protections {a['id']} and {b['id']}",
                    )
        for row in self.rows:
            self.check_protection(row)
        for ep in run.episodes:
            self.check_episode(ep, keys.get(ep.key, []))
        for play in run.plays:
            self.check_play(play)
        held = {play.key for play in run.plays}
        for key in sorted({(t.broker, t.symbol, t.product) for t in self.trades} - held):
            self.check_position(key, episodes.get(key))
        for broker in BROKERS:
            outage, since = run.tracker.longest_outage(broker, time.time())
            if outage > run.config.feed_recovery_budget:
                self.violation(
                    "feed did not recover",
                    f"{broker} feed not working for {outage:.1f} s while the app ran (from {since:.1f})",
                )
        self.check_app_output()

    # -------------------------------------------------------------------------- orders vs. protections

    def exits_of(self, row: dict[str, Any]) -> list[SimOrder]:
        """The protection's orders that are (or were) live at the exchange: refusals do not count.

        Its exit orders (the exit tag), and its broker-held safety stop once that is more than a resting
        trigger: an SL-M that triggered or was turned into the exit, or the order a GTT fired into.
        """
        tag = row["exit_tag"]
        found = []
        for o in self.orders:
            if o.status == "REJECTED" or (o.status == "CANCELLED" and o.filled == 0):
                continue
            exit_order = o.tag == tag
            safety_fired = (o.tag == tag + "S" and o.status != "TRIGGER PENDING") or (
                self.fired_into.get((o.broker, o.order_id)) == row["id"]
            )
            if exit_order or safety_fired:
                found.append(o)
        return found

    def check_orders(self, by_tag: dict[str, dict[str, Any]]) -> None:
        """No order that nobody asked for: the trader's own (a tag the harness sent), a protection's exit or
        safety stop (its tag, on its own instrument and product: Kite's autoslice children keep the tag),
        or the order a protection's GTT fired into (no tag). Anything else is a violation."""
        outside = self.run.outside_tags
        for o in self.orders:
            if o.tag and o.tag in outside:
                continue
            mine = by_tag.get(o.tag) or (by_tag.get(o.tag[:-1]) if o.tag.endswith("S") else None)
            if mine is not None:
                symbol = f"{mine['exchange']}:{mine['symbol']}"
                if (o.broker, o.symbol, o.product) == (mine["broker"], symbol, mine["product"]):
                    continue
            if not o.tag and (o.broker, o.order_id) in self.fired_into:
                continue
            self.violation(
                "order of unknown origin", f"{o.order_id} {o.side} {o.symbol} x{o.quantity} tag {o.tag!r}"
            )
        # A GTT nobody owns, or a safety stop still resting at the broker after its protection ended,
        # could fire later and open a position the trader never asked for.
        ended = {row["exit_tag"]: row for row in by_tag.values() if row["status"] in TERMINAL}
        for o in self.orders:
            if o.tag.endswith("S") and o.tag[:-1] in ended and o.status in ("TRIGGER PENDING", "OPEN"):
                row = ended[o.tag[:-1]]
                self.violation(
                    "safety stop left at the broker",
                    f"protection {row['id']} is {row['status']}, its SL-M {o.order_id} is {o.status}",
                )
        ids = {row["id"]: row for row in by_tag.values()}
        for (broker, gtt_id), gtt in self.gtts.items():
            owner = self.gtt_owner.get((broker, gtt_id))
            if owner is None:
                self.violation(
                    "GTT of unknown origin", f"{broker} GTT {gtt_id} on {gtt['symbol']} {gtt['status']}"
                )
            elif gtt["status"] in _GTT_LIVE and ids[owner]["status"] in TERMINAL:
                self.violation(
                    "safety stop left at the broker",
                    f"protection {owner} is {ids[owner]['status']}, its GTT {gtt_id} is {gtt['status']}",
                )

    def exit_groups(self, row: dict[str, Any], exits: list[SimOrder]) -> list[list[SimOrder]]:
        """The protection's exit orders as exits: the slices of one sliced order (Kite: ``autoslice:<parent>``
        in its tags; Upstox: the order ids one ``slice`` place answered) and the rest of a partly filled exit
        placed again are one exit with its first order (the app journals those ids in ``exit_children``)."""
        root: dict[str, str] = {o.order_id: o.order_id for o in exits}

        def find(i: str) -> str:
            while root[i] != i:
                i = root[i]
            return i

        def join(a: str | None, b: str | None) -> None:
            if a in root and b in root:
                root[find(a)] = find(b)

        for o in exits:
            join(o.order_id, o.slice_parent)
        for ids in self.children.get(row["id"], []):
            for i in ids:
                join(i, row["exit_order_id"])
                join(i, ids[0])
        groups: dict[str, list[SimOrder]] = {}
        for o in exits:
            groups.setdefault(find(o.order_id), []).append(o)
        return sorted(groups.values(), key=lambda g: min(self.arrival(o, row) for o in g))

    def arrival(self, o: SimOrder, row: dict[str, Any]) -> float:
        """When an exit order took its quantity from the position: a broker-held stop only when it filled
        (until then its quantity followed the position: a partly filled entry grows it)."""
        if o.tag == row["exit_tag"]:
            return o.received_at
        fills = [t.at for t in self.trades if (t.broker, t.order_id) == (o.broker, o.order_id)]
        return min(fills, default=o.received_at)

    @staticmethod
    def taken(o: SimOrder) -> int:
        """What an exit order takes of the position: its fills once final, all of it while it works."""
        return o.filled if o.status in ("COMPLETE", "CANCELLED", "REJECTED") else o.quantity

    def check_shared(self, key: tuple[str, str, str], rows: list[dict[str, Any]]) -> None:
        """Several protections on one position: their exits together never sell more than it holds when
        each arrives (what earlier exits still have to fill counts against it)."""
        broker, symbol, product = key
        exits: list[tuple[float, int, list[SimOrder], int]] = []
        for row in rows:
            for group in self.exit_groups(row, self.exits_of(row)):
                at = min(self.arrival(o, row) for o in group)
                exits.append((at, sum(self.taken(o) for o in group), group, row["id"]))
        exits.sort(key=lambda e: e[0])
        for k, (at, quantity, group, pid) in enumerate(exits):
            pending = 0
            for _at, earlier_qty, earlier, _pid in exits[:k]:
                ids = {(o.broker, o.order_id) for o in earlier}
                filled = sum(t.quantity for t in self.trades if t.at < at and (t.broker, t.order_id) in ids)
                pending += max(0, earlier_qty - filled)
            long = rows[0]["side"] == "BUY"
            open_qty = self.position_before(broker, symbol, product, at)
            open_qty = open_qty if long else -open_qty
            if quantity + pending > max(open_qty, 0):
                self.violation(
                    "exits larger than a shared position",
                    f"{key}: protection {pid}'s exit {group[0].order_id} x{quantity} with {pending} still to"
                    f" fill from earlier exits, position {open_qty} when it arrived"
                    f" (protections {', '.join(str(r['id']) for r in rows)})",
                )

    def position_before(self, broker: str, symbol: str, product: str, at: float) -> int:
        # Delivery shares held from earlier days are there to sell beside today's trades.
        net = self.run.held[symbol] if product == "CNC" else 0
        for t in self.trades:
            if t.at >= at:
                break
            if (t.broker, t.symbol, t.product) == (broker, symbol, product):
                net += t.quantity if t.side == "BUY" else -t.quantity
        return net

    def check_baskets(self) -> None:
        """A breached basket finished, and every member it exited has one exit (counted per position by
        check_protection, which sees basket exits as the protections' own)."""
        rows = {row["id"]: row for row in self.rows}
        if not any(
            name == "basket" for (name,) in self.run.db("SELECT name FROM sqlite_master WHERE type='table'")
        ):
            return
        exited = self.run.db(
            "SELECT count(DISTINCT protection_id) FROM journal_event "
            "WHERE kind = 'transition' AND new = 'TRIGGERED' AND message LIKE 'basket %'"
        )
        self.report.basket_exits += int(exited[0][0]) if exited else 0
        for basket_id, name, status in self.run.db("SELECT id, name, status FROM basket"):
            members = [
                m
                for (m,) in self.run.db(
                    "SELECT protection_id FROM basket_member WHERE basket_id = ?", (basket_id,)
                )
            ]
            if status == "TRIGGERED":
                self.violation("basket exit never finished", f"basket {basket_id} ({name}) still TRIGGERED")
            if status != "EXITED":
                continue
            for pid in members:
                row = rows.get(pid)
                if row is None:
                    continue
                if row["status"] in ("OPEN", "TRIGGERED", "EXITING"):
                    self.violation(
                        "basket member left open", f"basket {basket_id}: protection {pid} {row['status']}"
                    )

    def check_protection(self, row: dict[str, Any]) -> None:
        pid, status = row["id"], row["status"]
        label = f"protection {pid} ({row['broker']} {row['exchange']}:{row['symbol']} {row['product']})"
        if row["product"] == "CNC" and row["side"] == "SELL":
            self.violation("delivery sale protected as a short", f"{label}: its exit would buy shares back")
        exits = self.exits_of(row)
        self.report.exits += len(exits)
        self.report.protections += 1
        held = self.held.get(pid, set())
        if held:
            self.report.safety_held += 1
            self.report.safety_orders += len(held)
        if status == "CLOSED" and row["reason"] == SAFETY_STOP_REASON:
            self.report.safety_closes += 1
        groups = self.exit_groups(row, exits)
        if len(groups) > 1:
            ids = ", ".join(f"{o.order_id} x{o.quantity} {o.status}" for o in exits)
            self.violation("more than one exit", f"{label}: {ids}")
        long = row["side"] == "BUY"
        symbol = f"{row['exchange']}:{row['symbol']}"
        for o in exits:
            if o.side != ("SELL" if long else "BUY"):
                self.violation("exit on the wrong side", f"{label}: {o.order_id} is a {o.side}")
        for group in groups:
            at = min(self.arrival(o, row) for o in group)
            quantity = sum(self.taken(o) for o in group)
            open_qty = self.position_before(row["broker"], symbol, row["product"], at)
            open_qty = open_qty if long else -open_qty
            if quantity > max(open_qty, 0):
                what = group[0].order_id if len(group) == 1 else f"{group[0].order_id} ({len(group)} orders)"
                self.violation(
                    "exit larger than the open position",
                    f"{label}: exit {what} x{quantity}, position {open_qty} when it arrived",
                )
        refused = [o for o in self.orders if o.tag == row["exit_tag"] and o.status == "REJECTED"]
        if status == "EXIT_FAILED":
            if refused and all(o.status_message == INJECTED_REJECTION for o in refused) and not exits:
                self.report.exits_refused += 1
            else:
                self.violation("exit given up", f"{label}: EXIT_FAILED ({row['reason']})")
        elif status in ("TRIGGERED", "EXITING"):
            self.violation("exit never finished", f"{label}: still {status} at the end")
        elif status == "CLOSED":
            if row["reason"] == "external":
                done = [o for o in exits if o.filled > 0]
                if done:
                    self.violation(
                        "our exit filled but recorded as closed outside",
                        f"{label}: {done[0].order_id} filled {done[0].filled}",
                    )
            elif len(groups) == 1:
                (group,) = groups
                for o in group:
                    # A rest we cancelled (to place it again) may end CANCELLED with a part filled.
                    if o.status != "COMPLETE" and not (len(group) > 1 and o.status == "CANCELLED"):
                        self.violation(
                            "closed with the exit not complete", f"{label}: exit {o.order_id} {o.status}"
                        )
                # The first order may have been refused (above the freeze quantity: Upstox rejects it after
                # taking it) and the exit sent again sliced: the database keeps the first id, the journal
                # names the slices as its children.
                children = {i for listed in self.children.get(row["id"], []) for i in listed}
                tagged = {o.order_id for o in self.orders if o.tag == row["exit_tag"]}
                group_ids = {o.order_id for o in group}
                if row["exit_order_id"] not in group_ids and not (
                    row["exit_order_id"] in tagged and group_ids <= children
                ):
                    self.violation(
                        "database and broker disagree on the exit",
                        f"{label}: database says {row['exit_order_id']}, broker has {group[0].order_id}",
                    )
                filled = sum(o.filled for o in group)
                if row["exit_quantity"] != filled:
                    self.violation(
                        "database and broker disagree on the exit quantity",
                        f"{label}: database {row['exit_quantity']}, broker filled {filled}",
                    )
            elif not exits:
                self.violation(
                    "closed without an exit", f"{label}: CLOSED ({row['reason']}) and no exit order"
                )
            if row["closed_at"] is None:
                self.violation("journal and database disagree", f"{label}: CLOSED with no closed_at")
        self.check_journal(row, label)

    def check_journal(self, row: dict[str, Any], label: str) -> None:
        events = self.events.get(row["id"], [])
        statuses = [(old, new) for kind, old, new in events if kind in ("created", "transition")]
        if not statuses or events[0][0] != "created":
            self.violation("journal and database disagree", f"{label}: no 'created' event first")
            return
        current = statuses[0][1]
        for old, new in statuses[1:]:
            if old != current:
                self.violation(
                    "journal and database disagree", f"{label}: transition {old}->{new} after {current}"
                )
            current = new
        if current != row["status"]:
            self.violation(
                "journal and database disagree", f"{label}: journal ends {current}, database {row['status']}"
            )
        placed = {new for kind, _old, new in events if kind == "exit_placed"}
        if len(placed) > 1:
            self.violation("more than one exit", f"{label}: journal has exits {sorted(placed)}")
        if placed and row["exit_order_id"] not in placed:
            self.violation(
                "journal and database disagree",
                f"{label}: exit {row['exit_order_id']} vs journal {sorted(placed)}",
            )
        # Stops: only ever in the trader's favour, each move starting where the last one ended.
        long = row["side"] == "BUY"
        rule = TrailRule.from_dict(json.loads(row["rule"]))
        stop = initial_stop(Side(row["side"]), float(row["entry_price"]), float(row["tick_size"]), rule)
        for kind, old, new in events:
            if kind != "stop_moved":
                continue
            before, after = float(old), float(new)
            if abs(before - stop) > _EPS:
                self.violation(
                    "journal stop chain broken", f"{label}: move from {before}, last stop was {stop}"
                )
            if (after < before - _EPS) if long else (after > before + _EPS):
                self.violation("stop moved against the trader", f"{label}: {before} -> {after}")
            stop = after
        if row["stop"] is None or abs(float(row["stop"]) - stop) > _EPS:
            self.violation(
                "journal and database disagree", f"{label}: stop {row['stop']}, journal says {stop}"
            )

    # -------------------------------------------------------------------------- positions and episodes

    def flat_times(self, key: tuple[str, str, str]) -> tuple[list[float], bool]:
        """When the position came back to 0, and whether it ever flipped sign."""
        net, flats, flipped = 0, [], False
        for t in self.trades:
            if (t.broker, t.symbol, t.product) != key:
                continue
            before = net
            net += t.quantity if t.side == "BUY" else -t.quantity
            if before * net < 0:
                flipped = True
            if net == 0 and before != 0:
                flats.append(t.at)
        return flats, flipped

    def check_position(self, key: tuple[str, str, str], ep: Episode | None) -> None:
        flats, flipped = self.flat_times(key)
        if flipped:
            self.violation("position flipped", f"{key}")
        net = self.run.sim.call(lambda: self._net(key))
        if net != 0:
            self.violation("position left open at the end", f"{key}: net {net}")
        if ep is None:
            self.violation("position of unknown origin", f"{key}")

    def check_play(self, play: HoldingPlay) -> None:
        """Holdings traded outside: never bought back by the app, and the stop sold exactly the rest."""
        if play.problem:
            self.violation("holding", f"{play.label}: {play.problem}")
            return
        self.report.holdings[play.outcome or "untouched"] += 1
        net = self.run.sim.call(lambda: self._net(play.key))
        sellable = play.held + net
        row = next((r for r in self.rows if r["id"] == play.protection_id), None)
        if row is None:
            if play.state == "done" and play.sold:
                self.violation("holding", f"{play.label}: never protected")
            return
        if play.crossed_at is None:
            if play.sold == play.held and not (row["status"] == "CLOSED" and row["reason"] == "external"):
                self.violation("holding", f"{play.label}: all sold outside, protection {row['status']}")
            return
        if row["status"] == "EXIT_FAILED":
            return  # refused by an injected rejection (checked with the protection)
        # The exit sold what the protection still covered; only shares bought back after it shrank stay.
        left_over = {0, play.bought} if play.play == "buy back" else {0}
        if sellable not in left_over:
            self.violation(
                "holding",
                f"{play.label}: {sellable} shares left unsold after the stop (sold {play.sold}, "
                f"bought back {play.bought}, the app sold {self._sold_by_app(play)})",
            )
        fills = [
            t.at
            for t in self.trades
            if (t.broker, t.symbol, t.product) == play.key and t.side == "SELL" and t.at >= play.crossed_at
        ]
        if fills:
            worked = self.run.tracker.available(play.broker, play.crossed_at, fills[-1])
            self.report.latencies.append(worked)
            self.report.wall_latencies.append(fills[-1] - play.crossed_at)
            if worked > self.run.config.flat_budget:
                self.violation("not flat in time", f"{play.label}: sold {worked:.1f} s of working feed after")

    def _sold_by_app(self, play: HoldingPlay) -> int:
        ours = set(play.tags)
        return sum(
            t.quantity if t.side == "SELL" else -t.quantity
            for t in self.trades
            if (t.broker, t.symbol, t.product) == play.key
            and not any(o.order_id == t.order_id and o.tag in ours for o in self.orders)
        )

    def _net(self, key: tuple[str, str, str]) -> int:
        broker, symbol, product = key
        for pos in _truth(self.run.sim.exchange, broker).positions.values():
            if pos.instrument.symbol == symbol and pos.product == product:
                return int(pos.quantity)
        return 0

    def check_episode(self, ep: Episode, rows: list[dict[str, Any]]) -> None:
        if ep.problem:
            self.violation("episode", f"{ep.label}: {ep.problem}")
        if ep.crossed_at is None:
            return
        if any(row["status"] == "EXIT_FAILED" for row in rows):
            return  # refused by the broker (checked with the protection): the trader closed it
        flats, _ = self.flat_times(ep.key)
        after = [t for t in flats if t >= ep.crossed_at - 1.0]
        if not after:
            self.violation("crossed its stop and never went flat", ep.label)
            return
        worked = self.run.tracker.available(ep.broker, ep.crossed_at, after[0])
        self.report.latencies.append(worked)
        self.report.wall_latencies.append(after[0] - ep.crossed_at)
        if worked > self.run.config.flat_budget:
            self.violation(
                "not flat in time",
                f"{ep.label}: flat {worked:.1f} s of working feed after crossing"
                f" (wall clock {after[0] - ep.crossed_at:.1f} s)",
            )

    def check_app_output(self) -> None:
        lines = self.run.app.output()
        problems: Counter[str] = Counter()
        for i, (_t, _gen, line) in enumerate(lines):
            if line.startswith("Traceback"):
                last = next(
                    (
                        text
                        for _, _, text in lines[i + 1 :]
                        if text and not text.startswith((" ", "Traceback"))
                    ),
                    "?",
                )
                problems[last[:160]] += 1
        for what, count in problems.items():
            self.violation("unexpected exception in the app", f"{count} x {what}")
        # From the process start to both feeds live: what a restart costs.
        live: dict[int, dict[str, float]] = {}
        for t, gen, line in lines:
            match = _FEED_LINE.search(line)
            if match is not None and match.group(2) == "live":
                live.setdefault(gen, {}).setdefault(match.group(1), t)
        for gen, seen in live.items():
            if len(seen) == len(BROKERS) and gen in self.run.app.start_times:
                self.report.restart_to_live.append(max(seen.values()) - self.run.app.start_times[gen])


# ================================================================================================ reporting


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else 0.0


def _counts(counter: Counter[str], keys: Iterable[str] | None = None) -> str:
    items = [(k, counter[k]) for k in keys] if keys is not None else sorted(counter.items())
    return ", ".join(f"{k} {v}" for k, v in items if v) or "none"


def describe(report: RunReport, config: ChaosConfig) -> list[str]:
    e = report.episodes
    lat = report.latencies
    lines = [
        f"run {report.run}: seed {report.seed}, {report.seconds:.0f} s, "
        f"{e['kite'] + e['upstox']} positions (kite {e['kite']}, upstox {e['upstox']}; long {e['long']}, "
        f"short {e['short']}; MIS {e['MIS']}, CNC {e['CNC']}, NRML {e['NRML']}; "
        f"{e['holding']} holdings traded outside; {e['protected twice']} protected twice), "
        f"{report.ticks} ticks",
        f"  faults: {_counts(report.faults)}",
        f"  kills: SIGKILL {report.kills['SIGKILL']}, SIGTERM {report.kills['SIGTERM']} "
        f"({_counts(report.kills, KILL_REASONS)})",
        f"  exits: {report.exits} sent by the app for {report.protections} protections; "
        f"{report.exits_refused} refused by an injected rejection (EXIT_FAILED + alert; the trader closed it)"
        + (f"; {report.entries_not_placed} entries not placed" if report.entries_not_placed else ""),
    ]
    if report.safety_held:
        lines.append(
            f"  broker-held safety stops: {report.safety_held} protections held one "
            f"({report.safety_orders} SL-M orders and GTTs in all); "
            f"{report.safety_closes} closed by the broker-held stop"
        )
    if report.holdings:
        lines.append(f"  holdings traded outside: {_counts(report.holdings)}")
    if report.basket_breaches or report.basket_exits:
        lines.append(
            f"  baskets: {report.basket_breaches} breached, "
            f"{report.basket_exits} protections exited by a basket"
        )
    if lat:
        lines.append(
            f"  stop crossed -> flat, seconds of working feed: median {statistics.median(lat):.2f}, "
            f"p95 {_pct(lat, 95):.2f}, max {max(lat):.2f} (budget {config.flat_budget:g}); "
            f"wall clock max {max(report.wall_latencies):.1f}"
        )
    if report.restart_to_live:
        r = report.restart_to_live
        lines.append(
            f"  process start -> both feeds live: median {statistics.median(r):.2f} s, max {max(r):.2f} s"
        )
    lines.append(f"  violations: {len(report.violations)}")
    lines += [f"    {v}" for v in report.violations]
    return lines


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
            total.seconds += r.seconds
            total.episodes.update(r.episodes)
            total.ticks += r.ticks
            total.faults.update(r.faults)
            total.kills.update(r.kills)
            total.exits += r.exits
            total.protections += r.protections
            total.exits_refused += r.exits_refused
            total.safety_held += r.safety_held
            total.safety_orders += r.safety_orders
            total.safety_closes += r.safety_closes
            total.entries_not_placed += r.entries_not_placed
            total.basket_breaches += r.basket_breaches
            total.basket_exits += r.basket_exits
            total.latencies += r.latencies
            total.wall_latencies += r.wall_latencies
            total.restart_to_live += r.restart_to_live
            total.violations += r.violations
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of workload per run")
    parser.add_argument("--seed", type=int, default=ChaosConfig.seed)
    parser.add_argument("--slots", type=int, default=ChaosConfig.slots)
    parser.add_argument("--soak", type=float, default=300.0, help="seconds of the no-kill endurance run")
    parser.add_argument("--keep", action="store_true", help="keep data folders and transcripts")
    parser.add_argument(
        "--safety-stop", action="store_true", help="every protection also holds a broker-held safety stop"
    )
    parser.add_argument(
        "--baskets", action="store_true", help="a basket of every position per account, its breach exits all"
    )
    parser.add_argument(
        "--route-flaps",
        action="store_true",
        help="orders only from registered IPs: the app's order route (a real proxy) goes off and on",
    )
    args = parser.parse_args(argv)
    config = ChaosConfig(
        seed=args.seed,
        runs=args.runs,
        duration=args.duration,
        slots=args.slots,
        soak=args.soak,
        keep=args.keep,
        safety=args.safety_stop,
        route_flaps=args.route_flaps,
        baskets=args.baskets,
    )
    report = run_chaos(config)
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
