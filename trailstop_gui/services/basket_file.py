"""``--baskets FILE``: baskets, timed exits and stops on the underlying for headless runs, from a JSON file
(the format is in the README).

```json
{"baskets": [
  {"name": "NIFTY strangle", "account": "Zerodha simulator",
   "positions": [{"exchange": "NFO", "symbol": "NIFTY26DEC24000CE"},
                 {"exchange": "NFO", "symbol": "NIFTY26DEC23000PE"}],
   "rules": {"max_loss": 5000, "lock_at": 3000, "lock_profit": 1000,
             "trail_every": 500, "trail_by": 250},
   "square_off": "15:15"},
  {"name": "everything", "account": "upstox", "positions": "all", "rules": {"max_loss": 20000}}
 ],
 "timed_exits": [{"account": "kite", "exchange": "NSE", "symbol": "INFY", "at": "15:10"}],
 "underlying_rules": [
  {"account": "kite", "exchange": "NFO", "symbol": "NIFTY26DEC24000CE",
   "underlying": "NSE:NIFTY 50", "view": "long", "rule": "points:50"}
 ]}
```

Timed exits and stops on the underlying apply to every protection of that account and instrument, those
protected later included (``services/file_rules.py`` applies them); both lists are optional.

Loading it again (every restart of the service) changes nothing already stored: a basket of that account
and name that is live keeps its lock (its rules are updated if the file changed them); one that already
exited today is not created again, so a restart cannot arm a second basket on the same day.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import Any

from trailstop_gui.models.basket import BasketRules
from trailstop_gui.models.basket_store import Basket, BasketStatus
from trailstop_gui.models.domain import Side, TrailRule
from trailstop_gui.models.square_off import parse_exit_time, to_ist
from trailstop_gui.models.store import AccountRecord
from trailstop_gui.services.baskets import BasketService

log = logging.getLogger("trailstop.baskets")


@dataclass(frozen=True)
class BasketSpec:
    name: str
    account: str | int
    rules: BasketRules
    whole_account: bool
    selectors: tuple[tuple[str, str], ...]
    square_off: time | None = None


@dataclass(frozen=True)
class TimedExitSpec:
    """Protections of this account and instrument exit at ``at`` (IST)."""

    account: str | int
    exchange: str
    symbol: str
    at: time


@dataclass(frozen=True)
class UnderlyingSpec:
    """Protections of this account and instrument trail and trigger on ``underlying`` with ``view``;
    ``rule`` (percent or points on the underlying) replaces their own when given."""

    account: str | int
    exchange: str
    symbol: str
    underlying_exchange: str
    underlying_symbol: str
    view: Side
    rule: TrailRule | None = None


@dataclass(frozen=True)
class RulesFile:
    """Everything a ``--baskets`` file holds."""

    baskets: list[BasketSpec] = field(default_factory=list)
    timed_exits: list[TimedExitSpec] = field(default_factory=list)
    underlying_rules: list[UnderlyingSpec] = field(default_factory=list)


def read_baskets_file(path: str | Path) -> list[BasketSpec]:
    """The file's baskets (see ``read_rules_file``)."""
    return read_rules_file(path).baskets


