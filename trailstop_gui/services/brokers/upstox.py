"""Upstox REST through the official ``upstox_client`` SDK, behind the ``Broker`` protocol.

The SDK builds the requests (URLs, the order host, auth, JSON bodies from its models); we read the
replies as plain JSON (``_preload_content=False``) because the SDK's response models reject enum
values they do not know, which would make a whole order book unreadable over one odd field.
"""

from __future__ import annotations

import gzip
import json
import logging
import statistics
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal
from urllib.parse import urlencode

import upstox_client
import urllib3

from trailstop_gui.models.domain import Product, Side
from trailstop_gui.models.square_off import MarketSession
from trailstop_gui.services.brokers.adapter_base import OrderChange, RestAdapter
from trailstop_gui.services.brokers.base import (
    IST,
    UPSTOX_CAPABILITIES,
    Gtt,
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
    Validity,
    as_float,
    as_int,
    convert_all,
    malformed_reply,
    opt_str,
    parse_ist,
    profile_from_reply,
    rows,
)
from trailstop_gui.services.brokers.calendar import sessions_from_upstox
from trailstop_gui.services.brokers.errors import (
    AmbiguousError,
    BrokerError,
    BrokerInputError,
    RejectedError,
    TemporaryError,
    error_for_status,
    map_upstox_exception,
    redact,
)
from trailstop_gui.services.brokers.order_route import (
    OrderRoute,
    RouteCheck,
)
from trailstop_gui.services.brokers.rate_limit import RateLimiter
from trailstop_gui.services.brokers.reply_rows import (
    Listing,
    holding_from_row,
    order_from_row,
    position_from_row,
)

__all__ = [
    "DEFAULT_API_ROOT",
    "DEFAULT_INSTRUMENTS_URL",
    "DEFAULT_ORDER_ROOT",
    "UpstoxBroker",
    "instruments_from_master",
]

log = logging.getLogger(__name__)

DEFAULT_API_ROOT = "https://api.upstox.com"
DEFAULT_ORDER_ROOT = "https://api-hft.upstox.com"
DEFAULT_INSTRUMENTS_URL = "https://assets.upstox.com/market-quote/instruments/exchange/complete.json.gz"
API_VERSION = "2.0"

TickUnit = Literal["auto", "paise", "rupees"]


