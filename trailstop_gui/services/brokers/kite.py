"""Kite Connect REST through the official ``kiteconnect`` client, behind the ``Broker`` protocol.

The client's root can point anywhere (the simulator in tests and demo mode). MARKET and SL-M orders
carry ``market_protection``: Kite refuses API market orders without it. Every SDK or transport
exception leaves this module as a ``BrokerError`` (see errors.py); tokens never reach a message or a log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from datetime import date
from typing import Any

import requests
from kiteconnect import KiteConnect

from trailstop_gui.models.domain import Side
from trailstop_gui.services.brokers.adapter_base import OrderChange, RestAdapter
from trailstop_gui.services.brokers.base import (
    KITE_CAPABILITIES,
    Gtt,
    GttRequest,
    GttStatus,
    Holding,
    Instrument,
    Order,
    OrderRequest,
    Position,
    Profile,
    SessionInfo,
    as_float,
    as_int,
    convert_all,
    malformed_reply,
    opt_float,
    opt_str,
    parse_ist,
    product_or_none,
    profile_from_reply,
    rows,
)
from trailstop_gui.services.brokers.errors import (
    AmbiguousError,
    BrokerError,
    BrokerInputError,
    map_kite_exception,
)
from trailstop_gui.services.brokers.http_session import HostEnvironmentSession
from trailstop_gui.services.brokers.order_route import OrderRoute
from trailstop_gui.services.brokers.rate_limit import RateLimiter
from trailstop_gui.services.brokers.reply_rows import (
    Listing,
    holding_from_row,
    order_from_row,
    position_from_row,
)

__all__ = ["MARKET_PROTECTION_AUTO", "KiteBroker"]

log = logging.getLogger(__name__)

MARKET_PROTECTION_AUTO = -1
"""Kite picks the protection band itself."""


class KiteBroker(RestAdapter):
    """One Kite Connect account. Safe to call from several threads."""

    name = "kite"
    display_name = "Zerodha"
    _capabilities = KITE_CAPABILITIES

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

        ``limiter`` paces order calls (default: the broker's limits, see ``RestAdapter``);
        ``rate_limit_wait`` is how long an order call may wait for it before RateLimitedError.
        ``market_protection``: -1 (automatic) or a percentage in (0, 100].
        """
        super().__init__(
            limiter=limiter,
            rate_limit_wait=rate_limit_wait,
            market_protection=_kite_market_protection(market_protection),
            map_exception=map_kite_exception,
        )
        self._kite: Any = _client(api_key, access_token=access_token, root=root, timeout=timeout)
        if login_uri:
            # The constructor has no parameter for it; login_url() reads this attribute.
            self._kite._default_login_uri = login_uri
        self._root, self._timeout = root, timeout
        self._orders: Any = self._kite
        self.set_order_route(order_route or OrderRoute(), route_password)
        self._ready = threading.local()  # per thread: (an order request, its PreparedCall) from prepare_order
        self._variety = variety

    def set_market_protection(self, market_protection: float) -> None:
        """What MARKET and SL-M orders carry from now on (the trader's setting): -1 or a percentage."""
        self._market_protection = _kite_market_protection(market_protection)

    # ------------------------------------------------------------------------- session

    @property
    def api_key(self) -> str:
        return str(self._kite.api_key)

    def login_url(self) -> str:
        """The page where the user logs in; it redirects to the app with a request_token."""
        return str(self._kite.login_url())

    def exchange_token(self, request_token: str, api_secret: str) -> SessionInfo:
        """Trade the request_token from the login redirect for an access token, and start using it.

        The SDK sets the token on the reads' client itself; ``set_access_token`` gives it to the order
        route's client too.
        """
        return self._exchange_login(
            lambda: self._kite.generate_session(request_token, api_secret=api_secret),
            lambda data: data if isinstance(data, Mapping) else {},
            (request_token, api_secret),
        )

    def set_access_token(self, access_token: str | None) -> None:
        self._kite.set_access_token(access_token)
        if self._orders is not self._kite:
            self._orders.set_access_token(access_token)

    # ------------------------------------------------------------------------- order route

    def set_order_route(self, route: OrderRoute, password: str | None = None) -> None:
        """Send order calls through ``route`` from now on. A client of its own carries the proxy (the
        SDK's ``proxies`` applies to every call of a client), so reads and login stay direct."""
        if route.is_direct:
            orders: Any = self._kite
        else:
            orders = _client(
                self._kite.api_key,
                access_token=self._kite.access_token,
                root=self._root,
                timeout=self._timeout,
                proxies=route.requests_proxies(password),
            )
        self._orders, self._route, self._route_password = orders, route, password

    # ------------------------------------------------------------------------- orders

    def _order_params(self, request: OrderRequest) -> dict[str, Any]:
        """The place_order fields of one request (the plain and the auto-sliced call take the same)."""
        if not request.symbol or not request.exchange:
            raise BrokerInputError("kite orders need the trading symbol and the exchange")
        return {
            "variety": self._variety,
            "exchange": request.exchange,
            "tradingsymbol": request.symbol,
            **self._order_fields(request),
            # Kite refuses API market orders (MARKET, SL-M) without it; it is never None here.
            **self._market_protection_field(request.order_type),
        }

    def prepare_order(self, request: OrderRequest) -> None:
        """Work ``request`` out down to its HTTP request now (the SDK's own call, stopped before sending),
        for this thread's next ``place_order`` of an equal request: an exit is prepared while its trigger
        is committed, and only sent once it is on disk (http_session.py)."""
        self._ready.order = None
        orders = self._orders
        session = orders.reqsession
        if not isinstance(session, HostEnvironmentSession):
            return
        try:
            params = self._order_params(request)
            call = session.capture(lambda: orders.place_order(**params))
        except Exception as exc:  # place_order meets it again and reports it as usual
            log.debug("kite: order not prepared ahead (%s)", type(exc).__name__)
            return
        self._ready.order = (request, call)

    def place_order(self, request: OrderRequest) -> str:
        params = self._order_params(request)
        ready = getattr(self._ready, "order", None)
        self._ready.order = None
        call = ready[1] if ready is not None and ready[0] == request else None
        self._pace(request.urgent)
        orders = self._orders
        # The request prepared ahead is sent only if the SDK asks for exactly that one again (the same
        # token, route, body and settings); anything else is prepared anew, as always.
        with orders.reqsession.sending(call) if call is not None else nullcontext():
            order_id = str(self._call("place_order", orders.place_order, order_call=True, **params))
        self._log_placed("order", order_id, request, f"{request.exchange}:{request.symbol}")
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
        where = f"{request.exchange}:{request.symbol}"
        self._log_placed("sliced order", str(parent), request, where, f" in {len(ids)} slices")
        return ids

    def _modify(self, order_id: str, change: OrderChange, urgent: bool) -> str:
        params: dict[str, Any] = {
            "quantity": change.quantity,
            "price": change.price,
            "trigger_price": change.trigger_price,
            "order_type": None if change.order_type is None else change.order_type.value,
            # Turning an order into a market one needs protection, as placing one does.
            **self._market_protection_field(change.order_type),
        }
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
        return self._read_rows("order_history", reply, order_from_kite)

    def orders(self) -> list[Order]:
        return self._read_rows(
            "orders", self._call("orders", self._kite.orders, order_call=False), order_from_kite
        )

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
        def fetch() -> list[Gtt]:
            reply = self._call("get_gtt", self._kite.get_gtt, gtt_id, order_call=False)
            return convert_all(gtt_from_kite, [reply], "kite gtt") if isinstance(reply, Mapping) else []

        return self._read_gtt(gtt_id, fetch)

    def gtts(self) -> list[Gtt]:
        reply = self._call("get_gtts", self._kite.get_gtts, order_call=False)
        # A null list is no "no GTTs": read so, the safety stops would be placed a second time.
        return self._read_rows("gtts", reply, gtt_from_kite)

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
        return self._read_rows("positions", net, position_from_kite)

    def holdings(self) -> list[Holding]:
        reply = self._call("holdings", self._kite.holdings, order_call=False)
        return self._read_rows("holdings", reply, holding_from_kite)

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

    def _send(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return fn(*args, **kwargs)

    def _unwrap(self, reply: Any, what: str, order_call: bool) -> Any:
        return reply  # the SDK hands over the reply's "data" itself

    def _access_token(self) -> str | None:
        return self._kite.access_token or None

    def _call_error(self, exc: Exception, what: str, order_call: bool) -> BrokerError:
        error = super()._call_error(exc, what, order_call)
        if type(error) is BrokerError and not order_call:
            # The SDK itself trips over a reply it cannot read: its _format_response raises
            # UnboundLocalError on a null order book (kiteconnect 5.x connect.py). Unreadable: ask again.
            return malformed_reply(f"kite {what}", f"the SDK could not read it: {type(exc).__name__}")
        return error


def _client(api_key: str, **kwargs: Any) -> Any:
    """A ``KiteConnect`` whose session reads the environment once per host (http_session.py) and turns
    replies the SDK would misread into errors (``_screen_response``)."""
    client = KiteConnect(api_key, **kwargs)
    client.reqsession = HostEnvironmentSession()
    client.reqsession.hooks["response"].append(_screen_response)
    return client


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
    token = row.get("instrument_token")
    return order_from_row(
        row,
        product=product_or_none(str(row.get("product") or "")),
        symbol=str(row.get("tradingsymbol") or ""),
        instrument=as_int(token) if token not in (None, "") else None,
        tag=_tag(row),
        updated_at=parse_ist(
            row.get("exchange_update_timestamp")
            or row.get("exchange_timestamp")
            or row.get("order_timestamp")
        ),
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


def _listing(row: Mapping[str, Any]) -> Listing:
    symbol = str(row.get("tradingsymbol") or "")
    return Listing(symbol, as_int(row.get("instrument_token")), f"{row.get('exchange') or ''}:{symbol}")


def position_from_kite(row: Mapping[str, Any]) -> Position:
    return position_from_row(row, _listing(row), product_or_none(str(row.get("product") or "")))


def holding_from_kite(row: Mapping[str, Any]) -> Holding:
    used, authorised = as_int(row.get("used_quantity")), as_int(row.get("authorised_quantity"))
    return holding_from_row(row, _listing(row), used_quantity=used, authorised_quantity=authorised)


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