def read_rules_file(path: str | Path) -> RulesFile:
    """Parse and check the whole file; ValueError names the entry and the field at fault."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("baskets", []), list):
        raise ValueError(
            f'{path}: expected {{"baskets": [...], "timed_exits": [...], "underlying_rules": [...]}}'
        )
    unknown = set(data) - {"baskets", "timed_exits", "underlying_rules"}
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")
    lists = {}
    for name in ("timed_exits", "underlying_rules"):
        items = data.get(name, [])
        if not isinstance(items, list):
            raise ValueError(f"{path}: {name}: expected a list")
        lists[name] = items
    if not any(name in data for name in ("baskets", "timed_exits", "underlying_rules")):
        raise ValueError(f'{path}: expected {{"baskets": [...]}} (or "timed_exits", "underlying_rules")')
    timed = [_timed_exit(item, f"timed_exits[{i}]") for i, item in enumerate(lists["timed_exits"])]
    underlying = [
        _underlying(item, f"underlying_rules[{i}]") for i, item in enumerate(lists["underlying_rules"])
    ]
    specs = [_spec(item, f"baskets[{i}]") for i, item in enumerate(data.get("baskets", []))]
    seen: set[tuple[str, str]] = set()
    for spec in specs:
        key = (str(spec.account).lower(), spec.name.lower())
        if key in seen:
            raise ValueError(f"{path}: two baskets named {spec.name!r} for account {spec.account!r}")
        seen.add(key)
    return RulesFile(specs, timed, underlying)


def _fields(
    item: Any, where: str, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object")
    unknown = set(item) - required - optional
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    for name in sorted(required):
        if name not in item:
            raise ValueError(f"{where}.{name}: missing")
    return item


def _account(item: dict[str, Any], where: str) -> str | int:
    account = item.get("account")
    if isinstance(account, bool) or not isinstance(account, str | int) or account == "":
        raise ValueError(f"{where}.account: an account id, its label, or kite/upstox")
    return account


def _text(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}.{name}: expected text, got {value!r}")
    return value.strip().upper()


def _timed_exit(item: Any, where: str) -> TimedExitSpec:
    item = _fields(item, where, frozenset({"account", "exchange", "symbol", "at"}))
    at = parse_exit_time(item["at"], f"{where}.at")
    return TimedExitSpec(
        _account(item, where), _text(item, "exchange", where), _text(item, "symbol", where), at
    )


VIEWS = {"long": Side.BUY, "buy": Side.BUY, "short": Side.SELL, "sell": Side.SELL}


def _underlying(item: Any, where: str) -> UnderlyingSpec:
    item = _fields(
        item, where, frozenset({"account", "exchange", "symbol", "underlying", "view"}), frozenset({"rule"})
    )
    underlying = _text(item, "underlying", where)
    exchange, sep, symbol = underlying.partition(":")
    if not sep or not exchange.strip() or not symbol.strip():
        raise ValueError(
            f"{where}.underlying: EXCHANGE:SYMBOL, such as NSE:NIFTY 50, got {item['underlying']!r}"
        )
    view = VIEWS.get(str(item["view"]).strip().lower())
    if view is None:
        raise ValueError(
            f"{where}.view: long (protects against a fall) or short (against a rise), got {item['view']!r}"
        )
    rule = None
    if item.get("rule") is not None:
        try:
            rule = TrailRule.parse(str(item["rule"]))
        except ValueError as exc:
            raise ValueError(f"{where}.{exc}") from None
    return UnderlyingSpec(
        _account(item, where),
        _text(item, "exchange", where),
        _text(item, "symbol", where),
        exchange.strip(),
        symbol.strip(),
        view,
        rule,
    )


def _spec(item: Any, where: str) -> BasketSpec:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object")
    known = {"name", "account", "positions", "rules", "square_off"}
    unknown = set(item) - known
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}.name: a basket needs a name")
    account = item.get("account")
    if isinstance(account, bool) or not isinstance(account, str | int) or account == "":
        raise ValueError(f"{where}.account: an account id, its label, or kite/upstox")
    try:
        rules = BasketRules.from_dict(item.get("rules"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}.{exc}") from None
    positions = item.get("positions")
    whole = positions == "all"
    selectors: list[tuple[str, str]] = []
    if not whole:
        if not isinstance(positions, list) or not positions:
            raise ValueError(f'{where}.positions: "all", or a list of {{"exchange", "symbol"}}')
        for j, entry in enumerate(positions):
            exchange = entry.get("exchange") if isinstance(entry, dict) else None
            symbol = entry.get("symbol") if isinstance(entry, dict) else None
            if not isinstance(exchange, str) or not isinstance(symbol, str) or not exchange or not symbol:
                raise ValueError(f"{where}.positions[{j}]: needs exchange and symbol")
            selectors.append((exchange.strip().upper(), symbol.strip().upper()))
    square_off = item.get("square_off")
    at = None if square_off in (None, "") else parse_exit_time(square_off, f"{where}.square_off")
    return BasketSpec(name.strip(), account, rules, whole, tuple(selectors), at)


def resolve_account(spec: BasketSpec, accounts: list[AccountRecord]) -> AccountRecord:
    """The loaded account a spec names: by id, by label, or by broker when it has one account only."""
    return find_account(spec.account, accounts, f"basket {spec.name!r}")


def find_account(account: str | int, accounts: list[AccountRecord], what: str) -> AccountRecord:
    """The loaded account ``account`` names (id, label, or broker with one account); ValueError names
    ``what`` asked for it."""
    if isinstance(account, int):
        found = [a for a in accounts if a.id == account]
    else:
        wanted = account.strip().lower()
        found = [a for a in accounts if a.label.lower() == wanted]
        if not found:
            found = [a for a in accounts if a.broker.lower() == wanted]
    if len(found) != 1:
        names = ", ".join(f"{a.id} ({a.label})" for a in accounts) or "none"
        problem = "is ambiguous" if found else "matches no loaded account"
        raise ValueError(f"{what}: account {account!r} {problem} (loaded: {names})")
    return found[0]


def made_on(baskets: list[Basket], day: date) -> bool:
    """Whether one of ``baskets`` was made on the IST trading day ``day``. ``created_at`` is the machine's
    local time: a VPS on UTC is on the day before from 18:30 to midnight, IST's 00:00 to 05:30."""
    return any(b.created_at is not None and to_ist(b.created_at).date() == day for b in baskets)


def apply_baskets(
    specs: list[BasketSpec], baskets: BasketService, accounts: list[AccountRecord]
) -> list[Basket]:
    """Create (or update) the file's baskets; returns the live ones."""
    resolved = [(spec, resolve_account(spec, accounts)) for spec in specs]  # all named before any write
    out: list[Basket] = []
    for spec, account in resolved:
        existing = baskets.baskets.find(account.id, spec.name)
        live = [b for b in existing if b.status in (BasketStatus.ACTIVE, BasketStatus.TRIGGERED)]
        today = baskets.today()
        if live:
            basket = live[-1]
            if basket.status is BasketStatus.ACTIVE and basket.rules != spec.rules:
                basket = baskets.set_rules(basket.id, spec.rules)
        elif made_on(existing, today):
            log.info("basket %r of account %s already ended today: not armed again", spec.name, account.id)
            continue
        else:
            basket = baskets.create(
                account.id,
                spec.name,
                spec.rules,
                whole_account=spec.whole_account,
                selectors=spec.selectors,
            )
        if spec.square_off is not None:
            basket = baskets.set_square_off(basket.id, spec.square_off)
        log.info("basket %s %r: %s", basket.id, basket.name, basket.rules.describe())
        out.append(basket)
    return out
