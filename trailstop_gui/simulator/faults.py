"""Injectable faults: HTTP errors, slow responses, malformed replies, lost replies, rejections, partial
fills, fill delays, a lagging order book, freeze quantities, stalled sockets, network latency.

The state lives here; ``POST /_sim/fault`` parses a JSON spec with :func:`parse_fault` and the control API
applies it. One-shot actions (drop sockets, expire tokens, price gaps) are carried out by the control API.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

HTTP_FAULT = "http_error"
SLOW = "slow"
REJECT_ORDERS = "reject_orders"
PARTIAL_FILL = "partial_fill"
FILL_DELAY = "fill_delay"
STALL_WS = "stall_ws"
DROP_WS = "drop_ws"
EXPIRE_TOKENS = "expire_tokens"
PRICE_GAP = "price_gap"
MALFORMED = "malformed"
LOST_REPLY = "lost_reply"
BOOK_LAG = "book_lag"
FREEZE_QUANTITY = "freeze_quantity"
LATENCY = "latency"
UPDATE_DISORDER = "update_disorder"
CLEAR = "clear"
KINDS = (
    HTTP_FAULT,
    SLOW,
    REJECT_ORDERS,
    PARTIAL_FILL,
    FILL_DELAY,
    STALL_WS,
    DROP_WS,
    EXPIRE_TOKENS,
    PRICE_GAP,
    MALFORMED,
    LOST_REPLY,
    BOOK_LAG,
    FREEZE_QUANTITY,
    LATENCY,
    UPDATE_DISORDER,
    CLEAR,
)
# How a malformed reply is malformed: its lists become null, a field goes missing, a number becomes a string.
MALFORMED_MODES = ("null_list", "missing_field", "string_number")
REQUEST_KINDS = (HTTP_FAULT, SLOW, MALFORMED, LOST_REPLY)

DEFAULT_REJECT_REASON = (
    "RMS:Margin Exceeds,Required:0, Available:0 for entity account-DEMO across exchange across "
    "segment across product"
)


class FaultError(ValueError):
    """A fault spec the simulator cannot understand."""


@dataclass(slots=True)
class RequestFault:
    """Matches HTTP requests by path prefix and method; fires ``count`` times or with ``probability``."""

    kind: str  # http_error, slow, malformed or lost_reply
    status: int = 0
    seconds: float = 0.0
    message: str | None = None
    count: int | None = 1
    probability: float | None = None
    path: str | None = None
    method: str | None = None
    phase: str = "before"  # before: the request is not carried out; after: it is, then the fault
    retry_after: str | None = None  # sent verbatim as the Retry-After header (may be "inf" or "-1")
    mode: str | None = None  # malformed: one of MALFORMED_MODES
    field: str | None = None  # malformed: the row field to drop or spell as a string
    value: str | None = None  # malformed string_number: the text sent (None: the number as text)

    def matches(self, method: str, path: str) -> bool:
        if self.path is not None and not path.startswith(self.path):
            return False
        return self.method is None or self.method == method.upper()


@dataclass(slots=True)
class OrderRejection:
    reason: str
    count: int
    broker: str | None = None


@dataclass(slots=True)
class PartialFill:
    ratio: float
    count: int
    rest_after: float | None = None  # seconds until the remainder fills; None: it rests until cancelled


class Faults:
    """The faults in force. Used on the simulator's loop thread only."""

    def __init__(self, rng: random.Random, clock: Any = time.monotonic) -> None:
        self._rng = rng
        self._clock = clock
        self.request_faults: list[RequestFault] = []
        self.rejections: list[OrderRejection] = []
        self.partials: list[PartialFill] = []
        self.fill_delay: float | None = None
        # Orders, trades and positions as they were this many seconds ago (order updates are not late);
        # ``orders_lag``: the order book, order history and trades by a lag of their own (None: the same).
        self.book_lag: float | None = None
        self.orders_lag: float | None = None
        self.freeze: dict[str, int] = {}  # symbol ("NSE:INFY") -> freeze quantity, over the listed one
        # symbol -> refusals left before the lowered freeze quantity is revised back to the listed one
        self.freeze_refusals: dict[str, int] = {}
        # The network's round trip (seconds): half on the way to the broker, half on the way back. Every
        # request and every feed frame pays it, as from a home line to the broker's servers.
        self.latency = 0.0
        # Order updates on the streams repeated and out of order (simulator/update_disorder.py).
        self.update_disorder = False
        self._stall_until: float | None = None

    # -- queries used by the server and the exchange ---------------------------------------------

    def freeze_refused(self, symbol: str) -> None:
        """An order of ``symbol`` was refused above its lowered freeze quantity. With ``refusals`` the
        limit is revised back to the listed one after that many refusals: the exchanges revise freeze
        limits, and a limit one check applied may no longer hold for the next (what the app then hears
        is Kite's "Quantity should be greater than or equal to N for order slicing")."""
        left = self.freeze_refusals.get(symbol)
        if left is None:
            return
        if left <= 1:
            self.freeze_refusals.pop(symbol, None)
            self.freeze.pop(symbol, None)
        else:
            self.freeze_refusals[symbol] = left - 1

    def take_request_fault(self, kind: str, method: str, path: str) -> RequestFault | None:
        for fault in self.request_faults:
            if fault.kind != kind or not fault.matches(method, path):
                continue
            if fault.probability is not None and self._rng.random() >= fault.probability:
                continue
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self.request_faults.remove(fault)
            return fault
        return None

    def take_rejection(self, broker: str) -> str | None:
        for rejection in self.rejections:
            if rejection.broker in (None, broker):
                rejection.count -= 1
                if rejection.count <= 0:
                    self.rejections.remove(rejection)
                return rejection.reason
        return None

    def take_partial_fill(self) -> PartialFill | None:
        if not self.partials:
            return None
        partial = self.partials[0]
        partial.count -= 1
        if partial.count <= 0:
            self.partials.pop(0)
        return partial

    @property
    def one_way(self) -> float:
        """Seconds a message takes in one direction under the latency fault (0 without it)."""
        return self.latency / 2

    def now(self) -> float:
        return float(self._clock())

    @property
    def ws_stalled(self) -> bool:
        return self._stall_until is not None and self._clock() < self._stall_until

    def stall(self, seconds: float | None) -> None:
        self._stall_until = math.inf if seconds is None else self._clock() + seconds

    # -- administration --------------------------------------------------------------------------

    def add(self, spec: dict[str, Any]) -> None:
        """Record a stateful fault from a spec already checked by :func:`parse_fault`."""
        kind = spec["fault"]
        if kind in REQUEST_KINDS:
            self.request_faults.append(
                RequestFault(
                    kind=kind,
                    status=spec.get("status", 0),
                    seconds=spec.get("seconds", 0.0),
                    message=spec.get("message"),
                    count=spec.get("count"),
                    probability=spec.get("probability"),
                    path=spec.get("path"),
                    method=spec.get("method"),
                    phase=spec.get("phase", "before" if kind == HTTP_FAULT else "after"),
                    retry_after=spec.get("retry_after"),
                    mode=spec.get("mode"),
                    field=spec.get("field"),
                    value=spec.get("value"),
                )
            )
        elif kind == REJECT_ORDERS:
            self.rejections.append(OrderRejection(spec["reason"], spec["count"], spec.get("broker")))
        elif kind == PARTIAL_FILL:
            self.partials.append(PartialFill(spec["ratio"], spec["count"], spec.get("rest_after")))
        elif kind == FILL_DELAY:
            self.fill_delay = spec["seconds"]
        elif kind == BOOK_LAG:
            self.book_lag = spec["seconds"]
            self.orders_lag = spec.get("orders")
        elif kind == FREEZE_QUANTITY:
            self.freeze[spec["symbol"]] = spec["quantity"]
            self.freeze_refusals.pop(spec["symbol"], None)
            if spec.get("refusals") is not None:
                self.freeze_refusals[spec["symbol"]] = spec["refusals"]
        elif kind == STALL_WS:
            self.stall(spec.get("seconds"))
        elif kind == LATENCY:
            self.latency = spec["seconds"]
        elif kind == UPDATE_DISORDER:
            self.update_disorder = True
        else:
            raise FaultError(f"{kind} is an action, not a standing fault")

    def clear(self, kind: str | None = None) -> None:
        if kind in (None, *REQUEST_KINDS):
            self.request_faults = [f for f in self.request_faults if kind is not None and f.kind != kind]
        if kind in (None, REJECT_ORDERS):
            self.rejections.clear()
        if kind in (None, PARTIAL_FILL):
            self.partials.clear()
        if kind in (None, FILL_DELAY):
            self.fill_delay = None
        if kind in (None, BOOK_LAG):
            self.book_lag = None
            self.orders_lag = None
        if kind in (None, FREEZE_QUANTITY):
            self.freeze.clear()
            self.freeze_refusals.clear()
        if kind in (None, STALL_WS):
            self._stall_until = None
        if kind in (None, LATENCY):
            self.latency = 0.0
        if kind in (None, UPDATE_DISORDER):
            self.update_disorder = False

    def describe(self) -> dict[str, Any]:
        remaining = None
        if self._stall_until is not None:
            remaining = None if math.isinf(self._stall_until) else max(0.0, self._stall_until - self._clock())
        return {
            "requests": [asdict(f) for f in self.request_faults],
            "reject_orders": [asdict(r) for r in self.rejections],
            "partial_fill": [asdict(p) for p in self.partials],
            "fill_delay": self.fill_delay,
            "book_lag": self.book_lag,
            "orders_lag": self.orders_lag,
            "freeze_quantity": dict(self.freeze),
            "ws_stalled": self.ws_stalled,
            "ws_stall_remaining": remaining,
            "latency": self.latency,
            "update_disorder": self.update_disorder,
        }


