"""Reconciler: aligns the local protections with what the broker says, for one account.

Runs at start-up, after every reconnect and every 30 s, always off the GUI thread. For each live protection:

- PENDING: the entry order filled (arm from its average price; a partial fill arms the filled quantity),
  or ended unfilled (CANCELLED / REJECTED).
- OPEN: the position was closed outside the app (CLOSED, reason external, no exit sent), or shrank
  (the protected quantity follows it down). Several protections on one position share its live quantity,
  oldest first (positions.allocate). "Closed outside" needs two flat reads ``flat_confirm_seconds`` apart:
  a positions endpoint may lag a fresh fill. A shrink (and auto-protect's growth) needs two reads that far
  apart too, but never waits inside a reconcile: the first sighting is remembered and a later reconcile
  applies it (services/resize_confirmation.py); the report asks for that reconcile (``recheck_in``).
  A position with an exit on its way is left alone until that exit is settled (its live quantity may or
  may not show the fill yet). Every OPEN, unpaused protection is checked to be armed in its feed
  (re-armed when a failed trigger or exit left it unwatched).
  A flat position whose broker-held safety stop fired (perhaps while TrailStop was away) is CLOSED with
  reason "safety stop", and nothing is sent. A broker-held stop is checked (there, at its level and
  quantity; re-created or fixed when not), and taken away once its position is flat.
- TRIGGERED / EXITING: the exit is finished by the executor, which looks the tag up first (crash recovery).
- With auto-protect on, every open position that has no protection gets one; delivery holdings only when
  the trader asked for them too (``auto_protect_holdings``). A negative delivery row is shares sold out of
  holdings: never adopted as a short.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from trailstop_gui.models.domain import Product, Protection, Status, TrailRule
from trailstop_gui.models.engine import checked_initial_stop
from trailstop_gui.models.lifecycle import IllegalTransition
from trailstop_gui.models.store import ConcurrentTransition, ProtectionStore
from trailstop_gui.services.adoption import adopt_position
from trailstop_gui.services.brokers.base import (
    Broker,
    Holding,
    Order,
    OrderStatus,
    Position,
    latest_with_tag,
)
from trailstop_gui.services.brokers.errors import AuthError, BrokerError
from trailstop_gui.services.holdings import DeliveryStock, covers_stock, delivery_stocks, is_delivery_sale
from trailstop_gui.services.positions import (
    EXITS_IN_FLIGHT,
    PositionKey,
    allocate,
    matching_position,
    open_quantity,
    position_key,
    same_instrument,
)
from trailstop_gui.services.resize_confirmation import Change, ResizeConfirmation, covered
from trailstop_gui.services.safety_stop import SafetyConfig, close_by_safety_stop

log = logging.getLogger("trailstop.reconciler")

# How long after a first flat read a second one confirms that a position was closed outside the app.
FLAT_CONFIRM_SECONDS = 2.0
# A PENDING entry whose reply was lost and whose tag the order book still lacks after this long never
# reached the broker (the book lags a fill by a second or two, not minutes).
ENTRY_LOST_SECONDS = 120.0


@dataclass
class ReconcileReport:
    account_id: int
    filled: list[int] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)
    closed_externally: list[int] = field(default_factory=list)
    # Ended with no exit, its position still held: older protections of that position cover all of it (a
    # second protection of a whole position: a Protect that raced auto-protect, or an older version's).
    covered_by_others: list[int] = field(default_factory=list)
    resized: list[int] = field(default_factory=list)
    exits_resumed: list[int] = field(default_factory=list)
    adopted: list[int] = field(default_factory=list)
    safety_closed: list[int] = field(default_factory=list)  # flat because the broker-held stop fired
    rearmed: list[int] = field(default_factory=list)  # OPEN but not armed in the feed: armed again
    failed: list[int] = field(default_factory=list)  # could not be reconciled; the others went on
    stop_refused: list[int] = field(default_factory=list)  # filled, but its rule's stop would be <= 0
    # A read showed a changed quantity that a read flat_confirm_seconds later must confirm before it applies.
    unconfirmed: list[int] = field(default_factory=list)
    recheck_in: float | None = None  # reconcile again this many seconds on: it may confirm them

    def changed(self) -> bool:
        return any(
            (
                self.filled,
                self.ended,
                self.closed_externally,
                self.covered_by_others,
                self.resized,
                self.adopted,
                self.safety_closed,
                self.rearmed,
            )
        )


@dataclass(frozen=True)
class Hooks:
    """What the reconciler asks of the rest of the services."""

    arm: Callable[[Protection], None]  # put an OPEN protection in its account's engine
    disarm: Callable[[int], None]
    resume_exit: Callable[[int], None]  # hand a TRIGGERED/EXITING protection to the executor (recover)
    tick_size: Callable[[int, Position | DeliveryStock], float]  # the tick size, for adopted positions
    # The broker-held safety stops (services/safety_stop.py); the defaults do nothing.
    # its filled order; raises BrokerError when it cannot tell
    safety_fired: Callable[[Protection, Broker], Order | None] = lambda _p, _b: None
    safety_check: Callable[[Protection], None] = lambda _p: None  # there, at its level? (asynchronous)
    safety_release: Callable[[int], None] = lambda _pid: None  # take it away (asynchronous)
    safety_default: Callable[[int], SafetyConfig] = lambda _account: SafetyConfig()  # for auto-protect
    # The protection ids armed in the account's feed right now; None when no feed runs (nothing to check).
    armed: Callable[[int], Collection[int] | None] = lambda _account: None
    # An entry filled, but its rule's stop would be <= 0: OPEN and paused (the trader is told).
    stop_refused: Callable[[Protection], None] = lambda _p: None
    # How the engine sees a protection: itself, or on its underlying's prices (services/underlying.py).
    engine_view: Callable[[Protection], Protection] = lambda p: p
    # Every positions read (and the holdings read with it, None when not read), with the monotonic time
    # the read was sent: it corrects the account's live position book (services/position_book.py).
    positions_read: Callable[[int, list[Position], list[Holding] | None, float], None] = (
        lambda _account, _positions, _holdings, _sent_at: None
    )


class Reconciler:
    """One reconcile at a time per account; safe to call from any worker thread."""

    def __init__(
        self,
        store: ProtectionStore,
        hooks: Hooks,
        *,
        flat_confirm_seconds: float = FLAT_CONFIRM_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.hooks = hooks
        self.flat_confirm_seconds = flat_confirm_seconds
        self._sleep = sleep
        self._clock = clock  # when each positions read is sent (the position book's clock too)
        self.resizes = ResizeConfirmation(flat_confirm_seconds)
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()
        self.auto_protect: dict[int, TrailRule] = {}
        self.auto_protect_holdings: set[int] = set()  # accounts whose auto-protect also covers holdings

    def _lock_for(self, account_id: int) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(account_id, threading.Lock())

    def reconcile(self, account_id: int, broker: Broker) -> ReconcileReport:
        """Raises the broker's error (AuthError included) when it cannot read the account.

        One protection that cannot be reconciled (a bad stored value, an error of its own) is logged and
        left for the next run; it never stops the others.
        """
        report = ReconcileReport(account_id)
        with self._lock_for(account_id):
            live = self.store.live(account_id)
            # Exits first, before any read below can fail: the executor reads what it needs itself, with
            # retries, so a broker that cannot answer this reconcile must not hold an exit back.
            for p in live:
                if p.status in EXITS_IN_FLIGHT:
                    with self._isolated(p, report):
                        report.exits_resumed.append(p.id)
                        self.hooks.resume_exit(p.id)
            needs_orders = any(p.status is Status.PENDING for p in live)
            orders = broker.orders() if needs_orders else []
            read_at = datetime.now()
            # Sightings of protections no longer OPEN are of no use (they are sized again if they return).
            self.resizes.keep_only(account_id, {p.id for p in live if p.status is Status.OPEN})
            sent_at = self._clock()
            positions = broker.positions()
            needs_holdings = any(p.product is Product.CNC for p in live) or account_id in self.auto_protect
            holdings = broker.holdings() if needs_holdings else []
            self.hooks.positions_read(account_id, positions, holdings if needs_holdings else None, sent_at)
            shares = self._shares(live, broker, positions, holdings)
            maybe_flat: list[Protection] = []
            for p in live:
                with self._isolated(p, report):
                    if p.status is Status.PENDING:
                        self._pending(p, orders, report)
                    elif p.status is Status.OPEN and p.id in shares:
                        if shares[p.id] <= 0:
                            # A shrink seen too: a second read that finds part of it confirms that part.
                            self.resizes.remember(p, Change.SHRINK, sent_at)
                            maybe_flat.append(p)
                        else:
                            self._open(p, shares[p.id], report, sent_at)
            if maybe_flat:
                self._confirm_flat(account_id, broker, maybe_flat, report)
            self._check_armed(account_id, report)
            rule = self.auto_protect.get(account_id)
            if rule is not None:
                self._adopt_unprotected(
                    account_id, broker, rule, positions, holdings, report, read_at, sent_at
                )
            report.unconfirmed = [
                pid for pid in dict.fromkeys(report.unconfirmed) if self.resizes.pending(pid)
            ]
            due = self.resizes.confirmable_at(report.unconfirmed)
            if due is not None:
                report.recheck_in = max(due - self._clock(), 0.0)
            for p in self.store.safety_left_behind(account_id):
                # Ended while its broker stop was on its way, or the app stopped before taking it away.
                self.hooks.safety_release(p.id)
        if report.changed():
            log.info("reconciled account %s: %s", account_id, report)
        return report

    @contextlib.contextmanager
    def _isolated(self, p: Protection, report: ReconcileReport) -> Iterator[None]:
        """Per-protection isolation: a failure of one is logged and does not stop the loop."""
        try:
            yield
        except (ConcurrentTransition, IllegalTransition) as exc:
            # Another thread moved it on (a tick fired it, the executor closed it): not an error.
            log.info("protection %s: changed while reconciling (%s)", p.id, exc)
        except AuthError:
            raise  # the whole account needs a login
        except Exception:
            log.exception("protection %s: could not be reconciled; the others go on", p.id)
            report.failed.append(p.id)

    @staticmethod
    def _shares(
        live: list[Protection], broker: Broker, positions: list[Position], holdings: list[Holding]
    ) -> dict[int, int]:
        """What each OPEN protection covers of its position (positions.allocate).

        Positions with an exit on its way are left out: whether their live quantity shows that exit's fill
        yet cannot be told, so they are looked at again once it is settled.
        """
        busy = {position_key(p) for p in live if p.status in EXITS_IN_FLIGHT}
        open_ = [p for p in live if p.status is Status.OPEN and position_key(p) not in busy]
        per_position: dict[PositionKey, int] = {}
        for p in open_:
            key = position_key(p)
            if key not in per_position:
                per_position[key] = open_quantity(p, positions, holdings, broker.capabilities)
        return allocate(open_, per_position)

    def _confirm_flat(
        self, account_id: int, broker: Broker, maybe_flat: list[Protection], report: ReconcileReport
    ) -> None:
        """Close as "closed outside" only what a second read, some seconds later, still finds flat.

        That read also settles the shrinks the first one showed (``report.unconfirmed``): it was sent
        ``flat_confirm_seconds`` after it.
        """
        log.info(
            "protections %s: their positions look flat; reading again in %.0f s",
            [p.id for p in maybe_flat],
            self.flat_confirm_seconds,
        )
        self._sleep(self.flat_confirm_seconds)
        shrunk = [self.store.get(pid) for pid in dict.fromkeys(report.unconfirmed)]
        sent_at = self._clock()
        positions = broker.positions()
        needs_holdings = any(p.product is Product.CNC for p in [*maybe_flat, *shrunk])
        holdings = broker.holdings() if needs_holdings else []
        shares = self._shares(self.store.live(account_id), broker, positions, holdings)
        for p in shrunk:
            with self._isolated(p, report):
                share = shares.get(p.id)
                if share is not None and share > 0:
                    self._open(p, share, report, sent_at)  # flat now: the next reconcile looks again
        for p in maybe_flat:
            with self._isolated(p, report):
                share = shares.get(p.id)
                if share is None:
                    continue  # no longer OPEN, or an exit is on its way for its position
                if share > 0:
                    log.info("protection %s: its position is there after all (%d)", p.id, share)
                    self._open(self.store.get(p.id), share, report, sent_at)
                else:
                    held = open_quantity(p, positions, holdings, broker.capabilities)
                    self._flat(p, broker, report, held=held)

    def _check_armed(self, account_id: int, report: ReconcileReport) -> None:
        """Every OPEN, unpaused protection must be armed in its feed: re-arm any that is not.

        A trigger or a manual exit whose commit failed used to leave its protection OPEN and unwatched.
        One that became OPEN (or changed) after the feed's armed set was read is left to the next reconcile:
        whoever opened it arms it, and an adoption made between that read and the store's was being "armed
        again" (a warning in every bench.tick_to_exit run, which adopts a position a second).
        """
        checked_at = datetime.now()  # the store's clock for updated_at
        armed = self.hooks.armed(account_id)
        if armed is None:
            return
        settled = {*report.filled, *report.adopted}
        for p in self.store.protections([Status.OPEN], account_id):
            if p.paused or p.entry_price is None or p.id in armed or p.id in settled:
                continue
            if p.updated_at > checked_at:
                continue
            with self._isolated(p, report):
                log.warning("protection %s: OPEN but not armed in its feed; arming it again", p.id)
                self.hooks.arm(p)
                report.rearmed.append(p.id)

    def _pending(self, p: Protection, orders: list[Order], report: ReconcileReport) -> None:
        if p.entry_order_id:
            order = next((o for o in orders if o.order_id == p.entry_order_id), None)
        else:
            # The entry's reply was lost (a timeout): the broker may have taken it. Its tag finds it.
            order = latest_with_tag(orders, p.entry_tag)
            if order is None:
                if datetime.now() - p.created_at > timedelta(seconds=ENTRY_LOST_SECONDS):
                    # Minutes on, still not in the book (which lags by seconds): it never reached the broker.
                    self.store.transition(
                        p.id,
                        Status.REJECTED,
                        expected=Status.PENDING,
                        reason="entry order not found at the broker",
                    )
                    report.ended.append(p.id)
                return
            log.info("protection %s: entry %s found by its tag", p.id, order.order_id)
            p = self.store.record_entry_order(p.id, order.order_id) or self.store.get(p.id)
        if order is None:
            return
        self.apply_entry_state(p, order.status, order.filled_quantity, order.average_price, report)

    def apply_entry_state(
        self,
        p: Protection,
        status: OrderStatus,
        filled: int,
        average_price: float,
        report: ReconcileReport | None = None,
    ) -> Protection | None:
        """An entry order's new state (from the order book or an order update) applied to its protection."""
        if filled > 0 and average_price > 0:
            if p.status is Status.PENDING:
                reason = "entry filled" if filled >= p.quantity else "entry partly filled"
                # A stop on the underlying (set when the order was placed) starts from the underlying's
                # price in its terms, never from the option's fill: the engine watches the underlying.
                view = self.hooks.engine_view(p.with_changes(entry_price=average_price))
                peak = view.entry_price if view.entry_price is not None else average_price
                try:
                    stop: float | None = checked_initial_stop(view.side, peak, view.tick_size, view.rule)
                    paused = False
                except ValueError as exc:
                    # The fill is a fact; the stop is refused: the protection is OPEN, paused and unarmed,
                    # and says why, until the trader changes its rule.
                    log.warning("protection %s: entry filled at %g, but %s", p.id, average_price, exc)
                    stop, paused, reason = None, True, f"{reason}; stop refused: {exc}"
                p = self.store.transition(
                    p.id,
                    Status.OPEN,
                    expected=Status.PENDING,
                    entry_price=average_price,
                    filled_quantity=filled,
                    peak=peak,
                    stop=stop,
                    paused=paused,
                    reason=reason[:200],
                    price=average_price,
                )
                if paused:
                    if report is not None:
                        report.stop_refused.append(p.id)
                    self.hooks.stop_refused(p)
            elif p.status is Status.OPEN and filled > p.filled_quantity:
                p = self.store.update(
                    p.id, kind="entry_fill", filled_quantity=filled, entry_price=average_price
                )
            else:
                return None
            if p.status is Status.OPEN:
                # Not when its stop fired while the fill was being written (the feed thread does not wait
                # for us): armed again, it would fire a second time and its safety stop would follow it.
                self.hooks.arm(p)
            if report is not None:
                report.filled.append(p.id)
            return p
        if p.status is Status.PENDING and status in (OrderStatus.CANCELLED, OrderStatus.REJECTED):
            target = Status.CANCELLED if status is OrderStatus.CANCELLED else Status.REJECTED
            p = self.store.transition(
                p.id, target, expected=Status.PENDING, reason=f"entry {status.value.lower()}"
            )
            if report is not None:
                report.ended.append(p.id)
            return p
        return None

    def _open(self, p: Protection, share: int, report: ReconcileReport, read_at: float) -> None:
        """An OPEN protection whose position still holds ``share`` for it (its part, oldest first), by a
        read sent at ``read_at``. Less than it covers: it shrinks once a later read confirms it."""
        protected = covered(p)
        if share >= protected:
            self.resizes.unchanged(p.id, Change.SHRINK)
        elif not self.resizes.seen(p, Change.SHRINK, read_at):
            # Perhaps a read trailing a fill (the rest of a partly filled entry): confirmed or forgotten by
            # a later read. Meanwhile an exit sells no more than the live quantity at send time.
            log.info(
                "protection %s: its position shows %d of %d; resized if a read %.0f s on agrees",
                p.id,
                share,
                protected,
                self.flat_confirm_seconds,
            )
            report.unconfirmed.append(p.id)
        else:
            p = self.store.update(
                p.id,
                kind="quantity_changed",
                expected=Status.OPEN,  # a crossing may have taken it since `live` was read
                message=f"position is {share}, was {protected}",
                filled_quantity=share,
            )
            report.resized.append(p.id)
        self.hooks.safety_check(p)

    def _flat(self, p: Protection, broker: Broker, report: ReconcileReport, *, held: int = 0) -> None:
        """Nothing of its position is left for it (read twice): closed by its broker-held stop, or outside
        the app; or, with ``held`` > 0, still held but all of it covered by older protections."""
        try:
            fired = self.hooks.safety_fired(p, broker)
        except BrokerError as exc:
            # Flat, but closed by whom? Asked again at the next reconcile; armed meanwhile (a crossing
            # finds the position flat and settles it the same way).
            log.info("protection %s: flat; its safety stop could not be read (%s)", p.id, exc)
            return
        self.hooks.disarm(p.id)
        if fired is not None:
            # The broker-held stop closed it (perhaps while TrailStop was away): no exit to send.
            close_by_safety_stop(self.store, p.id, fired)
            report.safety_closed.append(p.id)
        else:
            # "external" either way: it ended without an exit of its own and took nothing from the position.
            self.store.transition(p.id, Status.CLOSED, expected=Status.OPEN, reason="external")
            (report.covered_by_others if held > 0 else report.closed_externally).append(p.id)
        # A stop left at the broker for a flat position would open a new one: it goes.
        self.hooks.safety_release(p.id)

    def _adopt_unprotected(
        self,
        account_id: int,
        broker: Broker,
        rule: TrailRule,
        positions: list[Position],
        holdings: list[Holding],
        report: ReconcileReport,
        read_at: datetime,
        sent_at: float,
    ) -> None:
        protected = self.store.live(account_id)
        # A protection that ended after the positions were read (its exit filled meanwhile) leaves a
        # position that only looks open: adopting it would protect, and hold a stop for, a flat position.
        ended_here = {
            *report.closed_externally,
            *report.covered_by_others,
            *report.safety_closed,
            *report.ended,
        }
        just_ended = [p for p in self.store.ended_since(account_id, read_at) if p.id not in ended_here]
        holdings_too = account_id in self.auto_protect_holdings
        if holdings_too:
            for stock in delivery_stocks(positions, holdings, broker.capabilities.broker):
                self._adopt_delivery(
                    account_id, broker, rule, stock, holdings, protected, just_ended, report, sent_at
                )
        for pos in positions:
            if pos.quantity == 0 or pos.product is None or pos.side is None or pos.average_price <= 0:
                continue
            if is_delivery_sale(pos):
                continue  # shares sold out of holdings today: not a short, nothing to buy back
            if holdings_too and pos.product is Product.CNC:
                continue  # today's delivery buys were covered with the holdings of the same stock
            if any(
                p.side is pos.side
                and same_instrument(p, pos.instrument, pos.symbol, pos.exchange)
                and matching_position(p, [pos], broker.capabilities) is not None
                for p in just_ended
            ):
                log.info(
                    "auto-protect: %s %s just closed; looking again at the next reconcile",
                    pos.exchange,
                    pos.symbol,
                )
                continue
            covering = [
                p
                for p in protected
                if same_instrument(p, pos.instrument, pos.symbol, pos.exchange)
                and matching_position(p, [pos], broker.capabilities) is not None
            ]
            if covering:
                with self._isolated(covering[0], report):
                    self._cover_growth(covering, pos, report, sent_at)
                continue
            try:
                p = self._adopt(account_id, broker, rule, pos, "auto-protect")
            except Exception as exc:
                # One position that cannot be protected (a rule whose stop would be <= 0 at its price)
                # never stops the others.
                log.warning("auto-protect: %s %s not protected: %s", pos.exchange, pos.symbol, exc)
                continue
            log.info(
                "auto-protected %s %s x%d (%s)", pos.exchange, pos.symbol, abs(pos.quantity), rule.describe()
            )
            self.hooks.arm(p)
            report.adopted.append(p.id)
            protected.append(p)

    def _adopt(
        self, account_id: int, broker: Broker, rule: TrailRule, pos: Position | DeliveryStock, reason: str
    ) -> Protection:
        """A new OPEN protection of ``pos`` with the account's safety-stop defaults (not yet armed)."""
        return adopt_position(
            self.store,
            account_id=account_id,
            broker=broker.capabilities.broker,
            position=pos,
            rule=rule,
            tick_size=self.hooks.tick_size(account_id, pos),
            safety=self.hooks.safety_default(account_id),
            reason=reason,
        )

    def _adopt_delivery(
        self,
        account_id: int,
        broker: Broker,
        rule: TrailRule,
        stock: DeliveryStock,
        holdings: list[Holding],
        protected: list[Protection],
        just_ended: list[Protection],
        report: ReconcileReport,
        sent_at: float,
    ) -> None:
        """Auto-protect one stock's sellable delivery shares (holdings and today's buys) as one protection."""
        if any(covers_stock(p, stock, holdings) for p in just_ended):
            return  # its exit just filled: the holdings read before it are out of date
        covering = [p for p in protected if covers_stock(p, stock, holdings)]
        if covering:
            if len(covering) == 1:
                with self._isolated(covering[0], report):
                    self._cover_delivery_growth(covering[0], stock, report, sent_at)
            return
        try:
            reason = "auto-protect (holding)" if stock.is_holding else "auto-protect"
            p = self._adopt(account_id, broker, rule, stock, reason)
        except Exception as exc:
            # One stock that cannot be protected (a rule whose stop would be <= 0 at its price) never
            # stops the others.
            log.warning("auto-protect: %s %s not protected: %s", stock.exchange, stock.symbol, exc)
            return
        log.info(
            "auto-protected %s %s x%d delivery shares (%s)",
            stock.exchange,
            stock.symbol,
            stock.quantity,
            rule.describe(),
        )
        self.hooks.arm(p)
        report.adopted.append(p.id)
        protected.append(p)

    def _cover_delivery_growth(
        self, p: Protection, stock: DeliveryStock, report: ReconcileReport, read_at: float
    ) -> None:
        """Auto-protect covers every sellable share: a buy outside the app (or a buy-back) grows it, once
        confirmed (positions and holdings are two replies: one may trail a sale the other shows)."""
        protected = covered(p)
        if p.status is not Status.OPEN:
            return
        if stock.quantity <= protected:
            self.resizes.unchanged(p.id, Change.GROW)
            return
        if not self._growth_confirmed(p, stock.quantity, report, read_at):
            return
        p = self.store.update(
            p.id,
            kind="quantity_changed",
            expected=Status.OPEN,  # a crossing may have taken it since `live` was read
            message=f"delivery shares are {stock.quantity}, was {protected}",
            quantity=max(p.quantity, stock.quantity),
            filled_quantity=stock.quantity,
        )
        self.hooks.safety_check(p)
        report.resized.append(p.id)

    def _growth_confirmed(self, p: Protection, live: int, report: ReconcileReport, read_at: float) -> bool:
        """Whether a growth to ``live`` seen by the read sent at ``read_at`` is confirmed by an earlier one.

        A read that trails a sale shows more than is held: grown on it, the protection's broker-held stop
        would hold (and, fired, sell) shares that are not there. The extra quantity waits one confirming
        read (the report asks for it within ``flat_confirm_seconds``)."""
        if self.resizes.seen(p, Change.GROW, read_at):
            return True
        log.info(
            "protection %s: its position shows %d, more than its %d; grown if a read %.0f s on agrees",
            p.id,
            live,
            covered(p),
            self.flat_confirm_seconds,
        )
        report.unconfirmed.append(p.id)
        return False

    def _cover_growth(
        self, covering: list[Protection], pos: Position, report: ReconcileReport, read_at: float
    ) -> None:
        """Auto-protect covers the whole position: when it grew (the rest of a partly filled order, another
        buy outside the app), its protection grows with it, keeping its stop, once a second read confirms
        it. Without this the extra quantity would be left unprotected, and the exit would leave it open.
        """
        if len(covering) != 1:
            return
        p = covering[0]
        live = abs(pos.quantity)
        protected = covered(p)
        if p.status is not Status.OPEN or p.side is not pos.side:
            return
        if live <= protected:
            self.resizes.unchanged(p.id, Change.GROW)
            return
        if not self._growth_confirmed(p, live, report, read_at):
            return
        p = self.store.update(
            p.id,
            kind="quantity_changed",
            expected=Status.OPEN,  # a crossing may have taken it since `live` was read
            message=f"position is {live}, was {protected}",
            quantity=max(p.quantity, live),
            filled_quantity=live,
        )
        self.hooks.safety_check(p)  # a broker-held stop follows the quantity
        log.info(
            "auto-protect: %s %s grew to %d; protection %s covers it", pos.exchange, pos.symbol, live, p.id
        )
        report.resized.append(p.id)
