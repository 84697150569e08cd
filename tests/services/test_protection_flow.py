"""Live protection end to end against the simulator: entry, trail, trigger, exactly one exit."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from tests.factories import quick_reconnects, sim_session
from tests.services.conftest import BROKERS as BROKERS  # re-exported: other modules import it from here
from tests.services.conftest import control
from trailstop_gui.models.domain import Product, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.adoption import adopt_position
from trailstop_gui.services.brokers.base import OrderRequest, OrderType, Position
from trailstop_gui.services.exit_executor import RetryPolicy
from trailstop_gui.services.notifier import AlertKind
from trailstop_gui.services.position_book import POSITIONS_LAG
from trailstop_gui.services.protection_service import BOOK_RECHECK_SECONDS, EntryRequest, ProtectionService
from trailstop_gui.services.reconciler import FLAT_CONFIRM_SECONDS
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.services.session import REQUEST_TIMEOUT
from trailstop_gui.simulator.runner import SimulatorHandle


def wait_until(predicate, timeout: float = 10.0, what: str = "condition", qtbot: QtBot | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if qtbot is not None:
            qtbot.wait(20)
        else:
            time.sleep(0.02)


# The app's waits after a flat read (read again 2 s on: RetryPolicy.flat_confirm and
# reconciler.FLAT_CONFIRM_SECONDS) and after a lost reply (the order looked for over RetryPolicy's 3 s
# lookup_window) at a quarter of their size: most tests only wait them out.
FLAT_CONFIRM = FLAT_CONFIRM_SECONDS / 4
RIG_POLICY = RetryPolicy(
    attempts=6,
    initial_delay=0.05,
    max_delay=0.2,
    poll_interval=0.05,
    lookup_window=RetryPolicy().lookup_window / 4,
    flat_confirm=FLAT_CONFIRM,
)
# A test whose simulator positions trail the fills by 1.5 s keeps the app's flat confirmation and half its
# look-up window: the second read must outwait that lag, and the lag must outlast the first read even on a
# loaded machine.
BOOK_LAG_POLICY = replace(RIG_POLICY, flat_confirm=FLAT_CONFIRM_SECONDS, lookup_window=1.5)
app_flat_confirm = pytest.mark.parametrize("rig_policy", [BOOK_LAG_POLICY], ids=["app-flat-confirm"])
# Such a test at half its size: the simulator's lag (and its slow or stalled replies) times HALF, with the
# flat confirmation and look-up window above at half their size too, each wait in its order.
HALF = 0.5
HALF_SCALE_POLICY = replace(
    BOOK_LAG_POLICY,
    flat_confirm=BOOK_LAG_POLICY.flat_confirm * HALF,
    lookup_window=BOOK_LAG_POLICY.lookup_window * HALF,
)
half_scale = pytest.mark.parametrize("rig_policy", [HALF_SCALE_POLICY], ids=["half-scale"])


def book_recheck(policy: RetryPolicy) -> float:
    """The book's re-read delay in the proportion to the positions lag that the app keeps (2 s of 5 s)."""
    return BOOK_RECHECK_SECONDS * policy.positions_lag / POSITIONS_LAG


