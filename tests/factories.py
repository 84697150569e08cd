"""What many tests build the same way: an INFY protection (stored or not), INFY orders and positions, a
stand-in broker that holds the position and fills its exit at once, the exit jobs on plain threads, and
an account logged in to the simulator. Defaults are the suite's usual case (a kite long of 3 INFY MIS at
1500.00 with a 2 % trail); a test names only what it needs different. The ``store`` fixture (a fresh
ProtectionStore) is in tests/conftest.py."""

from __future__ import annotations

from typing import Any

from trailstop_gui.models.domain import Product, Protection, Side, Status, TrailRule
from trailstop_gui.models.store import AccountRecord, ProtectionStore
from trailstop_gui.services.brokers.base import KITE_CAPABILITIES, Order, OrderRequest, OrderStatus, Position
from trailstop_gui.services.brokers.feed_loop import Backoff
from trailstop_gui.services.exit_jobs import ExitJobs, RetryPolicy, ThreadRunner
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.services.session import AccountSession, Endpoints
from trailstop_gui.simulator.runner import SimulatorHandle

INFY = 408065  # the Kite instrument token of NSE:INFY
INFY_QUOTE = "NSE:INFY"


def account_id(store: ProtectionStore, broker: str = "kite", name: str = "Zerodha", **kw: Any) -> int:
    """A new account's id."""
    return store.add_account(broker, name, **kw).id


def protection(
    store: ProtectionStore,
    account: int | None = None,
    *,
    quantity: int = 3,
    side: Side = Side.BUY,
    product: Product = Product.MIS,
    rule: TrailRule | None = None,
    entry_price: float | None = 1500.0,
    status: Status = Status.OPEN,
    symbol: str = "INFY",
    instrument: str | int = INFY,
    broker: str = "kite",
    **extra: Any,
) -> Protection:
    """A stored protection of INFY, OPEN and all of it filled (PENDING: nothing filled, no entry price);
    ``account`` None adds a kite account named Zerodha for it."""
    if account is None:
        account = account_id(store, broker)
    opened = status is not Status.PENDING
    return store.create_protection(
        account_id=account,
        broker=broker,
        instrument=instrument,
        symbol=symbol,
        exchange="NSE",
        side=side,
        product=product,
        quantity=quantity,
        filled_quantity=quantity if opened else 0,
        tick_size=0.05,
        rule=rule if rule is not None else TrailRule.percent(2.0),
        entry_price=entry_price if opened else None,
        status=status,
        **extra,
    )


def triggered(store: ProtectionStore, account: int | None = None, **kw: Any) -> Protection:
    """An OPEN protection (as ``protection`` makes it) whose stop fired: TRIGGERED, reason "stop"."""
    p = protection(store, account, **kw)
    return store.transition(p.id, Status.TRIGGERED, reason="stop")


def unsaved_protection(quantity: int = 3, **changes: Any) -> Protection:
    """An OPEN INFY long as the store would return it (id 1, stop 1470.00, peak 1500.00), never stored;
    ``changes`` set any other field."""
    fields: dict[str, Any] = dict(
        id=1,
        account_id=1,
        broker="kite",
        instrument=str(INFY),
        symbol="INFY",
        exchange="NSE",
        side=Side.BUY,
        product=Product.MIS,
        quantity=quantity,
        filled_quantity=quantity,
        entry_price=1500.0,
        tick_size=0.05,
        rule=TrailRule.percent(2.0),
        stop=1470.0,
        peak=1500.0,
        status=Status.OPEN,
        exit_tag="TS1",
    )
    fields.update(changes)
    return Protection(**fields)


def order(
    order_id: str = "X1",
    status: OrderStatus = OrderStatus.COMPLETE,
    *,
    quantity: int = 3,
    filled: int | None = None,
    **fields: Any,
) -> Order:
    """An INFY MIS sell of ``quantity``: all of it filled when COMPLETE, none otherwise, unless ``filled``
    says; any other field of Order can be given."""
    done = filled if filled is not None else (quantity if status is OrderStatus.COMPLETE else 0)
    values: dict[str, Any] = dict(
        order_id=order_id,
        status=status,
        raw_status=status.value,
        side=Side.SELL,
        order_type=None,
        product=Product.MIS,
        raw_product="MIS",
        symbol="INFY",
        exchange="NSE",
        instrument=INFY,
        quantity=quantity,
        filled_quantity=done,
        pending_quantity=quantity - done,
        average_price=0.0,
        price=0.0,
        trigger_price=0.0,
        tag=None,
        status_message=None,
        placed_at=None,
        updated_at=None,
    )
    values.update(fields)
    return Order(**values)