# -- parsing -----------------------------------------------------------------------------------


def parse_fault(body: object) -> dict[str, Any]:
    """Check a ``POST /_sim/fault`` body and return it normalised; raise FaultError on anything odd."""
    if not isinstance(body, dict):
        raise FaultError("the body must be a JSON object")
    kind = body.get("fault")
    if kind not in KINDS:
        raise FaultError(f"`fault` must be one of {', '.join(KINDS)}")
    spec: dict[str, Any] = {"fault": kind}
    if kind in (HTTP_FAULT, SLOW, LOST_REPLY):
        if kind == HTTP_FAULT:
            spec["status"] = _int(body, "status", required=True, low=400, high=599)
            spec["message"] = _str(body, "message")
            spec["retry_after"] = _header_value(body, "retry_after")
        elif kind == SLOW:
            spec["seconds"] = _number(body, "seconds", required=True, low=0.0, high=600.0)
        spec["probability"] = _number(body, "probability", low=0.0, high=1.0)
        count = _int(body, "count", low=1)
        # With a probability and no count the fault stays until cleared; otherwise it fires once by default.
        spec["count"] = count if count is not None or spec["probability"] is not None else 1
        spec["path"] = _str(body, "path")
        method = _str(body, "method")
        spec["method"] = method.upper() if method else None
        phase = body.get("phase", "before" if kind == HTTP_FAULT else "after")
        if phase not in ("before", "after"):
            raise FaultError("`phase` must be before or after")
        if kind == LOST_REPLY and phase != "after":
            raise FaultError("a lost reply is always lost after the request was carried out")
        spec["phase"] = phase
    elif kind == MALFORMED:
        mode = body.get("mode", "null_list")
        if mode not in MALFORMED_MODES:
            raise FaultError(f"`mode` must be one of {', '.join(MALFORMED_MODES)}")
        spec["mode"] = mode
        spec["field"] = _str(body, "field") or "quantity"
        value = body.get("value")
        if value is not None and not isinstance(value, str):
            raise FaultError("`value` must be a string")
        spec["value"] = value
        spec["path"] = _str(body, "path", required=True)
        method = _str(body, "method")
        spec["method"] = method.upper() if method else None
        spec["probability"] = _number(body, "probability", low=0.0, high=1.0)
        count = _int(body, "count", low=1)
        spec["count"] = count if count is not None or spec["probability"] is not None else 1
        spec["phase"] = "after"
    elif kind == REJECT_ORDERS:
        spec["count"] = _int(body, "count", low=1) or 1
        spec["reason"] = _str(body, "reason") or DEFAULT_REJECT_REASON
        spec["broker"] = _broker(body)
    elif kind == PARTIAL_FILL:
        ratio = _number(body, "ratio", low=0.0, high=1.0)
        spec["ratio"] = 0.5 if ratio is None else ratio
        if not 0 < spec["ratio"] < 1:
            raise FaultError("`ratio` must be between 0 and 1 (exclusive)")
        spec["count"] = _int(body, "count", low=1) or 1
        spec["rest_after"] = _number(body, "rest_after", low=0.0, high=600.0)
    elif kind in (FILL_DELAY, BOOK_LAG):
        spec["seconds"] = _number(body, "seconds", required=True, low=0.0, high=600.0)
        if kind == BOOK_LAG:
            spec["orders"] = _number(body, "orders", low=0.0, high=600.0)
    elif kind == FREEZE_QUANTITY:
        spec["symbol"] = _str(body, "symbol", required=True)
        spec["quantity"] = _int(body, "quantity", required=True, low=1)
        spec["refusals"] = _int(body, "refusals", low=1)
    elif kind == STALL_WS:
        spec["seconds"] = _number(body, "seconds", low=0.0, high=3600.0)
    elif kind == LATENCY:
        spec["seconds"] = _number(body, "seconds", required=True, low=0.0, high=10.0)
    elif kind == DROP_WS:
        mode = body.get("mode", "abort")
        if mode not in ("abort", "close"):
            raise FaultError("`mode` must be abort or close")
        spec["mode"] = mode
        spec["broker"] = _broker(body)
    elif kind == EXPIRE_TOKENS:
        spec["broker"] = _broker(body)
    elif kind == PRICE_GAP:
        spec["symbol"] = _str(body, "symbol", required=True)
        spec["percent"] = _number(body, "percent", required=True, low=-99.0, high=1000.0)
    elif kind == CLEAR:
        what = body.get("kind")
        if what is not None and what not in KINDS:
            raise FaultError(f"`kind` must be one of {', '.join(KINDS)}")
        spec["kind"] = what
    return spec


