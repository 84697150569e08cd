"""Kite Connect REST through the official ``kiteconnect`` client, behind the ``Broker`` protocol.

The client's root can point anywhere (the simulator in tests and demo mode). MARKET and SL-M orders
carry ``market_protection``: Kite refuses API market orders without it. Every SDK or transport
exception leaves this module as a ``BrokerError`` (see errors.py); tokens never reach a message or a log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any

import requests
from kiteconnect import KiteConnect

from trailstop_gui.models.domain import Side
from trailstop_gui.services.brokers.base import (
    KITE_CAPABILITIES,
    ORDER_WINDOW_MARGIN,
    Capabilities,
    Gtt,
    GttNotFound,
    GttRequest,
    GttStatus,
    Holding,
    Instrument,
    Order,
    OrderRequest,
    OrderType,
    Position,
    Profile,
    SessionInfo,
    as_float,
    as_int,
    convert_all,
    latest_with_tag,
    list_reply,
    malformed_reply,
    normalize_order_status,
    opt_float,
    opt_str,
    order_type_or_none,
    parse_ist,
    product_or_none,
    profile_from_reply,
    required_int,
    required_text,
    rows,
)
from trailstop_gui.services.brokers.errors import (
    AmbiguousError,
    BrokerError,
    BrokerInputError,
    RateLimitedError,
    login_error,
    map_kite_exception,
)
from trailstop_gui.services.brokers.order_route import (
    PROBE_ORDER_ID,
    OrderRoute,
    RouteCheck,
    probe_order_route,
)
from trailstop_gui.services.brokers.rate_limit import RateLimiter

__all__ = ["MARKET_PROTECTION_AUTO", "ORDER_WINDOW_MARGIN", "KiteBroker", "default_order_limiter"]

log = logging.getLogger(__name__)

MARKET_PROTECTION_AUTO = -1
"""Kite picks the protection band itself."""


def default_order_limiter() -> RateLimiter:
    """Kite's order limits (with the arrival margin), one slot per window kept for exits."""
    return KITE_CAPABILITIES.make_limiter(margin=ORDER_WINDOW_MARGIN)