def position(quantity: int = 3, average_price: float = 1500.0, product: Product = Product.MIS) -> Position:
    """The net INFY position as the broker lists it (``quantity`` signed: negative is a short)."""
    return Position("INFY", "NSE", INFY, INFY_QUOTE, quantity, average_price, product, product.value)


class FakeBroker:
    """Holds 3 INFY MIS; its exit fills at once at 1460. ``place_errors`` are raised by the first sends,
    ``positions_error`` by every positions read."""

    capabilities = KITE_CAPABILITIES

    def __init__(self, place_errors: list[Exception] | None = None, positions_error: Exception | None = None):
        self.place_errors = place_errors or []
        self.positions_error = positions_error
        self.placed: list[OrderRequest] = []

    def positions(self) -> list[Position]:
        if self.positions_error is not None:
            raise self.positions_error
        return [position(3)]

    def holdings(self) -> list[Any]:
        return []

    def orders(self) -> list[Order]:
        return []

    def place_order(self, request: OrderRequest) -> str:
        if self.place_errors:
            raise self.place_errors.pop(0)
        self.placed.append(request)
        return f"X{len(self.placed)}"

    def order(self, order_id: str) -> Order:
        return order(order_id, OrderStatus.COMPLETE, quantity=3, average_price=1460.0)


class Events:
    """Records what exit jobs report, in order (the Qt adapter turns the same calls into signals)."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.seen.append((name, *args))

    def kinds(self) -> list[str]:
        return [e[0] for e in self.seen]


def exit_jobs(store: ProtectionStore, broker: object, **policy: Any) -> tuple[ExitJobs, Events, list[float]]:
    """ExitJobs on two plain threads, every account's broker ``broker``; what they report and the sleeps
    they ask for are recorded, not slept. ``policy`` adjusts a RetryPolicy that polls every 10 ms."""
    events, sleeps = Events(), []
    jobs = ExitJobs(
        store,
        lambda _account: broker,  # type: ignore[arg-type, return-value]
        events=events,
        runner=ThreadRunner(2),
        policy=RetryPolicy(poll_interval=0.01, **policy),
        sleep=sleeps.append,
    )
    return jobs, events, sleeps


def sim_account(
    store: ProtectionStore, sim: SimulatorHandle, broker: str = "kite", label: str = "", **fields: str
) -> AccountRecord:
    """A new account of ``store`` for the simulator's demo user of ``broker`` (kite or upstox), pointed at
    ``sim``; ``label`` defaults to the broker's own name."""
    section = sim.info[broker]
    kite = broker == "kite"
    return store.add_account(
        broker,
        label or ("Zerodha" if kite else "Upstox"),
        user_id=section["user_id"],
        api_key=section["api_key" if kite else "client_id"],
        redirect_url=section["redirect_url" if kite else "redirect_uri"],
        api_root=sim.url,
        **fields,
    )


def sim_session(
    store: ProtectionStore,
    sim: SimulatorHandle,
    broker: str = "kite",
    *,
    account: AccountRecord | None = None,
    label: str = "",
    login: bool = True,
    secrets: SecretStore | None = None,
    **options: Any,
) -> AccountSession:
    """An AccountSession on ``sim`` for ``account`` (a new ``sim_account`` when None), its API secret in
    ``secrets`` (a new SecretStore when None), logged in through the real login form unless ``login`` is
    False. ``options`` go to AccountSession (see ``quick_reconnects``)."""
    section = sim.info[broker]
    if account is None:
        account = sim_account(store, sim, broker, label)
    if secrets is None:
        secrets = SecretStore()
    secrets.set(account.id, "api_secret", section["api_secret" if broker == "kite" else "client_secret"])
    session = AccountSession(account, secrets, Endpoints.for_simulator(sim.info, broker), **options)
    if login:
        session.login_with_password(section["user_id"], section["password"])
    return session


def quick_reconnects(watchdog: float = 2.5) -> dict[str, Any]:
    """AccountSession options for tests: a silent feed is noticed in ``watchdog`` seconds and reconnected
    within half a second."""
    return {"watchdog": watchdog, "backoff": lambda: Backoff(initial=0.1, maximum=0.5)}