class UpstoxBroker(RestAdapter):
    """One Upstox account, with its own SDK client: two accounts never share a token."""

    name = "upstox"
    display_name = "Upstox"
    _capabilities = UPSTOX_CAPABILITIES

    def __init__(
        self,
        client_id: str,
        access_token: str | None = None,
        api_root: str | None = None,
        order_root: str | None = None,
        *,
        dialog_url: str | None = None,
        instruments_url: str = DEFAULT_INSTRUMENTS_URL,
        timeout: float = 7.0,
        limiter: RateLimiter | None = None,
        market_protection: float | None = -1,
        order_api: Literal["v2", "v3"] = "v3",
        tick_size_unit: TickUnit = "auto",
        rate_limit_wait: float | None = 30.0,
        order_route: OrderRoute | None = None,
        route_password: str | None = None,
    ) -> None:
        """``api_root``/``order_root``: the two hosts (a custom ``api_root`` alone serves both, so that a
        test or the simulator can never send an order to the real order host by accident).

        ``market_protection`` (v3 only) goes with MARKET and SL-M orders: -1 for automatic, a percentage
        up to 25, or None to leave it out. ``tick_size_unit``: the instrument master's unit ("auto" decides
        per file). ``limiter``, ``rate_limit_wait`` and ``order_route`` as for ``KiteBroker``.
        """
        super().__init__(
            limiter=limiter,
            rate_limit_wait=rate_limit_wait,
            market_protection=_upstox_market_protection(market_protection),
            map_exception=map_upstox_exception,
        )
        root = (api_root or DEFAULT_API_ROOT).rstrip("/")
        order_host = (order_root or (root if api_root else DEFAULT_ORDER_ROOT)).rstrip("/")
        # Configuration() returns a copy of the first instance ever created and ignores its arguments:
        # set every attribute we rely on explicitly, on this copy only.
        config = upstox_client.Configuration()
        config.sandbox = False
        config.host = root
        config.order_host = order_host
        config.access_token = access_token or ""
        config.refresh_api_key_hook = None
        self._config = config
        client = upstox_client.ApiClient(config)
        # The SDK starts a worker pool per client for async_req, which we never use.
        client.pool.close()
        client.pool.join()
        client.rest_client.pool_manager.connection_pool_kw["retries"] = _RETRIES
        self._client: Any = client
        self._orders_v2: Any = upstox_client.OrderApi(client)
        self._orders_v3: Any = upstox_client.OrderApiV3(client)
        self._portfolio: Any = upstox_client.PortfolioApi(client)
        self._quotes: Any = upstox_client.MarketQuoteApi(client)
        self._user: Any = upstox_client.UserApi(client)
        self._timings: Any = upstox_client.MarketHolidaysAndTimingsApi(client)
        self._route_v2: Any = self._orders_v2
        self._route_v3: Any = self._orders_v3
        self.set_order_route(order_route or OrderRoute(), route_password)
        self._login: Any = upstox_client.LoginApi(client)
        self._client_id = client_id
        self._dialog_url = dialog_url or f"{root}/v2/login/authorization/dialog"
        self._instruments_url = instruments_url
        self._timeout = (timeout, timeout)  # a (connect, read) pair: the SDK ignores a float timeout
        self._order_api = order_api
        self._tick_size_unit: TickUnit = tick_size_unit

    def set_market_protection(self, market_protection: float | None) -> None:
        """What v3 MARKET and SL-M orders carry from now on (the trader's setting): -1, 0-25 or None."""
        self._market_protection = _upstox_market_protection(market_protection)

    # ------------------------------------------------------------------------- session

    @property
    def api_root(self) -> str:
        return str(self._config.host)

    @property
    def order_root(self) -> str:
        return str(self._config.order_host)

    def authorization_url(self, redirect_uri: str, state: str | None = None) -> str:
        """The login dialog; it redirects to ``redirect_uri?code=..&state=..``."""
        query = {"response_type": "code", "client_id": self._client_id, "redirect_uri": redirect_uri}
        if state is not None:
            query["state"] = state
        return f"{self._dialog_url}?{urlencode(query)}"

    def exchange_code(self, code: str, client_secret: str, redirect_uri: str) -> SessionInfo:
        """Trade the code from the login redirect for an access token, and start using it."""
        secrets = (code, client_secret)
        return self._exchange_login(
            lambda: _read(
                self._login.token(
                    API_VERSION,
                    code=code,
                    client_id=self._client_id,
                    client_secret=client_secret,
                    redirect_uri=redirect_uri,
                    grant_type="authorization_code",
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
            ),
            lambda body: _decode(body, "login", order_call=False, secrets=secrets),
            secrets,
        )

    def set_access_token(self, access_token: str | None) -> None:
        # The route's client shares this Configuration object, so it sees the new token too.
        self._config.access_token = access_token or ""

    # ------------------------------------------------------------------------- order route

    def set_order_route(self, route: OrderRoute, password: str | None = None) -> None:
        """Send order calls (place, modify, cancel, GTT) through ``route`` from now on; reads stay direct.

        The SDK builds a urllib3.ProxyManager from ``Configuration.proxy`` for every call of a client, and
        no SOCKS manager at all: the order calls get an ApiClient of their own whose pool manager is the
        route's (ProxyManager or urllib3.contrib.socks.SOCKSProxyManager).
        """
        if route.is_direct:
            v2, v3 = self._orders_v2, self._orders_v3
        else:
            client = upstox_client.ApiClient(self._config)
            client.pool.close()
            client.pool.join()
            # The same certificates, pool size and retries as the direct client's.
            pool_kw = dict(self._client.rest_client.pool_manager.connection_pool_kw)
            client.rest_client.pool_manager = route.urllib3_manager(password, **pool_kw)
            v2, v3 = upstox_client.OrderApi(client), upstox_client.OrderApiV3(client)
        self._route_v2, self._route_v3 = v2, v3
        self._route, self._route_password = route, password

    def check_order_route(self) -> RouteCheck:
        """A harmless order call (cancel an order that cannot exist) through the route, plus the IPs
        registered for the account (GET /v2/user/ip, readable from anywhere) when Upstox tells them."""
        check = super().check_order_route()
        try:
            data = self._call("user_ips", self._user.get_user_ips, order_call=False)
        except BrokerError as exc:
            log.info("upstox: registered IPs unavailable (%s)", exc)
            return check
        ips = tuple(
            str(data[key])
            for key in ("primary_ip", "secondary_ip")
            if isinstance(data, Mapping) and data.get(key)
        )
        if not ips:
            return check
        return RouteCheck(check.state, f"{check.message}; registered IPs: {', '.join(ips)}", ips)

    # ------------------------------------------------------------------------- orders

    def _upstox_order_fields(self, request: OrderRequest) -> dict[str, Any]:
        """The place-order body of one request (the plain and the sliced call take the same)."""
        key = request.instrument
        if not isinstance(key, str) or "|" not in key:
            raise BrokerInputError(f"upstox orders need the instrument key (like NSE_EQ|INE...), got {key!r}")
        fields = self._order_fields(request)
        return {
            **fields,
            # The body carries every field: a price or trigger the order type does not take is 0.
            "price": float(fields.get("price") or 0.0),
            "trigger_price": float(fields.get("trigger_price") or 0.0),
            "tag": fields.get("tag"),
            "instrument_token": key,
            "disclosed_quantity": 0,
            "is_amo": False,
        }

    def place_order(self, request: OrderRequest) -> str:
        fields = self._upstox_order_fields(request)
        if self._order_api == "v3":
            fields["slice"] = False
            fields.update(self._market_protection_field(request.order_type))
            body = self._model(upstox_client.PlaceOrderV3Request, fields)
            self._pace(request.urgent)
            data = self._call("place_order", self._route_v3.place_order, body, order_call=True)
            ids = data.get("order_ids") if isinstance(data, Mapping) else None
            order_id = str(ids[0]) if isinstance(ids, list) and ids else ""
        else:
            body = self._model(upstox_client.PlaceOrderRequest, fields)
            self._pace(request.urgent)
            data = self._call("place_order", self._route_v2.place_order, body, API_VERSION, order_call=True)
            order_id = str(data.get("order_id") or "") if isinstance(data, Mapping) else ""
        if not order_id:
            # Accepted, but we cannot tell which order it made: the caller must look the tag up.
            raise AmbiguousError("upstox place_order: the reply carried no order id")
        self._log_placed("order", order_id, request, str(request.instrument))
        return order_id

    def place_sliced_order(self, request: OrderRequest) -> list[str]:
        """An order above the freeze quantity, sliced by Upstox: v3 place with ``slice: true`` answers
        ``{"order_ids": [...]}`` (Upstox docs, Place Order V3, "Auto Slicing"; at most 25 slices)."""
        fields = {
            **self._upstox_order_fields(request),
            "slice": True,
            **self._market_protection_field(request.order_type),
        }
        body = self._model(upstox_client.PlaceOrderV3Request, fields)
        self._pace(request.urgent)
        data = self._call("place_order", self._route_v3.place_order, body, order_call=True)
        found = data.get("order_ids") if isinstance(data, Mapping) else None
        ids = [str(i) for i in found if i] if isinstance(found, list) else []
        if not ids:
            raise AmbiguousError("upstox sliced place_order: the reply carried no order id")
        self._log_placed("sliced order", ",".join(ids), request, str(request.instrument))
        return ids

    def _modify(self, order_id: str, change: OrderChange, urgent: bool) -> str:
        new_type, price, trigger_price = change.order_type, change.price, change.trigger_price
        validity = Validity.DAY.value
        if new_type is None or price is None or trigger_price is None:
            # Upstox wants the whole order spec on a modify: fill the gaps from the order as it stands.
            try:
                current = self.order(order_id)
            except BrokerInputError as exc:
                # An order that cannot be found cannot be modified: the refusal an order call gets
                # (as Kite's, and as this modify's own reply would be), not a read's input error.
                raise RejectedError(exc.message, status=exc.status, code=exc.code) from exc
            new_type = new_type or current.order_type or OrderType.LIMIT
            price = current.price if price is None else price
            trigger_price = current.trigger_price if trigger_price is None else trigger_price
        fields: dict[str, Any] = {
            "order_id": order_id,
            "quantity": change.quantity,
            "validity": validity,
            "price": float(price) if new_type.needs_price else 0.0,
            "order_type": new_type.value,
            "disclosed_quantity": 0,
            "trigger_price": float(trigger_price) if new_type.needs_trigger else 0.0,
        }
        fields.update(self._market_protection_field(new_type))
        body = self._model(upstox_client.ModifyOrderRequest, fields)
        self._pace(urgent)
        if self._order_api == "v3":
            data = self._call("modify_order", self._route_v3.modify_order, body, order_call=True)
        else:
            data = self._call("modify_order", self._route_v2.modify_order, body, API_VERSION, order_call=True)
        return str(data.get("order_id") or order_id) if isinstance(data, Mapping) else order_id

    def cancel_order(self, order_id: str, *, urgent: bool = False) -> str:
        self._pace(urgent)
        if self._order_api == "v3":
            data = self._call("cancel_order", self._route_v3.cancel_order, order_id, order_call=True)
        else:
            data = self._call(
                "cancel_order", self._route_v2.cancel_order, order_id, API_VERSION, order_call=True
            )
        return str(data.get("order_id") or order_id) if isinstance(data, Mapping) else order_id

    def order(self, order_id: str) -> Order:
        # The SDK's names are swapped: get_order_status is GET /v2/order/details (one order).
        data = self._call("order", self._orders_v2.get_order_status, order_id=order_id, order_call=False)
        if not isinstance(data, Mapping):
            # An unknown order is a 4xx error reply; a success without the order is unreadable, not "none".
            raise malformed_reply("upstox order", f"no order object for {order_id}")
        return convert_all(order_from_upstox, [data], "upstox order")[0]

    def order_history(self, order_id: str) -> list[Order]:
        # ... and get_order_details is GET /v2/order/history (every state of one order).
        data = self._call(
            "order_history",
            self._orders_v2.get_order_details,
            API_VERSION,
            order_id=order_id,
            order_call=False,
        )
        return self._read_rows("order_history", data, order_from_upstox)

    def orders(self) -> list[Order]:
        data = self._call("orders", self._orders_v2.get_order_book, API_VERSION, order_call=False)
        return self._read_rows("orders", data, order_from_upstox)

    # ------------------------------------------------------------------------- GTT (v3)

    def place_gtt(self, request: GttRequest) -> str:
        """A SINGLE GTT with one ENTRY rule on the exit side: SELL BELOW the trigger for a long.

        Why ENTRY and not a STOPLOSS rule: Upstox requires every GTT to open with an ENTRY rule, and its
        STOPLOSS and TARGET rules arm only after that ENTRY's order has filled. For a position that is
        already open, the one rule that sells (or buys back) once the price crosses a level is a single
        ENTRY rule on the exit side; a MULTIPLE GTT with an IMMEDIATE ENTRY would trade again at once.
        Upstox's native ``trailing_gap`` is not used either: it trails the LTP by a fixed gap, which
        follows neither our percent rules, our bid-based MIS trail, ladders nor breakeven.
        """
        body = self._model(
            upstox_client.GttPlaceOrderRequest,
            {
                "type": "SINGLE",
                "quantity": request.quantity,
                "product": UPSTOX_CAPABILITIES.broker_product(request.product),
                "rules": [self._gtt_rule(request)],
                "instrument_token": self._gtt_key(request),
                "transaction_type": request.side.value,
            },
        )
        self._pace(request.urgent)
        data = self._call("place_gtt", self._route_v3.place_gtt_order, body, order_call=True)
        ids = data.get("gtt_order_ids") if isinstance(data, Mapping) else None
        if not isinstance(ids, list) or not ids:
            raise AmbiguousError("upstox place_gtt: the reply carried no GTT id")
        self._log.info(
            "upstox gtt %s: %s %s x%d at %s",
            ids[0],
            request.side.value,
            request.instrument,
            request.quantity,
            request.trigger_price,
        )
        return str(ids[0])

    def modify_gtt(self, gtt_id: str, request: GttRequest) -> str:
        body = self._model(
            upstox_client.GttModifyOrderRequest,
            {
                "type": "SINGLE",
                "quantity": request.quantity,
                "rules": [self._gtt_rule(request)],
                "gtt_order_id": gtt_id,
            },
        )
        self._pace(request.urgent)
        self._call("modify_gtt", self._route_v3.modify_gtt_order, body, order_call=True)
        return gtt_id

    def delete_gtt(self, gtt_id: str, *, urgent: bool = False) -> None:
        body = self._model(upstox_client.GttCancelOrderRequest, {"gtt_order_id": gtt_id})
        self._pace(urgent)
        self._call("cancel_gtt", self._route_v3.cancel_gtt_order, body, order_call=True)

    def gtt(self, gtt_id: str) -> Gtt:
        def fetch() -> list[Gtt]:
            details = self._orders_v3.get_gtt_order_details
            data = self._call("gtt", details, gtt_order_id=gtt_id, order_call=False)
            # A completed GTT is no longer listed: none found is GttNotFound (see base.GttNotFound).
            return [g for g in convert_all(gtt_from_upstox, rows(data), "upstox gtt") if g.gtt_id == gtt_id]

        return self._read_gtt(gtt_id, fetch)

    def gtts(self) -> list[Gtt]:
        data = self._call("gtts", self._orders_v3.get_gtt_order_details, order_call=False)
        return self._read_rows("gtts", data, gtt_from_upstox)

    def _gtt_key(self, request: GttRequest) -> str:
        key = request.instrument
        if not isinstance(key, str) or "|" not in key:
            raise BrokerInputError(f"upstox GTTs need the instrument key (like NSE_EQ|INE...), got {key!r}")
        return key

    def _gtt_rule(self, request: GttRequest) -> Any:
        fields: dict[str, Any] = {
            "strategy": "ENTRY",
            "trigger_type": "BELOW" if request.side is Side.SELL else "ABOVE",
            "trigger_price": request.trigger_price,
        }
        if request.market_protection is not None:
            fields["market_protection"] = request.market_protection
        return self._model(upstox_client.GttRule, fields)

    # ------------------------------------------------------------------------- portfolio and market

    def positions(self) -> list[Position]:
        data = self._call("positions", self._portfolio.get_positions, API_VERSION, order_call=False)
        # Documented as a list (upstox.com/developer/api-documentation/get-positions): null is unreadable.
        return self._read_rows("positions", data, position_from_upstox)

    def holdings(self) -> list[Holding]:
        data = self._call("holdings", self._portfolio.get_holdings, API_VERSION, order_call=False)
        return self._read_rows("holdings", data, holding_from_upstox)

    def ltp(self, keys: Sequence[str]) -> dict[str, float]:
        """Last prices by instrument key ("NSE_EQ|INE009A01021")."""
        if not keys:
            return {}
        data = self._call("ltp", self._quotes.ltp, ",".join(keys), API_VERSION, order_call=False)
        if not isinstance(data, Mapping):
            return {}
        # Replies are keyed "NSE_EQ:INFY"; each carries its instrument key, which is what we asked with.
        by_key: dict[str, float] = {}
        for reply_key, quote in data.items():
            if not isinstance(quote, Mapping) or quote.get("last_price") is None:
                continue
            price = as_float(quote["last_price"])
            by_key[str(reply_key).replace(":", "|", 1)] = price
            if quote.get("instrument_token"):
                by_key[str(quote["instrument_token"])] = price
        return {key: by_key[key] for key in keys if key in by_key}

    def instruments(self) -> list[Instrument]:
        """The instrument master (gzipped or plain JSON) from ``instruments_url``, tick sizes in rupees."""
        timeout = urllib3.Timeout(connect=self._timeout[0], read=max(self._timeout[1], 60.0))
        try:
            response = self._client.rest_client.pool_manager.request(
                "GET", self._instruments_url, timeout=timeout, preload_content=True
            )
        except Exception as exc:
            raise map_upstox_exception(exc, order_call=False) from exc
        if not 200 <= response.status < 300:
            raise error_for_status(
                response.status,
                f"upstox instruments: HTTP {response.status} {response.reason}",
                order_call=False,
            )
        raw = bytes(response.data)
        try:
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            master = json.loads(raw)
        except (OSError, EOFError, ValueError) as exc:
            raise TemporaryError(f"upstox instruments: unreadable file ({type(exc).__name__})") from exc
        return instruments_from_master(rows(master), self._tick_size_unit)

    def market_sessions(self, day: date) -> dict[str, MarketSession]:
        """The exchanges open on ``day`` and their hours, as Upstox publishes them (holidays, half days)."""
        data = self._call(
            "market timings", self._timings.get_exchange_timings, day.isoformat(), order_call=False
        )
        return sessions_from_upstox(data, day)

    def profile(self) -> Profile:
        return profile_from_reply(
            self._call("profile", self._user.get_profile, API_VERSION, order_call=False),
            "UPSTOX",
            "upstox profile",
        )

    # ------------------------------------------------------------------------- plumbing

    def _model(self, model: Callable[..., Any], fields: Mapping[str, Any]) -> Any:
        """Build an SDK request model; its setters check enums and required fields before sending."""
        try:
            return model(**fields)
        except (TypeError, ValueError) as exc:
            raise BrokerInputError(f"upstox request: {exc}") from exc

    def _send(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        return _read(fn(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs))

    def _unwrap(self, reply: Any, what: str, order_call: bool) -> Any:
        """The envelope's ``data``; an envelope with ``"status": "error"`` is the broker's refusal."""
        secrets = self._secrets()
        envelope = _decode(reply, what, order_call=order_call, secrets=secrets)
        if envelope.get("status") == "error":
            raise error_for_status(
                400, f"upstox {what}: {redact(json.dumps(envelope)[:300], secrets)}", order_call=order_call
            )
        return envelope.get("data")

    def _access_token(self) -> str | None:
        return self._config.access_token or None


# One retry when the connection could not be made (nothing was sent) and one for a GET whose reply was
# lost; never resend an order: that is the caller's decision, after a tag lookup.
_RETRIES = urllib3.Retry(
    total=2,
    connect=1,
    read=1,
    status=0,
    other=0,
    redirect=0,
    allowed_methods=frozenset({"GET"}),
    raise_on_redirect=False,
    raise_on_status=False,
)


def _read(response: Any) -> bytes:
    """The whole body of a raw urllib3 response, handing the connection back to the pool."""
    try:
        return bytes(response.data)
    finally:
        release = getattr(response, "release_conn", None)
        if release is not None:
            release()


def _decode(body: bytes, what: str, *, order_call: bool, secrets: Sequence[str | None]) -> Mapping[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, Mapping):
        # 2xx but unreadable: for an order call the broker may well have acted on it.
        kind = AmbiguousError if order_call else TemporaryError
        raise kind(
            f"upstox {what}: unreadable reply {redact(body[:200].decode('utf-8', 'replace'), secrets)!r}"
        )
    return data


# ----------------------------------------------------------------------------- conversions


def segment_of(instrument_key: object) -> str:
    """ "NSE_EQ|INE009A01021" -> "NSE_EQ"."""
    return str(instrument_key or "").partition("|")[0]


def product_from_upstox(raw: str, instrument_key: object) -> Product | None:
    """I is intraday; D is delivery for equity and carry-forward (NRML) for everything else."""
    code = raw.strip().upper()
    if code == "I":
        return Product.MIS
    if code == "D":
        return Product.CNC if segment_of(instrument_key).endswith("_EQ") else Product.NRML
    return None  # MTF, CO, OCO: products the app does not trade


def order_from_upstox(row: Mapping[str, Any]) -> Order:
    key = opt_str(row.get("instrument_token"))
    return order_from_row(
        row,
        product=product_from_upstox(str(row.get("product") or ""), key),
        symbol=str(row.get("trading_symbol") or row.get("tradingsymbol") or ""),
        instrument=key,
        tag=opt_str(row.get("tag")),
        updated_at=parse_ist(row.get("exchange_timestamp") or row.get("order_timestamp")),
    )


# A rule's status -> the GTT's, for our single-rule GTTs (a rule with an order id has fired).
_UPSTOX_RULE_STATUS = {
    "SCHEDULED": GttStatus.ACTIVE,
    "PENDING": GttStatus.ACTIVE,
    "TRIGGERED": GttStatus.TRIGGERED,
    "OPEN": GttStatus.TRIGGERED,
    "COMPLETED": GttStatus.TRIGGERED,
    "CANCELLED": GttStatus.CANCELLED,
    "INACTIVE": GttStatus.CANCELLED,
    "EXPIRED": GttStatus.EXPIRED,
    "FAILED": GttStatus.REJECTED,
}


def gtt_from_upstox(row: Mapping[str, Any]) -> Gtt:
    """An Upstox GTT (``GET /v3/order/gtt`` row) as a ``Gtt``: its ENTRY rule and the order it placed."""
    rules = rows(row.get("rules"))
    rule: Mapping[str, Any] = next(
        (r for r in rules if r.get("strategy") == "ENTRY"), rules[0] if rules else {}
    )
    raw_status = str(rule.get("status") or "")
    status = _UPSTOX_RULE_STATUS.get(raw_status.upper(), GttStatus.UNKNOWN)
    order_id = opt_str(rule.get("order_id"))
    if order_id and status is GttStatus.ACTIVE:
        status = GttStatus.TRIGGERED
    side = rule.get("transaction_type")
    return Gtt(
        gtt_id=str(row.get("gtt_order_id") or ""),
        status=status,
        raw_status=raw_status,
        side=Side.parse(side) if side else None,
        quantity=as_int(row.get("quantity")),
        trigger_price=as_float(rule.get("trigger_price")),
        limit_price=None,
        instrument=opt_str(row.get("instrument_token")),
        symbol=str(row.get("trading_symbol") or ""),
        exchange=str(row.get("exchange") or ""),
        order_id=order_id,
        message=opt_str(rule.get("message")),
    )


def _listing(row: Mapping[str, Any]) -> Listing:
    """Upstox names an instrument by its key ("NSE_EQ|INE009A01021"), which is also its quote key."""
    key = str(row.get("instrument_token") or "")
    return Listing(str(row.get("trading_symbol") or row.get("tradingsymbol") or ""), key, key)


def position_from_upstox(row: Mapping[str, Any]) -> Position:
    listing = _listing(row)
    return position_from_row(
        row, listing, product_from_upstox(str(row.get("product") or ""), listing.instrument)
    )


def holding_from_upstox(row: Mapping[str, Any]) -> Holding:
    return holding_from_row(row, _listing(row), used_quantity=as_int(row.get("cnc_used_quantity")))


def master_tick_unit(master: Sequence[Mapping[str, Any]]) -> Literal["paise", "rupees"]:
    """Which unit a master file's tick sizes are in.

    Upstox's files give 5.0 for a 0.05-rupee tick. Rupee ticks are mostly 0.05 or 0.01 and paise ticks
    mostly 5 or 1, so the typical (median) tick of the file tells them apart.
    """
    ticks = [as_float(row.get("tick_size")) for row in master]
    positive = [tick for tick in ticks if tick > 0]
    if not positive:
        return "rupees"
    return "paise" if statistics.median(positive) >= 1.0 else "rupees"


def instruments_from_master(
    master: Sequence[Mapping[str, Any]], tick_size_unit: TickUnit = "auto"
) -> list[Instrument]:
    """Rows of the Upstox instrument master as ``Instrument``s, tick sizes in rupees."""
    unit = master_tick_unit(master) if tick_size_unit == "auto" else tick_size_unit
    divisor = 100.0 if unit == "paise" else 1.0
    result = []
    for row in master:
        key = row.get("instrument_key")
        if not key:
            continue
        result.append(
            Instrument(
                instrument=str(key),
                symbol=str(row.get("trading_symbol") or row.get("tradingsymbol") or ""),
                exchange=str(row.get("exchange") or ""),
                segment=str(row.get("segment") or segment_of(key)),
                instrument_type=str(row.get("instrument_type") or ""),
                name=str(row.get("name") or ""),
                tick_size=round(as_float(row.get("tick_size")) / divisor, 8),
                lot_size=as_int(row.get("lot_size")),
                quote_key=str(key),
                expiry=_expiry(row.get("expiry")),
                strike=as_float(row.get("strike_price")),
            )
        )
    return result


def _expiry(value: object) -> date | None:
    """Expiry as epoch milliseconds (the master) or "YYYY-MM-DD"; the date in India."""
    if value in (None, "", 0):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value) / 1000.0, tz=IST).date()
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _upstox_market_protection(value: float | None) -> float | None:
    # OrderApiV3's PlaceOrderV3Request and ModifyOrderRequest both carry `market_protection` (SDK 2.x).
    if value is not None and value != -1 and not 0 <= value <= 25:
        raise ValueError(f"market_protection: -1, 0-25 or None, got {value!r}")
    return int(value) if value is not None and float(value).is_integer() else value