class Rig:
    """A ProtectionService with one account logged in to the simulator."""

    def __init__(
        self,
        sim: SimulatorHandle,
        store: ProtectionStore,
        broker: str,
        qtbot: QtBot,
        policy: RetryPolicy | None = None,
        flat_confirm: float | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        """``flat_confirm``: the reconciler's (None: the policy's, as in the app)."""
        self.sim, self.store, self.broker, self.qtbot = sim, store, broker, qtbot
        self.secrets = SecretStore()
        self.session = sim_session(
            store,
            sim,
            broker,
            label=broker,
            secrets=self.secrets,
            request_timeout=request_timeout,
            **quick_reconnects(),
        )
        policy = policy or RIG_POLICY
        self.service = ProtectionService(
            store,
            retry_policy=policy,
            book_recheck_seconds=book_recheck(policy),
            flat_confirm_seconds=flat_confirm,
        )
        self.alerts: list[Any] = []
        self.service.notifier.alerted.connect(self.alerts.append)
        self.service.add_session(self.session)
        self.service.start()

    @property
    def order_path(self) -> str:
        """Where this broker's order placement is served, for path-scoped faults."""
        return "/orders" if self.broker == "kite" else "/v3/order/place"

    @property
    def account_id(self) -> int:
        return self.session.account_id

    def instrument(self, symbol: str) -> tuple[Any, str]:
        inst = next(i for i in control(self.sim, "instruments") if i["symbol"] == symbol)
        return (inst["kite_token"] if self.broker == "kite" else inst["upstox_key"]), inst["tradingsymbol"]

    def status(self, pid: int) -> Status:
        return self.store.get(pid).status

    def wait_status(self, pid: int, status: Status, timeout: float = 10.0) -> None:
        wait_until(
            lambda: self.status(pid) is status, timeout, f"protection {pid} to be {status}", self.qtbot
        )

    def sim_orders(self, tag: str | None = None) -> list[dict[str, Any]]:
        orders = control(self.sim, "orders")
        return [o for o in orders if tag is None or o.get("tag") == tag]

    def close(self) -> None:
        self.service.shutdown()


def enter(rig: Rig, side: Side, product: Product, rule: TrailRule, symbol: str = "NSE:INFY") -> int:
    instrument, tradingsymbol = rig.instrument(symbol)
    p = rig.service.place_entry(
        EntryRequest(
            account_id=rig.account_id,
            instrument=instrument,
            symbol=tradingsymbol,
            exchange="NSE",
            side=side,
            quantity=3,
            product=product,
            tick_size=0.05,
            rule=rule,
        )
    )
    rig.wait_status(p.id, Status.OPEN)
    return p.id


def protect_whole_again(rig: Rig, position: Position, rule: TrailRule) -> int:
    """A second protection of a position already protected whole, stored as auto-protect stores one
    (``adoption.adopt_position``) and armed as a start arms what it finds. The window's Protect refuses one
    (``ProtectionService.adopt``), but it still comes from a Protect that raced auto-protect and from a
    database an older version wrote: the exits' sharing of one position must hold for it (the chaos
    run's ``protect_twice`` writes the same)."""
    p = adopt_position(
        rig.store,
        account_id=rig.account_id,
        broker=rig.broker,
        position=position,
        rule=rule,
        tick_size=0.05,
        safety=rig.service.safety_defaults,
        reason="adopted",
    )
    assert rig.session.feed is not None
    rig.session.feed.arm([p])
    rig.service.safety.track(p)
    return p.id


@pytest.mark.parametrize(
    ("side", "product", "rule"),
    [
        (Side.BUY, Product.MIS, TrailRule.percent(2.0)),
        (Side.SELL, Product.MIS, TrailRule.points(20.0)),
        (Side.BUY, Product.CNC, TrailRule.points(20.0)),
        # A CNC SELL is a sale out of holdings whose exit would buy them back: refused, see
        # tests/services/test_holdings_flow.py::test_a_delivery_sell_entry_is_refused_and_nothing_is_sent.
    ],
)
def test_place_fill_trail_trigger_exit(rig: Rig, side: Side, product: Product, rule: TrailRule) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    pid = enter(rig, side, product, rule)
    p = rig.store.get(pid)
    entry = p.entry_price
    assert entry is not None and p.filled_quantity == 3
    long = side is Side.BUY
    favourable = 1560.0 if long else 1440.0
    rig.sim.set_price("NSE:INFY", favourable, bid=favourable - 0.05, ask=favourable + 0.05)
    trail_price = (favourable - 0.05 if long else favourable + 0.05) if product is Product.MIS else favourable
    expected = rule.distance(trail_price)
    wait_until(
        lambda: (
            (rig.store.get(pid).stop or 0)
            == pytest.approx(trail_price - expected if long else trail_price + expected, abs=0.051)
        ),
        what="the stop to trail",
        qtbot=rig.qtbot,
    )
    stop = rig.store.get(pid).stop
    assert stop is not None
    through = stop - 1 if long else stop + 1
    rig.sim.set_price("NSE:INFY", through, bid=through - 0.05, ask=through + 0.05)
    rig.wait_status(pid, Status.CLOSED)
    done = rig.store.get(pid)
    exits = rig.sim_orders(done.exit_tag)
    assert len(exits) == 1
    assert exits[0]["transaction_type"] == side.exit_side.value and exits[0]["quantity"] == 3
    assert exits[0]["status"] == "COMPLETE"
    if rig.broker == "kite":
        # A MARKET exit with automatic market protection, which Kite reports as a protected LIMIT.
        assert exits[0]["market_protection"] == -1
    assert done.exit_price == pytest.approx(exits[0]["average_price"])
    # Alerts reach the GUI thread through queued signals, just after the state is stored.
    rig.qtbot.waitUntil(
        lambda: {AlertKind.STOP_TRIGGERED, AlertKind.EXIT_FILLED} <= {a.kind for a in rig.alerts},
        timeout=3000,
    )
    filled = next(a for a in rig.alerts if a.kind is AlertKind.EXIT_FILLED)
    assert done.exit_price is not None
    pnl = (done.exit_price - entry if long else entry - done.exit_price) * 3
    assert f"realised P&L {'+' if pnl >= 0 else '-'}₹{abs(pnl):,.2f} on 3" in filled.message
    journal = [(e.old, e.new) for e in rig.store.events(protection_id=pid, kinds=["transition"])]
    assert journal == [
        ("PENDING", "OPEN"),
        ("OPEN", "TRIGGERED"),
        ("TRIGGERED", "EXITING"),
        ("EXITING", "CLOSED"),
    ]


def test_rejected_exit_fails_alerts_and_retry_works(rig: Rig) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    pid = enter(rig, Side.BUY, Product.CNC, TrailRule.percent(2.0))
    control(rig.sim, "fault", {"fault": "reject_orders", "count": 1, "reason": "RMS: blocked for the test"})
    rig.sim.set_price("NSE:INFY", 1400.0)
    rig.wait_status(pid, Status.EXIT_FAILED)
    rig.qtbot.waitUntil(lambda: any(a.kind is AlertKind.EXIT_FAILED for a in rig.alerts), timeout=3000)
    rig.service.retry_exit(pid)
    rig.wait_status(pid, Status.CLOSED)
    tag = rig.store.get(pid).exit_tag
    statuses = sorted(o["status"] for o in rig.sim_orders(tag))
    assert statuses == ["COMPLETE", "REJECTED"]


@pytest.mark.parametrize("status", [429, 503])
def test_exit_retried_through_errors_exactly_once(rig: Rig, status: int) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0)
    pid = enter(rig, Side.BUY, Product.CNC, TrailRule.percent(2.0))
    control(
        rig.sim,
        "fault",
        {"fault": "http_error", "status": status, "count": 2, "path": rig.order_path, "method": "POST"},
    )
    rig.sim.set_price("NSE:INFY", 1400.0)
    rig.wait_status(pid, Status.CLOSED)
    assert len(rig.sim_orders(rig.store.get(pid).exit_tag)) == 1


