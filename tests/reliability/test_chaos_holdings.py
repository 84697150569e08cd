"""The chaos harness's holding plays: one stock's two holdings (Kite and Upstox share one price) are crossed
together; one whose basket already exited it is "exited by a basket", not a problem (no app is started)."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from bench.chaos.config import ChaosConfig
from bench.chaos.holdings import HoldingPlay, Holdings


class Scripted(Holdings):
    """Holdings over fixed protection rows (by play number) and the basket's breaches; pushes recorded."""

    def __init__(self, rows: dict[int, tuple[Any, ...]], basket_took: set[int]) -> None:
        self.rows, self.took = rows, basket_took
        self.config = ChaosConfig(seed=1, baskets=True)
        self.rng = random.Random(1)
        self.pushed: list[float] = []
        self.workload = SimpleNamespace(push=lambda _play, price: self.pushed.append(price))
        self.plays: list[HoldingPlay] = []

    def play_row(self, play: HoldingPlay) -> tuple[Any, ...] | None:
        return self.rows[play.number]

    def basket_took(self, play: HoldingPlay) -> bool:
        return play.number in self.took


def play(number: int, broker: str) -> HoldingPlay:
    return HoldingPlay(
        number=number,
        broker=broker,
        symbol="NSE:SBIN",
        instrument="779521" if broker == "kite" else "NSE_EQ|INE062A01020",
        upstox_key="NSE_EQ|INE062A01020",
        tick=0.05,
        held=16,
        play="sell part",
        start_at=0.0,
        state="before crossing",
    )


def test_a_sibling_its_basket_exited_is_not_a_problem_and_the_other_is_crossed() -> None:
    """Found by chaos seed 31023: the Upstox play crossed SBIN for both; the Kite holding's basket had
    breached and exited it meanwhile, and it was reported "protection was TRIGGERED before its stop was
    crossed" (a violation), though the play itself would have called it "exited by a basket"."""
    upstox, kite = play(7, "upstox"), play(3, "kite")
    holdings = Scripted({7: (7, "OPEN", 796.35, 9, ""), 3: (3, "TRIGGERED", 796.35, 1, "")}, basket_took={3})
    holdings.plays = [kite, upstox]
    holdings.advance_play(upstox, now=100.0)
    assert (kite.state, kite.outcome, kite.problem) == ("done", "exited by a basket", "")
    assert upstox.state == "crossed" and upstox.crossed_stop == 796.35 and holdings.pushed


def test_a_sibling_ended_without_a_basket_is_still_a_problem() -> None:
    upstox, kite = play(7, "upstox"), play(3, "kite")
    holdings = Scripted(
        {7: (7, "OPEN", 796.35, 9, ""), 3: (3, "TRIGGERED", 796.35, 1, "")}, basket_took=set()
    )
    holdings.plays = [kite, upstox]
    holdings.advance_play(upstox, now=100.0)
    assert kite.problem == "protection was TRIGGERED before its stop was crossed"
