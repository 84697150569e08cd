"""The broker-neutral simulator: market, exchange, sessions, faults and feeds, plus listener hooks.

Facades (Kite, Upstox) are thin layers over one :class:`Simulator`: they parse requests, call the
exchange or the sessions, and render results in their broker's format. Ticks and order updates reach
them through :class:`SimListener` callbacks, always on the simulator's event-loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import string
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from trailstop_gui.simulator.calendar import Calendar
from trailstop_gui.simulator.exchange import IST, Exchange, Order
from trailstop_gui.simulator.faults import Faults
from trailstop_gui.simulator.feeds import FeedRegistry
from trailstop_gui.simulator.instruments import Instrument, InstrumentIndex, build_universe
from trailstop_gui.simulator.ip_registry import IpRegistry
from trailstop_gui.simulator.market import Market, Quote
from trailstop_gui.simulator.sessions import Sessions
from trailstop_gui.simulator.update_disorder import UpdateDisorder

log = logging.getLogger(__name__)

DEMO_PASSWORD = "demo1234"


@dataclass(frozen=True, slots=True)
class KiteDemo:
    """The Kite app and user the simulator accepts; the secret changes on every start."""

    api_key: str
    api_secret: str
    user_id: str = "DM1234"
    password: str = DEMO_PASSWORD
    user_name: str = "Demo Trader"
    email: str = "demo.trader@example.com"


@dataclass(frozen=True, slots=True)
class UpstoxDemo:
    """The Upstox app and user the simulator accepts; the secret changes on every start."""

    client_id: str
    client_secret: str
    user_id: str = "SIM0001"
    password: str = DEMO_PASSWORD
    user_name: str = "Demo Trader"
    email: str = "demo.trader@example.com"


class SimListener:
    """Receives market ticks and order updates; override what you need. Called on the loop thread."""

    # A stream to the trader's client (Kite ticker, Upstox portfolio feed): the update_disorder fault
    # reorders what it gets. Other listeners (GTT books) always hear every change at once, in order.
    streams_order_updates = False

    def on_ticks(self, quotes: list[Quote]) -> None:
        """Fresh snapshots of instruments whose book just changed."""

    def on_order_update(self, order: Order) -> None:
        """An order reached a state its owner is told about (open, trigger pending, fill, cancel, reject)."""


def _lower_alnum(length: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(length))


class Simulator:
    """One exchange shared by every facade. All methods run on the event loop's thread."""

    def __init__(
        self,
        base_url: str,
        *,
        seed: int | None = None,
        auto: bool = True,
        tick_interval: float = 0.5,
        fill_delay: float = 0.1,
        today: date | None = None,
        clock: Callable[[], float] = time.time,
        registered_ips: Iterable[str] = (),
        require_token: bool = False,
    ) -> None:
        """``registered_ips``: both demo users' static IPs for orders (none: orders from anywhere).
        ``require_token``: every /_sim/ call but the instrument list must carry ``control_token``."""
        self.base_url = base_url.rstrip("/")
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        rng = random.Random(self.seed)
        self.instruments = InstrumentIndex(build_universe(today or datetime.now(IST).date()))
        self.market = Market(self.instruments, random.Random(rng.getrandbits(64)), clock)
        self.faults = Faults(random.Random(rng.getrandbits(64)))
        self.sessions = Sessions(clock)
        self.feeds = FeedRegistry()
        self.exchange = Exchange(self.market, self.faults, self, self._order_updated, fill_delay, clock)
        self._disorder = UpdateDisorder()
        self.kite = KiteDemo(api_key="sim" + _lower_alnum(13), api_secret=_lower_alnum(32))
        self.upstox = UpstoxDemo(
            client_id=f"{_lower_alnum(8)}-{_lower_alnum(4)}-{_lower_alnum(4)}-{_lower_alnum(4)}-{_lower_alnum(12)}",
            client_secret=_lower_alnum(10),
        )
        self.ips = IpRegistry()
        self.calendar = Calendar()
        registered = tuple(registered_ips)
        if registered:
            self.ips.register("kite", self.kite.user_id, registered)
            self.ips.register("upstox", self.upstox.user_id, registered)
        # With require_token, every /_sim/ call but the public instrument list must carry it (X-Sim-Token):
        # a web page in the trader's browser cannot read it, so it cannot drive the control API. The app's
        # in-process demo always requires it; the standalone trailstop-sim only with --require-token, so
        # that harnesses written against DESIGN.md's control API keep working (Host, Origin and body checks
        # already keep web pages out).
        self.control_token = secrets.token_urlsafe(24)
        self.require_token = require_token
        self.auto = auto
        self.tick_interval = tick_interval
        self.started_at = clock()
        self._listeners: list[SimListener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._walker: asyncio.Task[None] | None = None

    # -- identity --------------------------------------------------------------------------------

    @property
    def ws_base_url(self) -> str:
        return "ws" + self.base_url[len("http") :]

    def info(self) -> dict[str, Any]:
        """The JSON line the CLI prints and GET /_sim/info returns."""
        base = self.base_url
        return {
            "http": base,
            "seed": self.seed,
            "control_token": self.control_token,
            "kite": {
                "api_root": base,
                "login_url": f"{base}/connect/login",
                "ws_url": f"{self.ws_base_url}/kite-ws",
                "api_key": self.kite.api_key,
                "api_secret": self.kite.api_secret,
                "redirect_url": f"{base}/redirect/kite",
                "user_id": self.kite.user_id,
                "password": self.kite.password,
            },
            "upstox": {
                "api_root": base,
                "order_root": base,
                "dialog_url": f"{base}/v2/login/authorization/dialog",
                "client_id": self.upstox.client_id,
                "client_secret": self.upstox.client_secret,
                "redirect_uri": f"{base}/redirect/upstox",
                "user_id": self.upstox.user_id,
                "password": self.upstox.password,
            },
        }

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._walker = asyncio.create_task(self._walk(), name="sim-random-walk")

    async def stop(self) -> None:
        if self._walker is not None:
            self._walker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._walker
        await self.feeds.close_all()

    async def _walk(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            if self.auto:
                try:
                    self.publish(self.market.step())
                except Exception:  # one bad step must not end the market
                    log.exception("random walk step failed")

    # -- Scheduler protocol (used by the exchange) -----------------------------------------------

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        loop = self._loop or asyncio.get_running_loop()
        return loop.call_later(max(delay, 0.0), self._guarded, callback)

    @staticmethod
    def _guarded(callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            log.exception("scheduled simulator callback failed")

    # -- prices ----------------------------------------------------------------------------------

    def publish(self, instruments: list[Instrument]) -> list[Quote]:
        """Match orders against the new books, then hand the fresh quotes to every listener."""
        self.exchange.on_prices(instruments)
        quotes = [self.market.quote(i) for i in instruments]
        for listener in list(self._listeners):
            try:
                listener.on_ticks(quotes)
            except Exception:
                log.exception("listener %r failed on ticks", listener)
        return quotes

    def set_price(
        self, instrument: Instrument, ltp: float, bid: float | None = None, ask: float | None = None
    ) -> Quote:
        self.market.set_price(instrument, ltp, bid, ask)
        # An index's derivatives moved with it (Market.followers): their ticks go out too.
        return self.publish([instrument, *self.market.followers(instrument)])[0]

    def gap(self, instrument: Instrument, percent: float) -> Quote:
        self.market.gap(instrument, percent)
        return self.publish([instrument])[0]

    # -- sessions --------------------------------------------------------------------------------

    def expire_tokens(self, broker: str | None = None) -> int:
        """Expire every access token (of one broker) and drop the feeds that were opened with them."""
        expired = self.sessions.expire_all(broker)
        tokens = {(s.broker, s.access_token) for s in expired}
        self.feeds.drop(broker, abort=False, where=lambda c: (c.broker, c.access_token) in tokens)
        return len(expired)

    def reset(self) -> None:
        """Forget orders, trades, positions and faults; sessions, prices and feeds stay."""
        self.exchange.reset()
        self.faults.clear()
        self.calendar.reset()
        for listener in self._listeners:
            reset = getattr(listener, "reset", None)
            if callable(reset):
                reset()

    # -- listeners -------------------------------------------------------------------------------

    def listeners(self) -> list[SimListener]:
        """Every listener (facades' books such as the GTT books), in the order they were added."""
        return list(self._listeners)

    def add_listener(self, listener: SimListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: SimListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _order_updated(self, order: Order) -> None:
        streamed = self._disorder.pass_on(order, self.faults.update_disorder)
        for listener in list(self._listeners):
            for update in streamed if listener.streams_order_updates else [order]:
                try:
                    listener.on_order_update(update)
                except Exception:
                    log.exception("listener %r failed on an order update", listener)
