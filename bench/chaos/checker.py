"""The invariants (`Checker`), checked after a run against the simulator's own order log, trades and GTT
book and the app's database and journal: every breach is a `Violation` of the run."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.chaos.config import BROKERS, INJECTED_REJECTION, TERMINAL, USERS, truth
from bench.chaos.feed import FEED_LINE
from bench.chaos.holdings import HoldingPlay
from bench.chaos.positions import Episode
from trailstop_gui.models.domain import Side, TrailRule
from trailstop_gui.models.engine import initial_stop
from trailstop_gui.services.safety_stop import SAFETY_STOP_REASON

if TYPE_CHECKING:
    from bench.chaos.run import Run

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
                for t in truth(exchange, b).trades
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
            # The children of one placement are one exit whichever of them the broker refused (a refused
            # first slice is not in ``exits``: join the others to each other, not through it).
            for i in ids:
                join(i, row["exit_order_id"])
            kept = [i for i in ids if i in root]
            for i in kept[1:]:
                join(i, kept[0])
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
            # Refused by an injected rejection: nothing sent, or (a sliced exit) the slices before the
            # refused one filled and the rest is the trader's. A freeze-limit refusal that the app answered
            # by slicing is no failure of its own.
            injected = [o for o in refused if o.status_message == INJECTED_REJECTION]
            others = [
                o for o in refused if o not in injected and "freeze limit" not in (o.status_message or "")
            ]
            sliced = bool(injected) and len(refused) > len(injected)
            if injected and not others and (not exits or sliced):
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
        for pos in truth(self.run.sim.exchange, broker).positions.values():
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
            match = FEED_LINE.search(line)
            if match is not None and match.group(2) == "live":
                live.setdefault(gen, {}).setdefault(match.group(1), t)
        for gen, seen in live.items():
            if len(seen) == len(BROKERS) and gen in self.run.app.start_times:
                self.report.restart_to_live.append(max(seen.values()) - self.run.app.start_times[gen])