class KiteBroker:
    """One Kite Connect account. Safe to call from several threads."""

    def __init__(
        self,
        api_key: str,
        access_token: str | None = None,
        root: str | None = None,
        login_uri: str | None = None,
        timeout: float = 7.0,
        limiter: RateLimiter | None = None,
        *,
        market_protection: float = MARKET_PROTECTION_AUTO,
        variety: str = "regular",
        rate_limit_wait: float | None = 30.0,
        order_route: OrderRoute | None = None,
        route_password: str | None = None,
    ) -> None:
        """``root``: the REST root (default api.kite.trade); ``login_uri``: the login page.

        ``order_route``: how order calls (place, modify, cancel, GTT) reach Kite; everything else is direct.

        ``limiter`` paces order calls (default: :func:`default_order_limiter`);
        ``rate_limit_wait`` is how long an order call may wait for it before RateLimitedError.
        ``market_protection``: -1 (automatic) or a percentage in (0, 100].
        """
        market_protection = _kite_market_protection(market_protection)
        self._kite: Any = KiteConnect(api_key, access_token=access_token, root=root, timeout=timeout)
        if login_uri:
            # The constructor has no parameter for it; login_url() reads this attribute.
            self._kite._default_login_uri = login_uri
        self._kite.reqsession.hooks["response"].append(_screen_response)
        self._root, self._timeout = root, timeout
        self._route = OrderRoute()
        self._route_password: str | None = None
        self._orders: Any = self._kite
        self.set_order_route(order_route or OrderRoute(), route_password)
        self._limiter = limiter if limiter is not None else default_order_limiter()
        self._market_protection = market_protection
        self._variety = variety
        self._rate_limit_wait = rate_limit_wait

    def set_market_protection(self, market_protection: float) -> None:
        """What MARKET and SL-M orders carry from now on (the trader's setting): -1 or a percentage."""
        self._market_protection = _kite_market_protection(market_protection)

    # ------------------------------------------------------------------------- session

    @property
    def capabilities(self) -> Capabilities:
        return KITE_CAPABILITIES

    @property
    def api_key(self) -> str:
        return str(self._kite.api_key)

    def login_url(self) -> str:
        """The page where the user logs in; it redirects to the app with a request_token."""
        return str(self._kite.login_url())

    def exchange_token(self, request_token: str, api_secret: str) -> SessionInfo:
        """Trade the request_token from the login redirect for an access token, and start using it."""
        try:
            data = self._kite.generate_session(request_token, api_secret=api_secret)
        except Exception as exc:
            error = login_error(
                map_kite_exception(exc, order_call=False, secrets=(request_token, api_secret))
            )
            log.warning("kite login failed: %s", error)
            # No chaining: the SDK's exception may carry the request token or the checksum.
            raise error from None
        if not isinstance(data, Mapping) or not data.get("access_token"):
            raise BrokerError("kite login: the reply carried no access token")
        # The SDK set it on the reads' client; the order route's client needs it too.
        self.set_access_token(str(data["access_token"]))
        log.info("kite session started for %s", data.get("user_id"))
        return SessionInfo(
            access_token=str(data["access_token"]),
            user_id=str(data.get("user_id") or ""),
            user_name=str(data.get("user_name") or ""),
            broker="kite",
            email=opt_str(data.get("email")),
        )

    def set_access_token(self, access_token: str | None) -> None:
        self._kite.set_access_token(access_token)
        if self._orders is not self._kite:
            self._orders.set_access_token(access_token)

    # ------------------------------------------------------------------------- order route

    @property
    def order_route(self) -> OrderRoute:
        return self._route

    def set_order_route(self, route: OrderRoute, password: str | None = None) -> None:
        """Send order calls through ``route`` from now on. A client of its own carries the proxy (the
        SDK's ``proxies`` applies to every call of a client), so reads and login stay direct."""
        if route.is_direct:
            orders: Any = self._kite
        else:
            orders = KiteConnect(
                self._kite.api_key,
                access_token=self._kite.access_token,
                root=self._root,
                timeout=self._timeout,
                proxies=route.requests_proxies(password),
            )
            orders.reqsession.hooks["response"].append(_screen_response)
        self._orders, self._route, self._route_password = orders, route, password

    def check_order_route(self) -> RouteCheck:
        """A harmless order call (cancel an order that cannot exist) through the route, and its answer."""
        return probe_order_route(lambda: self.cancel_order(PROBE_ORDER_ID), "Zerodha", self._route)

    # ------------------------------------------------------------------------- orders

    def _order_params(self, request: OrderRequest) -> dict[str, Any]:
        """The place_order fields of one request (the plain and the auto-sliced call take the same)."""
        if not request.symbol or not request.exchange:
            raise BrokerInputError("kite orders need the trading symbol and the exchange")
        if request.tag is not None and not KITE_CAPABILITIES.is_valid_tag(request.tag):
            raise BrokerInputError(f"kite tag must be 1-20 letters and digits, got {request.tag!r}")
        params: dict[str, Any] = {
            "variety": self._variety,
            "exchange": request.exchange,
            "tradingsymbol": request.symbol,
            "transaction_type": request.side.value,
            "quantity": request.quantity,
            "product": KITE_CAPABILITIES.broker_product(request.product),
            "order_type": request.order_type.value,
            "validity": request.validity.value,
        }
        if request.order_type.needs_price:
            params["price"] = request.price
        if request.order_type.needs_trigger:
            params["trigger_price"] = request.trigger_price
        if request.order_type.is_market:
            params["market_protection"] = self._market_protection
        if request.tag:
            params["tag"] = request.tag
        return params

    def place_order(self, request: OrderRequest) -> str:
        params = self._order_params(request)
        self._pace(request.urgent)
        order_id = str(self._call("place_order", self._orders.place_order, order_call=True, **params))
        log.info(
            "kite order %s: %s %s %s:%s x%d tag=%s",
            order_id,
            request.order_type.value,
            request.side.value,
            request.exchange,
            request.symbol,
            request.quantity,
            request.tag,
        )
        return order_id

    def place_sliced_order(self, request: OrderRequest) -> list[str]:
        """An order above the freeze quantity, sliced by Kite (``place_autoslice_order``, kiteconnect 5.2).

        The SDK returns the whole reply: the parent ``order_id`` and ``children``, each a placed order
        (``order_id``) or an ``error`` payload (kiteconnect/connect.py, place_autoslice_order). Kite refuses
        a quantity that needs no slicing, so this is for orders its freeze check refused.
        """
        params = self._order_params(request)
        self._pace(request.urgent)
        place = self._orders.place_autoslice_order
        reply = self._call("place_autoslice_order", place, order_call=True, **params)
        ids: list[str] = []
        errors: list[str] = []
        children = reply.get("children") if isinstance(reply, Mapping) else None
        for child in children if isinstance(children, list) else []:
            if isinstance(child, Mapping) and child.get("order_id"):
                ids.append(str(child["order_id"]))
            elif isinstance(child, Mapping) and child.get("error") is not None:
                errors.append(str(child["error"]))
        parent = reply.get("order_id") if isinstance(reply, Mapping) else None
        if not ids and parent:
            ids.append(str(parent))
        if errors:
            log.warning("kite autoslice %s: %d slice(s) refused: %s", parent, len(errors), "; ".join(errors))
        if not ids:
            raise AmbiguousError("kite place_autoslice_order: the reply named no order")
        log.info(
            "kite sliced order %s: %s %s %s:%s x%d in %d slices tag=%s",
            parent,
            request.order_type.value,
            request.side.value,
            request.exchange,
            request.symbol,
            request.quantity,
            len(ids),
            request.tag,
        )
        return ids

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
        params: dict[str, Any] = {
            "quantity": quantity,
            "price": price,
            "trigger_price": trigger_price,
            "order_type": None if order_type is None else OrderType.parse(order_type).value,
        }
        if order_type is not None and OrderType.parse(order_type).is_market:
            # Turning an order into a market one needs protection, as placing one does.
            params["market_protection"] = self._market_protection
        params = {key: value for key, value in params.items() if value is not None}
        self._pace(urgent)
        result = self._call(
            "modify_order", self._orders.modify_order, self._variety, order_id, order_call=True, **params
        )
        return str(result)

    def cancel_order(self, order_id: str, *, urgent: bool = False) -> str:
        self._pace(urgent)
        return str(
            self._call("cancel_order", self._orders.cancel_order, self._variety, order_id, order_call=True)
        )

    def order(self, order_id: str) -> Order:
        history = self.order_history(order_id)
        if not history:
            raise BrokerInputError(f"kite: no order {order_id}")
        return history[-1]

    def order_history(self, order_id: str) -> list[Order]:
        reply = self._call("order_history", self._kite.order_history, order_id, order_call=False)
        return convert_all(order_from_kite, list_reply(reply, "kite order_history"), "kite order_history")

    def orders(self) -> list[Order]:
        reply = self._call("orders", self._kite.orders, order_call=False)
        return convert_all(order_from_kite, list_reply(reply, "kite orders"), "kite orders")

    def find_order_by_tag(self, tag: str) -> Order | None:
        return latest_with_tag(self.orders(), tag)

    # ------------------------------------------------------------------------- GTT

    def place_gtt(self, request: GttRequest) -> str:
        """A single-leg GTT whose LIMIT order (at ``request.limit_price``) Kite places when it fires."""
        args = self._gtt_args(request)
        self._pace(request.urgent)
        reply = self._call("place_gtt", self._orders.place_gtt, order_call=True, **args)
        gtt_id = str(reply.get("trigger_id") or "") if isinstance(reply, Mapping) else ""
        if not gtt_id:
            raise BrokerError("kite place_gtt: the reply carried no trigger id")
        log.info(
            "kite gtt %s: %s %s:%s x%d at %s (limit %s)",
            gtt_id,
            request.side.value,
            request.exchange,
            request.symbol,
            request.quantity,
            request.trigger_price,
            args["orders"][0]["price"],
        )
        return gtt_id

    def modify_gtt(self, gtt_id: str, request: GttRequest) -> str:
        args = self._gtt_args(request)
        self._pace(request.urgent)
        self._call("modify_gtt", self._orders.modify_gtt, gtt_id, order_call=True, **args)
        return gtt_id

    def delete_gtt(self, gtt_id: str, *, urgent: bool = False) -> None:
        self._pace(urgent)
        self._call("delete_gtt", self._orders.delete_gtt, gtt_id, order_call=True)

    def gtt(self, gtt_id: str) -> Gtt:
        try:
            reply = self._call("get_gtt", self._kite.get_gtt, gtt_id, order_call=False)
        except BrokerInputError as exc:
            raise GttNotFound(f"kite: no GTT {gtt_id} ({exc.message})", status=exc.status) from exc
        if not isinstance(reply, Mapping):
            raise GttNotFound(f"kite: no GTT {gtt_id}")
        return convert_all(gtt_from_kite, [reply], "kite gtt")[0]

    def gtts(self) -> list[Gtt]:
        reply = self._call("get_gtts", self._kite.get_gtts, order_call=False)
        # A null list is no "no GTTs": read so, the safety stops would be placed a second time.
        return convert_all(gtt_from_kite, list_reply(reply, "kite gtts"), "kite gtts")

    def _gtt_args(self, request: GttRequest) -> dict[str, Any]:
        if not request.symbol or not request.exchange:
            raise BrokerInputError("kite GTTs need the trading symbol and the exchange")
        if request.limit_price is None:
            raise BrokerInputError("kite GTT orders are LIMIT orders: give their limit price")
        return {
            "trigger_type": "single",
            "tradingsymbol": request.symbol,
            "exchange": request.exchange,
            "trigger_values": [request.trigger_price],
            "last_price": request.last_price,
            "orders": [
                {
                    "transaction_type": request.side.value,
                    "quantity": request.quantity,
                    "order_type": "LIMIT",
                    "product": KITE_CAPABILITIES.broker_product(request.product),
                    "price": request.limit_price,
                }
            ],
        }

    # ------------------------------------------------------------------------- portfolio and market

    def positions(self) -> list[Position]:
        data = self._call("positions", self._kite.positions, order_call=False)
        # {"net": null} is unreadable, not flat (it once closed live protections as "closed outside").
        net = data.get("net") if isinstance(data, Mapping) else None
        return convert_all(position_from_kite, list_reply(net, "kite positions"), "kite positions")

    def holdings(self) -> list[Holding]:
        reply = self._call("holdings", self._kite.holdings, order_call=False)
        return convert_all(holding_from_kite, list_reply(reply, "kite holdings"), "kite holdings")

    def ltp(self, keys: Sequence[str]) -> dict[str, float]:
        """Last prices by "EXCHANGE:TRADINGSYMBOL"."""
        if not keys:
            return {}
        data = self._call("ltp", self._kite.ltp, list(keys), order_call=False)
        if not isinstance(data, Mapping):
            return {}
        return {
            str(key): float(quote["last_price"])
            for key, quote in data.items()
            if isinstance(quote, Mapping) and quote.get("last_price") is not None
        }

    def instruments(self, exchange: str | None = None) -> list[Instrument]:
        """The instrument dump, all exchanges or one. Tick sizes are already in rupees."""
        reply = self._call("instruments", self._kite.instruments, exchange, order_call=False)
        return convert_all(instrument_from_kite, rows(reply), "kite instruments")

    def profile(self) -> Profile:
        return profile_from_reply(
            self._call("profile", self._kite.profile, order_call=False), "ZERODHA", "kite profile"
        )

    # ------------------------------------------------------------------------- plumbing

    def _pace(self, urgent: bool) -> None:
        if not self._limiter.acquire(self._rate_limit_wait, priority=urgent):
            raise RateLimitedError("kite: client-side order rate limit reached", status=None)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, order_call: bool, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            error = map_kite_exception(
                exc, order_call=order_call, secrets=(self._kite.access_token, self._route_password)
            )
            if type(error) is BrokerError and not order_call:
                # The SDK itself trips over a reply it cannot read: its _format_response raises
                # UnboundLocalError on a null order book (kiteconnect 5.x connect.py). Unreadable: ask again.
                raise malformed_reply(
                    f"kite {what}", f"the SDK could not read it: {type(exc).__name__}"
                ) from exc
            log.debug("kite %s failed: %s: %s", what, type(error).__name__, error)
            raise error from exc


