"""The campaign's settings (`ChaosConfig`) and the facts every part of the harness shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BROKERS = ("kite", "upstox")
USERS = {"kite": "DM1234", "upstox": "SIM0001"}
INJECTED_REJECTION = "CHAOS injected rejection: RMS margin exceeds"
TERMINAL = frozenset({"CLOSED", "CANCELLED", "REJECTED", "REMOVED", "EXIT_FAILED"})

Out = Callable[[str], None]


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


def truth(exchange: Any, broker: str) -> Any:
    """The demo user's account as it is: the harness never reads through the book_lag fault (its
    exchange.orders/positions/trades answer as the lagging REST API does; a trader fooled by them
    bought a short back five times over)."""
    return exchange.account(broker, USERS[broker])