@pytest.mark.parametrize("retry_after", ["3600", "inf"])
def test_an_absurd_retry_after_does_not_hold_the_exit(rig: Rig, retry_after: str) -> None:
    # A Retry-After of 3600 once held an exit for an hour and "inf" made time.sleep raise.
    rig.sim.set_price("NSE:INFY", 1500.0)
    pid = enter(rig, Side.BUY, Product.CNC, TrailRule.percent(2.0))
    control(
        rig.sim,
        "fault",
        {
            "fault": "http_error",
            "status": 429,
            "count": 2,
            "path": rig.order_path,
            "method": "POST",
            "retry_after": retry_after,
        },
    )
    rig.sim.set_price("NSE:INFY", 1400.0)
    rig.wait_status(pid, Status.CLOSED, timeout=8)
    assert len(rig.sim_orders(rig.store.get(pid).exit_tag)) == 1


@pytest.mark.parametrize("rig_request_timeout", [REQUEST_TIMEOUT / 4], ids=["timeout-1.75s"])
def test_exit_that_timed_out_but_was_placed_is_not_sent_twice(rig: Rig) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0)
    pid = enter(rig, Side.BUY, Product.CNC, TrailRule.percent(2.0))
    # The order is carried out, then the answer comes too late: the client times out (7 s in the app, a
    # quarter here) and must find the order by its tag instead of sending another.
    control(
        rig.sim,
        "fault",
        {"fault": "slow", "seconds": 8 / 4, "count": 1, "path": rig.order_path, "method": "POST"},
    )
    rig.sim.set_price("NSE:INFY", 1400.0)
    rig.wait_status(pid, Status.CLOSED, timeout=20)
    assert len(rig.sim_orders(rig.store.get(pid).exit_tag)) == 1