def _kite_market_protection(value: float) -> float:
    if value != MARKET_PROTECTION_AUTO and not 0 < value <= 100:
        raise ValueError(f"market_protection: -1 or a percentage in (0, 100], got {value!r}")
    # Sent as "-1", not "-1.0": the documented values are whole numbers.
    return int(value) if float(value).is_integer() else value


def _screen_response(response: requests.Response, *args: object, **kwargs: object) -> None:
    """Turn replies the SDK would misread (or read only in part) into an HTTPError carrying the status.

    The SDK raises KeyError on a missing Content-Type, DataException (status lost) on HTML from a
    proxy, and KeyError on JSON without ``data``; errors.py maps an HTTPError by its status instead.
    """
    if response.is_redirect:
        return
    if response.status_code == 429 and "Retry-After" in response.headers:
        # The SDK's NetworkException drops the headers; as an HTTPError the (capped) Retry-After is read.
        raise requests.HTTPError(f"HTTP 429 {response.reason}: {response.text[:200]}", response=response)
    content_type = response.headers.get("content-type", "").lower()
    if "csv" in content_type and response.ok:
        return
    if "json" in content_type:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and (body.get("error_type") or (response.ok and "data" in body)):
            return
    snippet = response.text[:200] if response.text else ""
    raise requests.HTTPError(f"HTTP {response.status_code} {response.reason}: {snippet}", response=response)


