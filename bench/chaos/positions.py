"""The positions the trader opens outside the app (`Episode`, `Positions`): both brokers, long and short,
MIS, CNC and NRML, NIFTY options too. Each is adopted, trailed (the price up for a long, down for a short),
crossed (sometimes by a price gap) and held beyond its stop until flat; some are protected twice.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.chaos.config import BROKERS, TERMINAL, truth
from bench.chaos.workload import Traded, round_tick

if TYPE_CHECKING:
    from bench.chaos.run import Run


@dataclass
class Episode(Traded):
    """One position from entry to flat: opened outside, adopted, trailed, crossed, exited."""

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


class Positions:
    """The positions of one run, from entry to flat."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.workload = workload = run.workload
        self.rng = run.rng
        self.config = run.config
        self.report = run.report
        self.tracker = run.tracker
        self.episodes: list[Episode] = []
        self.active: list[Episode] = []
        self.used_keys: set[tuple[str, str, str]] = set()
        self.busy_symbols: set[str] = set()
        self.next_start = 0.0
        instruments = workload.instruments
        # The demo holdings are worked by the holding plays only: an episode on the same stock would mix
        # its own delivery buys with them.
        self.equities = [
            i
            for i in instruments
            if i["instrument_type"] == "EQ" and i["tradable"] and i["symbol"] not in workload.held
        ]
        self.futures = [i for i in instruments if i["instrument_type"] == "FUT"]
        self.options = [i for i in instruments if i["instrument_type"] in ("CE", "PE") and i["tradable"]]

    def step(self, now: float, starting: bool) -> None:
        if starting and len(self.active) < self.config.slots and now >= self.next_start:
            self.next_start = now + self.config.start_every
            self.new_episode(now)
        for ep in list(self.active):
            self.advance(ep, now)

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
            tag=f"CX{self.run.index}N{number}",
        )
        self.episodes.append(ep)
        self.active.append(ep)
        self.used_keys.add(ep.key)
        self.busy_symbols.add(ep.symbol)
        self.report.episodes[broker] += 1
        self.report.episodes["long" if side == "BUY" else "short"] += 1
        self.report.episodes[product] += 1
        ep.base = float(self.run.quote(ep.symbol)["ltp"])
        self.workload.push(ep, ep.base)
        ep.peak = ep.price
        ep.future = self.workload.trade(broker, ep, side, product, quantity, ep.tag)
        ep.state = "opening"
        ep.next_push = now + 0.3
        return ep

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
                self.workload.push(ep, price)
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
                self.workload.push(ep, beyond - ep.sign * self.rng.randint(0, 2) * ep.tick)
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
                # What the last attempt came to, so that a run's report explains itself (the simulator's
                # state is gone once the run ends).
                verdict = "not placed"
                if ep.future is not None and ep.future.done():
                    verdict = repr(ep.future.exception()) if ep.future.exception() else ep.future.result()
                status, filled = self.workload.order_state(ep.broker, ep.flatten_tag)
                ep.problem = ep.problem or (
                    f"the trader could not close it ({net} left; last order {ep.flatten_tag}: {verdict}, "
                    f"{status} {filled} filled; {self.workload.refusal(ep.broker, ep.flatten_tag)})"
                )
                self.finish(ep, "left open", now)
                return
            ep.flatten_tag = f"CX{self.run.index}N{ep.number}F{ep.flattens}"
            side = "SELL" if net > 0 else "BUY"
            ep.future = self.workload.trade(ep.broker, ep, side, ep.product, abs(net), ep.flatten_tag)
            ep.state = "flattening"
            ep.next_check = now + 20.0  # the longest a placed order is waited for
        elif ep.state == "flattening" and ep.future is not None and ep.future.done():
            # Only once the trader's order is final is the position looked at again: a fill delay must
            # not make the trader sell twice.
            status, _filled = self.workload.order_state(ep.broker, ep.flatten_tag)
            if status in ("COMPLETE", "CANCELLED", "REJECTED", "?") or now >= ep.next_check:
                ep.state = "flatten"
                ep.next_check = now + 0.3

    def cross(self, ep: Episode) -> None:
        # From the one being trailed on: not one a basket exited before the rest of the entry filled.
        rows = [r for r in self.protection_row(ep) if int(r[0]) >= (ep.protection_id or 0)]
        if not rows or rows[0][1] != "OPEN":
            if not (rows and self.exited_by_basket(rows[0][0])):  # a basket's exit came first: no problem
                ep.problem = f"protection was {rows[0][1] if rows else 'gone'} before its stop was crossed"
            else:
                ep.outcome = "exited by a basket"
            ep.state = "waiting"
            return
        stop = float(rows[0][2])
        target = stop * (1 - ep.sign * self.rng.uniform(0.003, 0.015))
        target = round_tick(target, ep.tick, up=ep.sign < 0)
        ep.crossed_at = time.time()
        ep.crossed_stop = stop
        if self.rng.random() < 0.4:
            percent = (target / ep.price - 1) * 100
            answer = self.run.control(
                "fault", {"fault": "price_gap", "symbol": ep.symbol, "percent": percent}
            )
            ep.price = float(answer["quote"]["ltp"])
            self.report.faults["price_gap"] += 1
            self.report.ticks += 1
            if (ep.price - stop) * ep.sign > 0:  # a gap that fell short: finish the move by hand
                self.workload.push(ep, target)
        else:
            self.workload.push(ep, target)
        ep.state = "waiting"
        ep.next_push = time.time() + 0.3
        self.run.kills.after_crossing()

    def check_protected(self, ep: Episode, now: float) -> None:
        """The whole position must be protected before the price is moved: entry final, quantities equal."""
        rows = self.run.db(
            "SELECT id, status, filled_quantity FROM protection WHERE broker = ? AND instrument = ?"
            " AND product = ? ORDER BY id DESC LIMIT 1",
            (ep.broker, ep.instrument, ep.product),
        )
        status, _filled = self.workload.order_state(ep.broker, ep.tag)
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
        if ep.outcome == "exited by a basket" and net != 0 and self.adopted_after_the_basket(rows):
            # A breach exits its members as they were then (README, Baskets); the rest of a partly filled
            # entry that filled after it is a new position, auto-protected with its own stop (seed 31005:
            # 6 of 16 adopted, the basket breached, its exit sold those 6, the other 10 were adopted as a
            # new protection that nobody crossed). That one is trailed and crossed as any other.
            ep.outcome, ep.state, ep.entered_at = "", "protecting", now
            return
        since = ep.crossed_at if ep.crossed_at is not None else ep.entered_at
        if self.tracker.available(ep.broker, since, now) > self.config.give_up_after:
            ep.problem = ep.problem or f"still open after {self.config.give_up_after:g} s of working feed"
            ep.state = "flatten"

    def finish(self, ep: Episode, outcome: str, now: float) -> None:
        ep.outcome = outcome
        ep.state = "done"
        ep.finished_at = now
        self.active.remove(ep)
        self.busy_symbols.discard(ep.symbol)

    def noise(self, ep: Episode, now: float, around: float, spread: float) -> None:
        if now >= ep.next_push:
            self.workload.push(ep, around * (1 + self.rng.uniform(-spread, spread)))
            ep.next_push = now + self.rng.uniform(0.2, 0.4)

    def protection_row(self, ep: Episode) -> list[tuple[Any, ...]]:
        return self.run.db(
            "SELECT id, status, stop FROM protection WHERE broker = ? AND instrument = ? AND product = ?"
            " ORDER BY id",
            (ep.broker, ep.instrument, ep.product),
        )

    @staticmethod
    def adopted_after_the_basket(rows: list[tuple[Any, ...]]) -> bool:
        """The position's newest protection is OPEN and every older one has ended (the basket's exit)."""
        return bool(rows) and rows[-1][1] == "OPEN" and all(row[1] in TERMINAL for row in rows[:-1])

    def exited_by_basket(self, pid: object) -> bool:
        """With --baskets: the protection was exited by a basket's breach (its TRIGGERED says so)."""
        if not self.config.baskets:
            return False
        rows = self.run.db(
            "SELECT count(*) FROM journal_event WHERE protection_id = ? AND kind = 'transition'"
            " AND new = 'TRIGGERED' AND message LIKE 'basket %'",
            (int(str(pid)),),
        )
        return bool(rows and rows[0][0])

    def net_position(self, ep: Episode) -> int:
        """The broker's net quantity for the episode's instrument and product (the simulator's own book)."""
        exchange = self.run.sim.exchange

        def read() -> int:
            for pos in truth(exchange, ep.broker).positions.values():
                if pos.instrument.symbol == ep.symbol and pos.product == ep.product:
                    return int(pos.quantity)
            return 0

        return self.run.sim.call(read)

    def protect_twice(self) -> None:
        """A second protection of a position already protected: the whole position, OPEN, its entry price,
        the safety default. The window's Protect refuses this now (ProtectionService.adopt protects only
        what no protection covers); it still comes from a Protect that raced auto-protect, or a database
        an older version wrote. Written while the app is down (one writer at a time); the next start must
        share the position between the two."""
        from trailstop_gui.models.domain import Status
        from trailstop_gui.models.store import ProtectionStore

        candidates = [
            ep
            for ep in self.active
            if ep.state == "trailing" and ep.protection_id is not None and not ep.twice
        ]
        if not candidates or not self.run.db_path.exists():
            return
        ep = self.rng.choice(candidates)
        store = ProtectionStore(self.run.db_path)
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
        self.workload.extra_protections.add(second.id)
        self.report.episodes["protected twice"] += 1
