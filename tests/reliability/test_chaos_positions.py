"""The chaos harness's episodes after a basket's exit: the rest of a partly filled entry that filled after the
breach is a new position with its own protection, trailed and crossed as any other (no app is started)."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from bench.chaos.config import ChaosConfig
from bench.chaos.positions import Episode, Positions
from bench.chaos.report import RunReport

BASKET_EXITED = (22, "CLOSED", 958.85)  # 6 shares, adopted from the entry's first fill; the basket sold them
REST = (34, "OPEN", 959.35)  # the other 10, filled after the breach and adopted by auto-protect


class Scripted(Positions):
    """Positions over a fixed protection table and net position; the feed always up; pushes recorded."""

    def __init__(self, rows: list[tuple[Any, ...]], net: int) -> None:
        self.rows, self.net = rows, net
        self.config = ChaosConfig(seed=1, baskets=True)
        self.rng = random.Random(1)
        self.report = RunReport(run=1, seed=1)
        self.tracker = SimpleNamespace(available=lambda _broker, t0, t1: t1 - t0)
        self.pushed: list[float] = []
        self.workload = SimpleNamespace(push=lambda _ep, price: self.pushed.append(price))
        self.run = SimpleNamespace(
            control=lambda _path, body: {"quote": {"ltp": REST[2] * (1 + body["percent"] / 100)}},
            kills=SimpleNamespace(after_crossing=lambda: None),
        )

    def protection_row(self, ep: Episode) -> list[tuple[Any, ...]]:
        return self.rows

    def net_position(self, ep: Episode) -> int:
        return self.net

    def exited_by_basket(self, pid: object) -> bool:
        return pid == BASKET_EXITED[0]


def episode() -> Episode:
    return Episode(
        number=16,
        broker="upstox",
        symbol="NSE:INDUSINDBK",
        instrument="NSE_EQ|INE095A01012",
        upstox_key="NSE_EQ|INE095A01012",
        tick=0.05,
        side="BUY",
        product="CNC",
        quantity=16,
        tag="CX1N16",
        state="waiting",
        price=979.0,
        outcome="exited by a basket",
        entered_at=100.0,
        protection_id=BASKET_EXITED[0],
    )


def test_the_rest_adopted_after_a_basket_exit_is_trailed_again_not_waited_for() -> None:
    """Found by seed 31005 (baskets): the harness waited for the basket's exit to flatten all 16 shares and
    called the 10 adopted after it "still open after 60 s"; nobody had crossed their stop."""
    positions, ep = Scripted([BASKET_EXITED, REST], net=10), episode()
    positions.check_flat(ep, now=110.0)
    assert (ep.state, ep.outcome, ep.problem) == ("protecting", "", "")


def test_the_rest_is_crossed_at_its_own_stop() -> None:
    positions, ep = Scripted([BASKET_EXITED, REST], net=10), episode()
    ep.protection_id, ep.state, ep.outcome = REST[0], "crossing", ""  # as check_protected leaves it
    positions.cross(ep)
    assert ep.crossed_stop == REST[2] and ep.outcome == "" and ep.problem == ""
    assert positions.pushed and all(price < REST[2] for price in positions.pushed)


def test_a_basket_exit_still_in_flight_is_waited_for() -> None:
    positions, ep = Scripted([(22, "EXITING", 958.85), REST], net=10), episode()
    positions.check_flat(ep, now=110.0)
    assert (ep.state, ep.outcome) == ("waiting", "exited by a basket")