# ----------------------------------------------------------------------------- conversions


def order_from_kite(row: Mapping[str, Any]) -> Order:
    """A Kite order-book or order-history row as an ``Order``."""
    raw_status = required_text(row, "status")
    raw_product = str(row.get("product") or "")
    token = row.get("instrument_token")
    return Order(
        order_id=str(row.get("order_id") or ""),
        status=normalize_order_status(raw_status),
        raw_status=raw_status,
        side=Side.parse(row.get("transaction_type")),
        order_type=order_type_or_none(row.get("order_type")),
        product=product_or_none(raw_product),
        raw_product=raw_product,
        symbol=str(row.get("tradingsymbol") or ""),
        exchange=str(row.get("exchange") or ""),
        instrument=as_int(token) if token not in (None, "") else None,
        quantity=required_int(row, "quantity"),
        filled_quantity=required_int(row, "filled_quantity"),
        pending_quantity=as_int(row.get("pending_quantity")),
        average_price=as_float(row.get("average_price")),
        price=as_float(row.get("price")),
        trigger_price=as_float(row.get("trigger_price")),
        tag=_tag(row),
        status_message=opt_str(row.get("status_message")),
        placed_at=parse_ist(row.get("order_timestamp")),
        updated_at=parse_ist(
            row.get("exchange_update_timestamp")
            or row.get("exchange_timestamp")
            or row.get("order_timestamp")
        ),
        exchange_order_id=opt_str(row.get("exchange_order_id")),
    )


