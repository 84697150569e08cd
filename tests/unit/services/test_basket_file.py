"""--baskets FILE: the documented format, every mistake named by basket and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trailstop_gui.models.basket import BasketRules
from trailstop_gui.models.store import AccountRecord
from trailstop_gui.services.basket_file import read_baskets_file, resolve_account


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    return path


def test_the_readme_example_reads(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    example = readme.split("--baskets baskets.json`, with\n\n```json\n", 1)[1].split("```", 1)[0]
    specs = read_baskets_file(write(tmp_path, json.loads(example)))
    assert [s.name for s in specs] == ["NIFTY strangle", "everything"]
    assert specs[0].selectors == (("NFO", "NIFTY26DEC24000CE"), ("NFO", "NIFTY26DEC23000PE"))
    assert specs[0].rules == BasketRules(
        max_loss=5000, lock_at=3000, lock_profit=1000, trail_every=500, trail_by=250
    )
    assert specs[1].whole_account and specs[1].square_off is None


@pytest.mark.parametrize(
    ("basket", "message"),
    [
        ({"account": "kite", "positions": "all", "rules": {"max_loss": 1}}, r"baskets\[0\]\.name"),
        ({"name": "x", "positions": "all", "rules": {"max_loss": 1}}, r"baskets\[0\]\.account"),
        ({"name": "x", "account": "kite", "rules": {"max_loss": 1}}, r"baskets\[0\]\.positions"),
        (
            {"name": "x", "account": "kite", "positions": [{"symbol": "INFY"}], "rules": {"max_loss": 1}},
            r"positions\[0\]",
        ),
        (
            {"name": "x", "account": "kite", "positions": "all", "rules": {"max_loss": -1}},
            r"baskets\[0\]\.max loss",
        ),
        (
            {
                "name": "x",
                "account": "kite",
                "positions": "all",
                "rules": {"max_loss": 1},
                "square_off": "16:00",
            },
            "square_off",
        ),
        (
            {"name": "x", "account": "kite", "positions": "all", "rules": {"max_loss": 1}, "colour": "red"},
            "unknown",
        ),
    ],
)
def test_mistakes_are_named(tmp_path: Path, basket: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_baskets_file(write(tmp_path, {"baskets": [basket]}))


def test_not_json_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        read_baskets_file(path)
    same = {"name": "x", "account": "kite", "positions": "all", "rules": {"max_loss": 1}}
    with pytest.raises(ValueError, match="two baskets named"):
        read_baskets_file(write(tmp_path, {"baskets": [same, same]}))


def test_accounts_by_id_label_or_broker(tmp_path: Path) -> None:
    accounts = [
        AccountRecord(1, "kite", "Zerodha simulator", "", "", "", "", "live"),
        AccountRecord(2, "upstox", "Upstox simulator", "", "", "", "", "live"),
    ]
    base = {"name": "x", "positions": "all", "rules": {"max_loss": 1}}
    for account, expected in ((2, 2), ("zerodha SIMULATOR", 1), ("upstox", 2)):
        (spec,) = read_baskets_file(write(tmp_path, {"baskets": [dict(base, account=account)]}))
        assert resolve_account(spec, accounts).id == expected
    (spec,) = read_baskets_file(write(tmp_path, {"baskets": [dict(base, account="dhan")]}))
    with pytest.raises(ValueError, match="matches no loaded account"):
        resolve_account(spec, accounts)


def test_the_readme_example_of_timed_exits_and_underlying_rules_reads(tmp_path: Path) -> None:
    from trailstop_gui.models.domain import Side, TrailRule
    from trailstop_gui.services.basket_file import read_rules_file

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    example = readme.split("stops on the underlying (each list optional, `baskets` too):\n\n```json\n", 1)[1]
    rules = read_rules_file(write(tmp_path, json.loads(example.split("```", 1)[0])))
    assert rules.baskets == []
    (timed,) = rules.timed_exits
    assert (timed.account, timed.exchange, timed.symbol, str(timed.at)) == ("kite", "NSE", "INFY", "15:10:00")
    (under,) = rules.underlying_rules
    assert (under.exchange, under.symbol) == ("NFO", "NIFTY26DEC24000CE")
    assert (under.underlying_exchange, under.underlying_symbol) == ("NSE", "NIFTY 50")
    assert under.view is Side.BUY and under.rule == TrailRule.points(50)
    assert (
        read_baskets_file(
            write(tmp_path, {"timed_exits": [dict(account=1, exchange="nse", symbol="infy", at="15:10")]})
        )
        == []
    )


GOOD_UNDERLYING = {
    "account": "kite",
    "exchange": "NFO",
    "symbol": "NIFTY26DEC24000PE",
    "underlying": "NSE:NIFTY 50",
    "view": "short",
}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"timed_exits": [{"account": "kite", "exchange": "NSE", "symbol": "INFY"}]},
            r"timed_exits\[0\]\.at: missing",
        ),
        (
            {"timed_exits": [{"account": "kite", "exchange": "NSE", "symbol": "INFY", "at": "16:00"}]},
            r"timed_exits\[0\]\.at",
        ),
        (
            {"timed_exits": [{"account": "", "exchange": "NSE", "symbol": "INFY", "at": "15:00"}]},
            r"timed_exits\[0\]\.account",
        ),
        ({"timed_exits": {"account": "kite"}}, "timed_exits: expected a list"),
        (
            {"underlying_rules": [dict(GOOD_UNDERLYING, view="sideways")]},
            r"underlying_rules\[0\]\.view: long",
        ),
        (
            {"underlying_rules": [dict(GOOD_UNDERLYING, underlying="NIFTY 50")]},
            r"underlying_rules\[0\]\.underlying: EXCHANGE:SYMBOL",
        ),
        ({"underlying_rules": [dict(GOOD_UNDERLYING, rule="ticks:3")]}, r"underlying_rules\[0\]\.rule"),
        ({"underlying_rules": [dict(GOOD_UNDERLYING, symbol=" ")]}, r"underlying_rules\[0\]\.symbol"),
        (
            {"underlying_rules": [dict(GOOD_UNDERLYING, colour="red")]},
            r"underlying_rules\[0\]: unknown field\(s\) colour",
        ),
        ({"baskets": [], "stops": []}, "unknown field"),
        ({}, "expected"),
    ],
)
def test_timed_exit_and_underlying_mistakes_are_named(tmp_path: Path, data: object, message: str) -> None:
    from trailstop_gui.services.basket_file import read_rules_file

    with pytest.raises(ValueError, match=message):
        read_rules_file(write(tmp_path, data))


def test_a_basket_made_late_evening_utc_was_made_on_the_next_ist_trading_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a VPS on UTC, a file's basket that ended at 00:15 IST (18:45 UTC the day before) is one of that
    IST day: the next start must not arm it again as if it were yesterday's."""
    import time as clock
    from datetime import date, datetime

    from trailstop_gui.models.basket_store import Basket, BasketStatus
    from trailstop_gui.services.basket_file import made_on

    monkeypatch.setenv("TZ", "UTC")
    clock.tzset()
    try:
        ended = Basket(
            1,
            1,
            "pair",
            BasketRules(max_loss=100),
            BasketStatus.EXITED,
            (1, 2),
            created_at=datetime(2026, 12, 6, 18, 45),
        )
        assert made_on([ended], date(2026, 12, 7))
        assert not made_on([ended], date(2026, 12, 6))
    finally:
        monkeypatch.undo()
        clock.tzset()