def test_position_closed_outside_the_app(rig: Rig) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0)
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    # The trader sells the position on the broker's own site.
    p = rig.store.get(pid)
    rig.session.broker.place_order(
        OrderRequest(
            symbol=p.symbol,
            exchange="NSE",
            instrument=p.engine_instrument,
            side=Side.SELL,
            quantity=3,
            product=Product.MIS,
            order_type=OrderType.MARKET,
        )
    )
    rig.service.reconcile(rig.account_id)
    rig.wait_status(pid, Status.CLOSED)
    assert rig.store.get(pid).reason == "external"
    assert rig.sim_orders(p.exit_tag) == []


def test_token_expires_mid_session_then_new_login_resumes(rig: Rig) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0)
    pid = enter(rig, Side.BUY, Product.CNC, TrailRule.percent(2.0))
    control(rig.sim, "fault", {"fault": "expire_tokens", "broker": rig.broker})
    wait_until(lambda: rig.session.state.value == "login needed", what="login needed", qtbot=rig.qtbot)
    rig.qtbot.waitUntil(lambda: any(a.kind is AlertKind.LOGIN_NEEDED for a in rig.alerts), timeout=3000)
    assert rig.status(pid) is Status.OPEN  # kept, waiting for the new login
    assert not rig.session.has_token()
    # While logged out the price falls through the stop: nothing can be sent, nothing is lost.
    rig.sim.set_price("NSE:INFY", 1450.0)
    section = rig.sim.info[rig.broker]
    rig.session.login_with_password(section["user_id"], section["password"])
    # The feed is rebuilt with the new token; its snapshot tick fires the stop at once.
    rig.wait_status(pid, Status.CLOSED, timeout=15)
    assert len(rig.sim_orders(rig.store.get(pid).exit_tag)) == 1


def test_pause_resume_modify_and_remove(rig: Rig) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0)
    pid = enter(rig, Side.BUY, Product.CNC, TrailRule.percent(2.0))
    feed = rig.session.feed
    assert feed is not None
    wait_until(lambda: feed.engine.is_armed(str(pid)), what="armed", qtbot=rig.qtbot)
    rig.service.pause(pid)
    wait_until(lambda: not feed.engine.is_armed(str(pid)), what="disarmed", qtbot=rig.qtbot)
    rig.sim.set_price("NSE:INFY", 1400.0)  # through the stop while paused: no exit
    # No sleep to show that nothing happened: a second tick behind it, and once the feed has seen that one
    # the first was handled (one feed thread, ticks in order; a trigger commits on that thread).
    rig.sim.set_price("NSE:INFY", 1399.0)
    instrument = rig.store.get(pid).engine_instrument
    wait_until(
        lambda: getattr(feed.latest_quote(instrument), "ltp", None) == 1399.0,
        what="the tick behind the one through the stop",
        qtbot=rig.qtbot,
    )
    assert rig.status(pid) is Status.OPEN and rig.sim_orders(rig.store.get(pid).exit_tag) == []
    rig.sim.set_price("NSE:INFY", 1500.0)
    rig.service.resume(pid)
    wait_until(lambda: feed.engine.is_armed(str(pid)), what="re-armed", qtbot=rig.qtbot)
    before = rig.store.get(pid).stop
    rig.service.modify_rule(pid, TrailRule.points(5.0))
    wait_until(lambda: feed.engine.stop(str(pid)) > (before or 0), what="a tighter stop", qtbot=rig.qtbot)
    assert rig.store.get(pid).rule == TrailRule.points(5.0)
    rig.service.remove(pid)
    assert rig.status(pid) is Status.REMOVED
    wait_until(lambda: not feed.engine.is_armed(str(pid)), what="removed from the engine", qtbot=rig.qtbot)