_KITE_GTT_STATUS = {
    "active": GttStatus.ACTIVE,
    "triggered": GttStatus.TRIGGERED,
    "disabled": GttStatus.CANCELLED,
    "cancelled": GttStatus.CANCELLED,
    "deleted": GttStatus.CANCELLED,
    "expired": GttStatus.EXPIRED,
    "rejected": GttStatus.REJECTED,
}


def gtt_from_kite(row: Mapping[str, Any]) -> Gtt:
    """A Kite GTT (``get_gtt``/``get_gtts`` row) as a ``Gtt``: its first leg, and the order it placed."""
    raw_status = str(row.get("status") or "")
    status = _KITE_GTT_STATUS.get(raw_status.lower(), GttStatus.UNKNOWN)
    condition = row.get("condition") if isinstance(row.get("condition"), Mapping) else {}
    assert isinstance(condition, Mapping)
    triggers = condition.get("trigger_values") or [0]
    legs = rows(row.get("orders"))
    leg: Mapping[str, Any] = legs[0] if legs else {}
    order_id: str | None = None
    message: str | None = None
    for candidate in legs:
        result = candidate.get("result")
        if isinstance(result, Mapping):
            outcome = result.get("order_result")
            if isinstance(outcome, Mapping):
                order_id = opt_str(outcome.get("order_id"))
                message = opt_str(outcome.get("rejection_reason"))
                if outcome.get("status") == "failed" and status is GttStatus.TRIGGERED:
                    status = GttStatus.REJECTED
            leg = candidate
    token = condition.get("instrument_token")
    side = leg.get("transaction_type")
    return Gtt(
        gtt_id=str(row.get("id") or ""),
        status=status,
        raw_status=raw_status,
        side=Side.parse(side) if side else None,
        quantity=as_int(leg.get("quantity")),
        trigger_price=as_float(triggers[0] if isinstance(triggers, list) and triggers else 0),
        limit_price=opt_float(leg.get("price")),
        instrument=as_int(token) if token not in (None, "") else None,
        symbol=str(condition.get("tradingsymbol") or ""),
        exchange=str(condition.get("exchange") or ""),
        order_id=order_id,
        message=message,
    )


