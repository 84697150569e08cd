"""What the Kite and Upstox adapters share: the SDK call wrapper, pacing, the login exchange, order
shaping and the order route.

``KiteBroker`` and ``UpstoxBroker`` subclass :class:`RestAdapter` and fill in how their SDK is called
(``_send``), what its reply holds (``_unwrap``) and how its exceptions map (``map_exception``). What
differs between the brokers stays in their modules; what is the same lives here once. The readers of
the order, position and holding rows both brokers send are in ``reply_rows.py``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from trailstop_gui.models.domain import OrderType
from trailstop_gui.services.brokers.base import (
    ORDER_WINDOW_MARGIN,
    Capabilities,
    Gtt,
    GttNotFound,
    Order,
    OrderRequest,
    SessionInfo,
    convert_all,
    latest_with_tag,
    list_reply,
    opt_str,
)
from trailstop_gui.services.brokers.errors import (
    BrokerError,
    BrokerInputError,
    RateLimitedError,
    UnregisteredIPError,
    login_error,
)
from trailstop_gui.services.brokers.order_route import (
    PROBE_ORDER_ID,
    OrderRoute,
    RouteCheck,
    probe_order_route,
)
from trailstop_gui.services.brokers.rate_limit import RateLimiter

__all__ = ["ExceptionMapper", "OrderChange", "RestAdapter", "RouteObserver"]

T = TypeVar("T")

# Told what every order call found about the route, on the calling thread: the refusal of the IP, or None
# when the broker accepted the call. The route monitor shows it (a route that broke since its check).
RouteObserver = Callable[[UnregisteredIPError | None], None]


@dataclass(frozen=True, slots=True)
class OrderChange:
    """What a ``modify_order`` call changes; None leaves a field as the order has it."""

    quantity: int | None = None
    price: float | None = None
    trigger_price: float | None = None
    order_type: OrderType | None = None


class ExceptionMapper(Protocol):
    """``errors.map_kite_exception`` or ``errors.map_upstox_exception``."""

    def __call__(
        self, exc: BaseException, *, order_call: bool = True, secrets: Iterable[str | None] = ()
    ) -> BrokerError: ...


class RestAdapter:
    """The shared half of a REST broker adapter. Safe to call from several threads.

    Subclasses set the class attributes, pass their SDK's ``map_exception`` and implement ``_send``,
    ``_unwrap``, ``_access_token``, ``_modify``, ``cancel_order``, ``orders`` and ``set_access_token``.
    """

    name: ClassVar[str]  # "kite", "upstox": the first word of every message and log line
    display_name: ClassVar[str]  # "Zerodha", "Upstox": what the trader reads
    _capabilities: ClassVar[Capabilities]

    def __init__(
        self,
        *,
        limiter: RateLimiter | None,
        rate_limit_wait: float | None,
        market_protection: float | None,
        map_exception: ExceptionMapper,
    ) -> None:
        self._map_exception = map_exception
        self._log = logging.getLogger(type(self).__module__)
        # The broker's order limits (with the arrival margin), one slot per window kept for exits.
        self._limiter = (
            limiter if limiter is not None else self._capabilities.make_limiter(margin=ORDER_WINDOW_MARGIN)
        )
        self._rate_limit_wait = rate_limit_wait
        self._market_protection = market_protection
        self._route = OrderRoute()
        self._route_password: str | None = None
        self.order_route_observer: RouteObserver | None = None
        self._probing = threading.local()  # the route's own check reports its answer itself

    # ------------------------------------------------------------------------- what subclasses fill in

    def _send(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call the SDK function; returns its raw reply."""
        raise NotImplementedError

    def _unwrap(self, reply: Any, what: str, order_call: bool) -> Any:
        """The payload of a raw reply (the same object when the SDK already unwrapped it)."""
        raise NotImplementedError

    def _access_token(self) -> str | None:
        raise NotImplementedError

    def _modify(self, order_id: str, change: OrderChange, urgent: bool) -> str:
        raise NotImplementedError

    def cancel_order(self, order_id: str, *, urgent: bool = False) -> str:
        raise NotImplementedError

    def orders(self) -> list[Order]:
        raise NotImplementedError

    def set_access_token(self, access_token: str | None) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------------- session

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def _exchange_login(
        self,
        send: Callable[[], Any],
        read: Callable[[Any], Mapping[str, Any]],
        secrets: tuple[str, ...],
    ) -> SessionInfo:
        """Trade a login redirect's token or code (``send``) for an access token, and start using it.

        ``read`` turns the raw reply into its data; ``secrets`` (the code, the API secret) are masked.
        """
        try:
            raw = send()
        except Exception as exc:
            error = login_error(self._map_exception(exc, order_call=False, secrets=secrets))
            self._log.warning("%s login failed: %s", self.name, error)
            # No chaining: the SDK's exception may carry the request token, the code or the checksum.
            raise error from None
        data = read(raw)
        token = data.get("access_token")
        if not token:
            raise BrokerError(f"{self.name} login: the reply carried no access token")
        self.set_access_token(str(token))
        self._log.info("%s session started for %s", self.name, data.get("user_id"))
        return SessionInfo(
            access_token=str(token),
            user_id=str(data.get("user_id") or ""),
            user_name=str(data.get("user_name") or ""),
            broker=self.name,
            email=opt_str(data.get("email")),
        )

    # ------------------------------------------------------------------------- order route

    @property
    def order_route(self) -> OrderRoute:
        return self._route

    def check_order_route(self) -> RouteCheck:
        """A harmless order call (cancel an order that cannot exist) through the route, and its answer."""
        self._probing.active = True
        try:
            return probe_order_route(
                lambda: self.cancel_order(PROBE_ORDER_ID), self.display_name, self._route
            )
        finally:
            self._probing.active = False

    # ------------------------------------------------------------------------- orders

    def _order_fields(self, request: OrderRequest) -> dict[str, Any]:
        """The fields both brokers spell alike: side, quantity, product, type, validity, prices, tag.

        A price or trigger the order type does not take is left out (Upstox fills in its zeros).
        """
        if request.tag is not None and not self._capabilities.is_valid_tag(request.tag):
            raise BrokerInputError(f"{self.name} tag must be 1-20 letters and digits, got {request.tag!r}")
        fields: dict[str, Any] = {
            "transaction_type": request.side.value,
            "quantity": request.quantity,
            "product": self._capabilities.broker_product(request.product),
            "order_type": request.order_type.value,
            "validity": request.validity.value,
        }
        if request.order_type.needs_price:
            fields["price"] = request.price
        if request.order_type.needs_trigger:
            fields["trigger_price"] = request.trigger_price
        if request.tag:
            fields["tag"] = request.tag
        return fields

    def _market_protection_field(self, order_type: OrderType | None) -> dict[str, Any]:
        """``market_protection`` for an order that fills at any price (MARKET, SL-M), when it is set."""
        if order_type is not None and order_type.is_market and self._market_protection is not None:
            return {"market_protection": self._market_protection}
        return {}

    def modify_order(
        self,
        order_id: str,
        *,
        quantity: int | None = None,
        price: float | None = None,
        trigger_price: float | None = None,
        order_type: OrderType | None = None,
        urgent: bool = False,
    ) -> str:
        """Change an open order; only the given fields change. Returns the order id."""
        new_type = None if order_type is None else OrderType.parse(order_type)
        return self._modify(order_id, OrderChange(quantity, price, trigger_price, new_type), urgent)

    def find_order_by_tag(self, tag: str) -> Order | None:
        return latest_with_tag(self.orders(), tag)

    def _log_placed(self, what: str, ids: str, request: OrderRequest, where: str, extra: str = "") -> None:
        self._log.info(
            "%s %s %s: %s %s %s x%d%s tag=%s",
            self.name,
            what,
            ids,
            request.order_type.value,
            request.side.value,
            where,
            request.quantity,
            extra,
            request.tag,
        )

    # ------------------------------------------------------------------------- reading replies

    def _read_rows(self, what: str, reply: object, convert: Callable[[Mapping[str, Any]], T]) -> list[T]:
        """A reply that must be a list of rows, every row converted (see ``list_reply``)."""
        label = f"{self.name} {what}"
        return convert_all(convert, list_reply(reply, label), label)

    def _read_gtt(self, gtt_id: str, fetch: Callable[[], list[Gtt]]) -> Gtt:
        """The GTT ``fetch`` finds; GttNotFound when it finds none or the broker says the id is unknown."""
        try:
            found = fetch()
        except BrokerInputError as exc:
            raise GttNotFound(f"{self.name}: no GTT {gtt_id} ({exc.message})", status=exc.status) from exc
        if not found:
            raise GttNotFound(f"{self.name}: no GTT {gtt_id}")
        return found[0]

    # ------------------------------------------------------------------------- plumbing

    def _pace(self, urgent: bool) -> None:
        if not self._limiter.acquire(self._rate_limit_wait, priority=urgent):
            raise RateLimitedError(f"{self.name}: client-side order rate limit reached", status=None)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, order_call: bool, **kwargs: Any) -> Any:
        """Call the SDK and return the reply's payload; every failure leaves as a ``BrokerError``."""
        try:
            reply = self._send(fn, args, kwargs)
        except Exception as exc:
            error = self._call_error(exc, what, order_call)
            self._log.debug("%s %s failed: %s: %s", self.name, what, type(error).__name__, error)
            if order_call and isinstance(error, UnregisteredIPError):
                self._route_answered(error)
            raise error from exc
        payload = self._unwrap(reply, what, order_call)
        if order_call:
            self._route_answered(None)
        return payload

    def _route_answered(self, refusal: UnregisteredIPError | None) -> None:
        """Tell the observer what an order call found: the IP refused, or the call accepted."""
        observer = self.order_route_observer
        if observer is None or getattr(self._probing, "active", False):
            return
        try:
            observer(refusal)
        except Exception:  # the order's own outcome matters more than the report of its route
            self._log.exception("%s: reporting the order route's answer failed", self.name)

    def _secrets(self) -> tuple[str | None, ...]:
        """What must never appear in a message: the access token, the route's password."""
        return (self._access_token(), self._route_password)

    def _call_error(self, exc: Exception, what: str, order_call: bool) -> BrokerError:
        return self._map_exception(exc, order_call=order_call, secrets=self._secrets())
