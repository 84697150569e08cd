"""What the trader does besides the app (`Workload`): the instruments traded, the trader's own orders
(every tag it sent), the prices pushed to the simulator, and the baskets the app is started with. The
positions opened outside are in positions.py, the delivery holdings traded outside in holdings.py.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import requests

from bench.chaos.config import BROKERS, ChaosConfig, truth
from trailstop_gui.simulator.exchange import DEMO_HOLDINGS

if TYPE_CHECKING:
    from bench.chaos.run import Run


@dataclass
class Traded:
    """A stock or contract the workload trades, as the simulator and the app name it."""

    number: int
    broker: str
    symbol: str  # NSE:INFY
    instrument: str  # as the app stores it: the Kite token, or the Upstox instrument key
    upstox_key: str
    tick: float


class Priced(Protocol):
    """What the workload trades and moves the price of: a position opened outside, or a holding."""

    broker: str
    symbol: str
    upstox_key: str
    tick: float
    price: float


def round_tick(price: float, tick: float, up: bool) -> float:
    steps = price / tick
    steps = math.ceil(steps - 1e-9) if up else math.floor(steps + 1e-9)
    return round(max(steps, 1) * tick, 2)


def write_baskets(folder: Path, config: ChaosConfig) -> Path:
    """A basket of every position per account (``--baskets FILE``, "positions": "all") with the max loss
    of the config: its breach exits every protection of the account at once."""
    path = folder / "baskets.json"
    rules = {"max_loss": config.basket_max_loss}
    baskets = [
        {"name": f"chaos {broker}", "account": broker, "positions": "all", "rules": rules}
        for broker in BROKERS
    ]
    path.write_text(json.dumps({"baskets": baskets}), encoding="utf-8")
    return path


class Workload:
    """The instruments, the trader's orders and the prices of one run."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.report = run.report
        self.instruments = [i for i in requests.get(f"{run.sim.url}/_sim/instruments", timeout=10).json()]
        self.held: Counter[str] = Counter()  # the demo account's delivery holdings, by symbol
        for symbol, quantity, *_rest in DEMO_HOLDINGS:
            self.held[symbol] += quantity
        self.outside_tags: set[str] = set()  # every order the trader sent (entries, closes, holdings)
        self.extra_protections: set[int] = set()  # second protections of a position, made while down

    def trade(
        self, broker: str, item: Priced, side: str, product: str, quantity: int, tag: str
    ) -> Future[str]:
        """A market order placed by the trader's own scripts (in the background): its verdict."""
        order = {
            "symbol": item.symbol,
            "upstox_key": item.upstox_key,
            "side": side,
            "product": product,
            "quantity": quantity,
            "tag": tag,
        }
        self.outside_tags.add(tag)
        return self.run.pool.submit(self.run.trader.place, broker, order)

    def order_state(self, broker: str, tag: str) -> tuple[str, int]:
        """(status, filled quantity) of the order carrying ``tag`` at the broker; ("?", 0) if not there."""
        exchange = self.run.sim.exchange

        def read() -> tuple[str, int]:
            for order in truth(exchange, broker).orders.values():
                if order.tag == tag:
                    return order.status.value, order.state.filled_quantity
            return "?", 0

        return self.run.sim.call(read)

    def refusal(self, broker: str, tag: str) -> str:
        """Why the broker refused the order carrying ``tag``, if it did ("" otherwise)."""
        exchange = self.run.sim.exchange

        def read() -> str:
            for order in truth(exchange, broker).orders.values():
                if order.tag == tag:
                    return order.state.status_message or ""
            return "not at the broker"

        return self.run.sim.call(read)

    def push(self, item: Priced, ltp: float) -> None:
        """A new price for the item's stock, a tick either side of it for bid and ask."""
        ltp = round_tick(ltp, item.tick, up=False)
        self.run.sim.set_price(item.symbol, ltp, bid=round(ltp - item.tick, 2), ask=round(ltp + item.tick, 2))
        item.price = ltp
        self.report.ticks += 1