def position_from_kite(row: Mapping[str, Any]) -> Position:
    raw_product = str(row.get("product") or "")
    exchange = str(row.get("exchange") or "")
    symbol = str(row.get("tradingsymbol") or "")
    return Position(
        symbol=symbol,
        exchange=exchange,
        instrument=as_int(row.get("instrument_token")),
        quote_key=f"{exchange}:{symbol}",
        quantity=required_int(row, "quantity"),
        average_price=as_float(row.get("average_price")),
        product=product_or_none(raw_product),
        raw_product=raw_product,
        last_price=opt_float(row.get("last_price")),
        pnl=opt_float(row.get("pnl")),
    )


def holding_from_kite(row: Mapping[str, Any]) -> Holding:
    exchange = str(row.get("exchange") or "")
    symbol = str(row.get("tradingsymbol") or "")
    return Holding(
        symbol=symbol,
        exchange=exchange,
        instrument=as_int(row.get("instrument_token")),
        quote_key=f"{exchange}:{symbol}",
        isin=opt_str(row.get("isin")),
        quantity=required_int(row, "quantity"),
        t1_quantity=as_int(row.get("t1_quantity")),
        average_price=as_float(row.get("average_price")),
        last_price=opt_float(row.get("last_price")),
        used_quantity=as_int(row.get("used_quantity")),
        authorised_quantity=as_int(row.get("authorised_quantity")),
    )


def instrument_from_kite(row: Mapping[str, Any]) -> Instrument:
    """A row of the instrument dump as parsed by the SDK (numbers converted, expiry a date or "")."""
    exchange = str(row.get("exchange") or "")
    symbol = str(row.get("tradingsymbol") or "")
    expiry = row.get("expiry")
    return Instrument(
        instrument=as_int(row.get("instrument_token")),
        symbol=symbol,
        exchange=exchange,
        segment=str(row.get("segment") or ""),
        instrument_type=str(row.get("instrument_type") or ""),
        name=str(row.get("name") or ""),
        tick_size=as_float(row.get("tick_size")),
        lot_size=as_int(row.get("lot_size")),
        quote_key=f"{exchange}:{symbol}",
        expiry=expiry if isinstance(expiry, date) else None,
        strike=as_float(row.get("strike")),
    )


def _tag(row: Mapping[str, Any]) -> str | None:
    # Only ``tag`` is ours: ``tags`` also lists tags Kite adds itself ("mktp", "autoslice:...").
    tag = row.get("tag")
    return str(tag) if tag else None