def _header_value(body: dict[str, Any], name: str) -> str | None:
    """A header sent as given: a number, or any text (a real server may send "3600", "inf" or a date)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FaultError(f"`{name}` must be a number or a string")
    text = str(value).strip()
    if not text or not text.isprintable() or len(text) > 100:
        raise FaultError(f"`{name}` must be a short printable value")
    return text


def _broker(body: dict[str, Any]) -> str | None:
    broker = body.get("broker")
    if broker not in (None, "kite", "upstox"):
        raise FaultError("`broker` must be kite or upstox")
    return broker


def _str(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise FaultError(f"`{name}` is required")
        return None
    if not isinstance(value, str) or not value:
        raise FaultError(f"`{name}` must be a non-empty string")
    return value


def _number(
    body: dict[str, Any], name: str, required: bool = False, low: float = -math.inf, high: float = math.inf
) -> float | None:
    value = body.get(name)
    if value is None:
        if required:
            raise FaultError(f"`{name}` is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultError(f"`{name}` must be a number")
    if not low <= value <= high:
        raise FaultError(f"`{name}` must be between {low} and {high}")
    return float(value)


def _int(
    body: dict[str, Any], name: str, required: bool = False, low: int = 0, high: int = 10**9
) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise FaultError(f"`{name}` is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultError(f"`{name}` must be an integer")
    if not low <= value <= high:
        raise FaultError(f"`{name}` must be between {low} and {high}")
    return value


# -- malformed replies -------------------------------------------------------------------------


def malform(body: Any, fault: RequestFault) -> Any:
    """The JSON body of a successful reply, spoilt the way ``fault`` says (a new object; ``body`` is kept).

    Only the envelope's ``data`` is touched: ``null_list`` turns every list in it into null (Kite's
    ``{"net": null, "day": null}``, Upstox's ``"data": null``); ``missing_field`` drops ``field`` from every
    row; ``string_number`` sends ``field`` as a string, its number as text or ``value``.
    """
    if not isinstance(body, dict) or "data" not in body:
        return body
    spoilt = dict(body)
    spoilt["data"] = _malform_data(body["data"], fault)
    return spoilt


def _malform_data(data: Any, fault: RequestFault) -> Any:
    if fault.mode == "null_list":
        if isinstance(data, list):
            return None
        if isinstance(data, dict):
            return {key: None if isinstance(value, list) else value for key, value in data.items()}
        return data
    if isinstance(data, list):
        return [_malform_row(row, fault) for row in data]
    if isinstance(data, dict):
        if fault.field in data:
            return _malform_row(data, fault)  # one order (Upstox /v2/order/details)
        # Kite's positions: {"net": [...], "day": [...]}
        return {key: _malform_data(v, fault) if isinstance(v, list) else v for key, v in data.items()}
    return data


def _malform_row(row: Any, fault: RequestFault) -> Any:
    if not isinstance(row, dict) or fault.field is None or fault.field not in row:
        return row
    row = dict(row)
    if fault.mode == "missing_field":
        del row[fault.field]
    elif fault.mode == "string_number":
        row[fault.field] = fault.value if fault.value is not None else str(row[fault.field])
    return row
