"""What the simulator is told to do wrong, and when (`Faults`): dropped and stalled sockets, HTTP errors
and 429s with a Retry-After, slow and lost replies, malformed replies, rejected orders, token expiry, fill
delays, partial fills, a lagging order book, freeze quantities, and the app's order route cut (a real
SOCKS5 proxy turned off and on). The price gaps come with the crossings (positions.py).

Every fault is a ``POST /_sim/fault`` (trailstop_gui/simulator/README.md). A fault that silences a feed is
told to the `FeedTracker`, so that its time does not count against the budgets of the checks.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from bench.chaos.config import BROKERS, INJECTED_REJECTION

if TYPE_CHECKING:
    from bench.chaos.run import Run


class Faults:
    """The faults of one run, on their own clock in the chaos thread (`Run.chaos_loop`)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.rng = run.rng
        self.config = run.config
        self.tracker = run.tracker
        self.report = run.report
        self.next_fault = 0.0
        self.next_flap = 0.0
        self.clears: list[tuple[float, str]] = []  # (when, kind): a fault with no count of its own ends
        self.route_proxy: Any = None
        self.trader_proxy: Any = None
        self.route_resume_at: float | None = None
        if self.config.route_flaps:
            self._set_up_route()

    @property
    def trader_proxy_url(self) -> str | None:
        """Where the trader's own orders leave from (None: this machine)."""
        return str(self.trader_proxy.url) if self.trader_proxy is not None else None

    # ------------------------------------------------------------------------------------- the clock

    def schedule_fault(self, now: float) -> None:
        self.next_fault = now + self.rng.uniform(*self.config.fault_every)

    def schedule_flap(self, now: float) -> None:
        self.next_flap = now + self.rng.uniform(*self.config.route_every)

    def on_clock_route(self, now: float) -> None:
        """The order route goes off when its time comes, and on again after a while."""
        if self.route_proxy is not None and (self.route_resume_at is not None or now >= self.next_flap):
            self.flap_route(now)
            if self.route_resume_at is None:
                self.schedule_flap(now)

    def on_clock(self, now: float) -> None:
        """The next fault when its time comes; the faults that last a while cleared when theirs ends."""
        if now >= self.next_fault:
            self.inject()
            self.schedule_fault(time.time())
        for when, kind in list(self.clears):
            if now >= when:
                self.clears.remove((when, kind))
                self.run.control("fault", {"fault": "clear", "kind": kind})

    def settle(self) -> None:
        """No more faults: what is injected is cleared, the order route on again."""
        self.run.control("fault", {"fault": "clear"})
        if self.route_proxy is not None:
            self.route_proxy.resume()

    def stop_proxies(self) -> None:
        for proxy in (self.route_proxy, self.trader_proxy):
            if proxy is not None:
                proxy.stop()

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
        self.run.control("ips", {"ips": ["127.0.0.2", "127.0.0.3"]})
        self.run.data_dir.mkdir(parents=True, exist_ok=True)
        store = ProtectionStore(self.run.db_path)
        try:
            for broker in BROKERS:
                account = _sim_account(store, self.run.sim.info, broker, "live")
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

    # ------------------------------------------------------------------------------------- faults

    def inject(self) -> None:
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
            if rng.random() < 0.4:
                # Only positions trail; the order book is current: an exit reads COMPLETE while positions
                # still show what it closed (a twin's exit sized then would flip the position).
                spec["orders"] = 0
            self.clears.append((now + rng.uniform(2.0, 8.0), "book_lag"))
        elif kind == "freeze_quantity":
            # A position above the exchange's freeze quantity: its exit is refused unless sliced (Kite:
            # autoslice, at most 10 slices; Upstox: slice=true). Slices stay within both brokers' caps.
            worked = [
                ep for ep in self.run.positions.active if ep.state in ("trailing", "crossing", "waiting")
            ]
            held = [p for p in self.run.holdings.plays if p.state not in ("done", "waiting") and p.held > 1]
            targets = [(ep.symbol, ep.quantity) for ep in worked if ep.quantity > 1]
            targets += [(p.symbol, p.held) for p in held]
            if not targets:
                return
            symbol, quantity = rng.choice(targets)
            lot = next((i["lot_size"] for i in self.run.workload.instruments if i["symbol"] == symbol), 1)
            if quantity <= lot:
                return
            lots = quantity // lot
            spec.update(
                symbol=symbol, quantity=lot * rng.randint(max(1, math.ceil(lots / 10)), max(1, lots - 1))
            )
            if rng.random() < 0.3:
                # The limit is revised back after one refusal: the sliced exit hears "needs no slicing".
                spec["refusals"] = 1
            self.clears.append((now + rng.uniform(3.0, 10.0), "freeze_quantity"))
        elif kind == "lost_reply":
            # The broker takes the order and the answer never comes (issue 13): the exit must be found by
            # its tag, never sent twice.
            spec.update(
                path=rng.choice(["/orders", "/v2/order", "/v3/order", "/portfolio", None]),
                method=rng.choice(["POST", None]),
                count=rng.randint(1, 2),
            )
        self.run.control("fault", spec)
        self.report.faults[kind] += 1