def test_exit_now_and_exit_all(rig: Rig) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0)
    rig.sim.set_price("NSE:TCS", 3500.0)
    first = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    second = enter(rig, Side.SELL, Product.MIS, TrailRule.percent(2.0), symbol="NSE:TCS")
    third = enter(rig, Side.BUY, Product.CNC, TrailRule.percent(2.0))
    rig.service.exit_now(first)
    rig.wait_status(first, Status.CLOSED)
    assert rig.store.get(first).reason == "manual"
    assert sorted(rig.service.exit_all()) == [second, third]
    rig.wait_status(second, Status.CLOSED)
    rig.wait_status(third, Status.CLOSED)
    for pid in (first, second, third):
        assert len(rig.sim_orders(rig.store.get(pid).exit_tag)) == 1


def test_exit_never_flips_a_shrunk_position(rig: Rig) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0)
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    p = rig.store.get(pid)
    # The trader sells 2 of the 3 elsewhere; the exit must sell only the 1 left.
    outside = rig.session.broker.place_order(
        OrderRequest(
            symbol=p.symbol,
            exchange="NSE",
            instrument=p.engine_instrument,
            side=Side.SELL,
            quantity=2,
            product=Product.MIS,
        )
    )
    wait_until(lambda: rig.session.broker.order(outside).is_final, what="the outside sale to fill")
    rig.sim.set_price("NSE:INFY", 1400.0)
    rig.wait_status(pid, Status.CLOSED)
    exits = rig.sim_orders(p.exit_tag)
    assert [e["quantity"] for e in exits] == [1]


def test_a_paused_protection_keeps_its_live_price(rig: Rig) -> None:
    rig.sim.set_price("NSE:INFY", 1500.0)
    pid = enter(rig, Side.BUY, Product.CNC, TrailRule.percent(2.0))
    feed = rig.session.feed
    assert feed is not None
    wait_until(lambda: feed.engine.is_armed(str(pid)), what="armed", qtbot=rig.qtbot)
    prices: list[float] = []
    rig.service.snapshot_ready.connect(lambda snap: prices.extend(q.ltp for q in snap["quotes"].values()))
    rig.service.pause(pid)
    wait_until(lambda: not feed.engine.is_armed(str(pid)), what="disarmed", qtbot=rig.qtbot)
    rig.sim.set_price("NSE:INFY", 1400.0)  # through the stop while paused: shown, but no exit
    wait_until(lambda: 1400.0 in prices, what="the paused row's price", qtbot=rig.qtbot)
    assert rig.status(pid) is Status.OPEN and rig.sim_orders(rig.store.get(pid).exit_tag) == []


def test_the_entry_order_is_journalled_once(rig: Rig) -> None:
    # The placing reply and the pushed order update both name the entry's order: one "Entry placed".
    rig.sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    pid = enter(rig, Side.BUY, Product.MIS, TrailRule.percent(2.0))
    order_id = rig.store.get(pid).entry_order_id
    rig.service.reconcile_all()
    placed = [e.new for e in rig.store.events(protection_id=pid, kinds=["entry_placed"])]
    assert placed == [f"entry_order_id={order_id}"]
