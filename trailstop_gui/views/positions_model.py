"""The protected positions as a Qt table model: plain rows keyed by protection id, updates coalesced.

Snapshots arrive up to ten times a second per feed and touch many rows at once. They only change plain
Python fields and mark rows dirty; a single-shot QTimer then emits ONE dataChanged covering the dirty
span, so the view repaints at most ``1000 / flush_interval_ms`` times a second however fast prices move.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from PySide6.QtCore import (
    QAbstractItemModel,
    QAbstractTableModel,
    QModelIndex,
    QModelRoleData,
    QModelRoleDataSpan,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QFont

from trailstop_gui.models.domain import (
    InstrumentId,
    Product,
    Protection,
    SafetyKind,
    SafetyState,
    Side,
    Status,
    TrailRule,
    round_down,
    round_up,
    safety_level,
)
from trailstop_gui.models.lifecycle import TERMINAL
from trailstop_gui.views import theme

AnyIndex = QModelIndex | QPersistentModelIndex


class Column(enum.IntEnum):
    SYMBOL = 0
    SIDE = 1
    QTY = 2
    PRODUCT = 3
    ENTRY = 4
    LTP = 5
    STOP = 6
    DISTANCE = 7
    PNL = 8
    STATUS = 9
    SAFETY = 10  # shown beside Stop (the view moves it there); last here, so older column numbers hold


HEADERS = {
    Column.SYMBOL: "Symbol",
    Column.SIDE: "Side",
    Column.QTY: "Qty",
    Column.PRODUCT: "Product",
    Column.ENTRY: "Entry",
    Column.LTP: "LTP",
    Column.STOP: "Stop",
    Column.SAFETY: "Safety",
    Column.DISTANCE: "To stop",
    Column.PNL: f"P&L ({theme.RUPEE})",
    Column.STATUS: "Status",
}

HEADER_TIPS = {
    Column.DISTANCE: (
        "How far the price is from the stop, in percent of the price. For a stop on the underlying"
        " (an option trailing NIFTY 50, say): the underlying's price from its stop"
    ),
    Column.PNL: "Unrealised profit or loss at the last traded price (realised once closed)",
    Column.STOP: "The trailing stop: it only ever moves in your favour",
    Column.LTP: "Last traded price",
    Column.SAFETY: "The stop held at the broker behind the trailing stop: it holds while TrailStop is off",
}

NUMERIC = frozenset(
    {Column.QTY, Column.ENTRY, Column.LTP, Column.STOP, Column.SAFETY, Column.DISTANCE, Column.PNL}
)

# Custom roles: raw values for sorting, the protection id and its state for views and tests.
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
PID_ROLE = Qt.ItemDataRole.UserRole + 2
STATE_ROLE = Qt.ItemDataRole.UserRole + 3

# A table sorted on a live column is re-sorted at most this often (seconds): rows that jumped ten times a
# second could not be read, and sorting is the costly part of an update.
RESORT_INTERVAL_S = 1.0
LIVE_COLUMNS = frozenset({Column.LTP, Column.STOP, Column.DISTANCE, Column.PNL})

# A protection that ended stays in view this long (seconds) before "Show closed" is needed to see it: long
# enough to see it close with its realised P&L, short enough that the table is about what is open.
RECENTLY_CLOSED_S = 20.0

# Within this distance of the stop (percent) the distance is shown as a warning.
NEAR_STOP_PERCENT = 0.5

# Why an account's orders cannot go out although its feed is live (services/route_monitor.py's RouteState):
# its stops still fire, but their exits would be refused. Shown in the same red as "not watched".
ROUTE_PROBLEMS = {
    "refused": "orders refused (IP not registered)",
    "unreachable": "order route unreachable",
}
ROUTE_PROBLEM_WORDS = frozenset(ROUTE_PROBLEMS.values())

# A protection whose account has no session this run (a --demo run loads only the simulator's accounts; an
# earlier run's simulator account is not loaded again): nothing watches it, nothing can send its exit.
ACCOUNT_NOT_LOADED = "account not loaded this run"

# States that need a live feed (or a connected broker) to do their job: without one they are "not watched".
WATCH_NEEDED = frozenset({Status.PENDING, Status.OPEN, Status.TRIGGERED, Status.EXITING})


class RowState(enum.StrEnum):
    """What a trader needs to know at a glance; drives the colour of a row."""

    PENDING = "pending"
    NOT_WATCHED = "not watched"  # the account is offline, needs a login or its feed is down: nothing fires
    ARMED = "armed"
    PAUSED = "paused"
    IN_PROGRESS = "in progress"
    FAILED = "failed"
    CLOSED = "closed"


STATUS_TEXT = {
    Status.PENDING: "Pending entry",
    Status.OPEN: "Armed",
    Status.TRIGGERED: "Triggered",
    Status.EXITING: "Exiting",
    Status.EXIT_FAILED: "Exit failed",
    Status.CLOSED: "Closed",
    Status.CANCELLED: "Cancelled",
    Status.REJECTED: "Rejected",
    Status.REMOVED: "Removed",
}

SAFETY_TEXT = {
    SafetyState.OFF: "",
    SafetyState.PLACING: "placing",
    SafetyState.PLACED: "placed",
    SafetyState.MOVING: "moving",
    SafetyState.MISSING: "missing",
    SafetyState.FIRED: "fired",
    SafetyState.EXIT: "exit",
    SafetyState.REMOVED: "removed",
}

SAFETY_EXPLAIN = {
    SafetyState.PLACING: "Being placed at the broker.",
    SafetyState.PLACED: "Held at the broker.",
    SafetyState.MOVING: "Being moved at the broker to follow the stop.",
    SafetyState.MISSING: "Not at the broker although it should be: TrailStop places it again soon.",
    SafetyState.FIRED: "The broker's stop fired and closed the position.",
    SafetyState.EXIT: "Turned into TrailStop's own exit.",
    SafetyState.REMOVED: "Taken away from the broker.",
}


@dataclass(slots=True)
class PositionRow:
    """One protection as the table shows it; LTP comes from snapshots, the rest from the store."""

    pid: int
    account_id: int
    symbol: str
    exchange: str
    instrument: InstrumentId
    side: Side
    product: Product
    quantity: int
    entry: float | None
    stop: float | None
    status: Status
    paused: bool
    rule: TrailRule
    tick_size: float
    reason: str = ""
    exit_price: float | None = None
    exit_quantity: int | None = None
    ltp: float | None = None
    closed_at: float | None = None  # epoch seconds, once ended
    safety_enabled: bool = False
    safety_state: SafetyState = SafetyState.OFF
    safety_kind: SafetyKind = SafetyKind.NONE
    safety_level: float | None = None  # the trigger the broker holds now
    safety_buffer_percent: float = 0.0
    safety_buffer_ticks: int = 0
    not_watched: str = ""  # why the account's feed does not watch this protection now ("" while it does)
    # A stop on the underlying (services/underlying.py): the stop is a price of that instrument, watched
    # with the trader's view of it as the side; the distance is measured there, not on this row's LTP.
    underlying: str = ""  # its symbol ("" for none)
    underlying_instrument: InstrumentId | None = None
    underlying_view: Side | None = None
    underlying_ltp: float | None = None

    @classmethod
    def from_protection(cls, p: Protection, ltp: float | None = None) -> PositionRow:
        return cls(
            pid=p.id,
            account_id=p.account_id,
            symbol=p.symbol,
            exchange=p.exchange,
            instrument=p.engine_instrument,
            side=p.side,
            product=p.product,
            quantity=p.filled_quantity or p.quantity,
            entry=p.entry_price,
            stop=p.stop,
            status=p.status,
            paused=p.paused,
            rule=p.rule,
            tick_size=p.tick_size,
            reason=p.reason,
            exit_price=p.exit_price,
            exit_quantity=p.exit_quantity,
            ltp=ltp,
            closed_at=p.closed_at.timestamp() if p.closed_at is not None else None,
            safety_enabled=p.safety_enabled,
            safety_state=p.safety_state,
            safety_kind=p.safety_kind,
            safety_level=p.safety_level,
            safety_buffer_percent=p.safety_buffer_percent,
            safety_buffer_ticks=p.safety_buffer_ticks,
        )

    @property
    def is_long(self) -> bool:
        return self.side is Side.BUY

    @property
    def state(self) -> RowState:
        if self.not_watched and self.status in WATCH_NEEDED:
            return RowState.NOT_WATCHED
        if self.status is Status.OPEN:
            return RowState.PAUSED if self.paused else RowState.ARMED
        if self.status is Status.PENDING:
            return RowState.PENDING
        if self.status in (Status.TRIGGERED, Status.EXITING):
            return RowState.IN_PROGRESS
        if self.status is Status.EXIT_FAILED:
            return RowState.FAILED
        return RowState.CLOSED

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def status_text(self) -> str:
        if self.state is RowState.NOT_WATCHED:
            if self.status is Status.TRIGGERED:
                return f"Exit not sent: {self.not_watched}"
            if self.status is Status.EXITING:
                return f"Exit unconfirmed: {self.not_watched}"
            if self.not_watched in ROUTE_PROBLEM_WORDS:
                return f"Exit would fail: {self.not_watched}"  # watched, but its exit cannot go out
            return f"Not watched: {self.not_watched}"
        if self.status is Status.OPEN and self.paused:
            return "Paused: stop crossed" if self.stop_crossed() else "Paused"
        return STATUS_TEXT[self.status]

    def set_underlying(self, rule: Any) -> None:
        """The protection's stop on the underlying (an UnderlyingRule), or None."""
        if rule is None:
            self.underlying, self.underlying_instrument, self.underlying_view = "", None, None
            self.underlying_ltp = None
            return
        self.underlying = rule.symbol
        self.underlying_instrument = rule.engine_instrument
        self.underlying_view = rule.view

    @property
    def watched_price(self) -> float | None:
        """The price the stop is compared with: the underlying's for a stop on the underlying."""
        return self.underlying_ltp if self.underlying else self.ltp

    @property
    def stop_is_long(self) -> bool:
        """The stop sits below the watched price (a long, or a long view of the underlying)."""
        return self.underlying_view.is_long if self.underlying_view is not None else self.is_long

    def stop_crossed(self) -> bool:
        """The watched price is through the stop (a paused protection would exit at once on resume)."""
        price = self.watched_price
        if price is None or self.stop is None or self.status is not Status.OPEN:
            return False
        return price <= self.stop if self.stop_is_long else price >= self.stop

    def distance_percent(self) -> float | None:
        """How far the watched price must move against the trader before the stop fires, in percent."""
        price = self.watched_price
        if self.status is not Status.OPEN or price is None or self.stop is None or price <= 0:
            return None
        gap = price - self.stop if self.stop_is_long else self.stop - price
        return gap / price * 100.0

    def pnl(self) -> float | None:
        """Unrealised P&L at the LTP while the position is held; realised at the exit price once closed."""
        if self.entry is None:
            return None
        if self.status is Status.CLOSED and self.exit_price is not None:
            price, qty = self.exit_price, self.exit_quantity or self.quantity
        elif self.status in (Status.OPEN, Status.TRIGGERED, Status.EXITING, Status.EXIT_FAILED):
            if self.ltp is None:
                return None
            price, qty = self.ltp, self.quantity
        else:
            return None
        move = price - self.entry if self.is_long else self.entry - price
        return move * qty

    @property
    def safety_off(self) -> bool:
        return self.safety_state is SafetyState.OFF

    def safety_text(self) -> str:
        """The safety stop's level and state in words ("1,455.00 placed"); an em dash when off."""
        if self.safety_off:
            return theme.EM_DASH
        words = SAFETY_TEXT[self.safety_state]
        if self.safety_level is None:
            return words
        return f"{theme.format_price(self.safety_level, self.tick_size)} {words}"

    def safety_target(self) -> float | None:
        """Where the safety stop belongs for the current stop (None when off or there is no stop)."""
        if not self.safety_enabled or self.stop is None or self.stop <= 0:
            return None
        return safety_level(
            self.side, self.stop, self.tick_size, self.safety_buffer_percent, self.safety_buffer_ticks
        )

    def safety_tooltip(self) -> str:
        if self.safety_off:
            return "No broker-held safety stop for this protection."
        kind = self.safety_kind.value or "SL-M or GTT"
        buffer = (
            f"{self.safety_buffer_percent:g} % or {self.safety_buffer_ticks} ticks behind the stop,"
            " whichever is larger"
        )
        lines = [f"Broker-held safety stop ({kind}), {buffer}.", SAFETY_EXPLAIN[self.safety_state]]
        target = self.safety_target()
        if target is not None and target != self.safety_level and self.status is Status.OPEN:
            lines.append(f"For the current stop it belongs at {theme.format_price(target, self.tick_size)}.")
        return "\n".join(lines)

    def target_price(self) -> float | None:
        target = self.rule.target
        if target is None or self.entry is None:
            return None
        sign = 1.0 if self.is_long else -1.0
        raw = self.entry + sign * self.rule.amount(target, self.entry)
        return round_up(raw, self.tick_size) if self.is_long else round_down(raw, self.tick_size)

    def describe(self) -> str:
        side = "Long" if self.is_long else "Short"
        return f"{self.symbol} {side} {self.quantity} {self.product.value}"


class PositionsModel(QAbstractTableModel):
    """Protections keyed by id, one row each; LTP and stop refreshed from snapshots, coalesced.

    The model sorts itself (Python's sort over one key per row, not a Qt comparison calling back into
    Python for every pair): the proxy in front only filters. Sorting on a live column is throttled.
    """

    states_changed = Signal()  # a row's state changed (e.g. it closed): filters must look again

    def __init__(self, parent: QObject | None = None, *, flush_interval_ms: int = 100) -> None:
        super().__init__(parent)
        self.sort_column = -1
        self.sort_order = Qt.SortOrder.AscendingOrder
        self._sorted_at = 0.0
        self._resort_timer = QTimer(self)
        self._resort_timer.setSingleShot(True)
        self._resort_timer.timeout.connect(self._resort)
        self._rows: list[PositionRow] = []
        self._index: dict[int, int] = {}  # protection id -> row
        # (account id, instrument key) -> protection ids; a snapshot without an account matches any.
        self._by_instrument: dict[tuple[int, InstrumentId], set[int]] = {}
        self._by_bare_instrument: dict[InstrumentId, set[int]] = {}
        # The same for the underlyings that stops on the underlying trail.
        self._by_underlying: dict[tuple[int, InstrumentId], set[int]] = {}
        self._by_bare_underlying: dict[InstrumentId, set[int]] = {}
        # protection id -> its stop on the underlying (UnderlyingService.rule), or None
        self._underlying_rule: Callable[[int], Any] = lambda _pid: None
        self._dirty: set[int] = set()
        self._not_watched: dict[int, str] = {}  # account id -> why its protections are not watched
        self._colors = theme.colors()
        self._brushes: dict[int, QBrush] = {}  # by the colour's RGBA
        self._bold = QFont()
        self._bold.setBold(True)
        self._italic = QFont()
        self._italic.setItalic(True)
        self.last_tick_at: float | None = None
        self._flush = QTimer(self)
        self._flush.setSingleShot(True)
        self._flush.setInterval(flush_interval_ms)
        self._flush.timeout.connect(self.flush)

    # ----------------------------------------------------------------- Qt model interface

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else _COLUMN_COUNT

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0) -> Any:
        if orientation is not Qt.Orientation.Horizontal or not 0 <= section < len(Column):
            return None
        column = Column(section)
        if role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[column]
        if role == Qt.ItemDataRole.ToolTipRole:
            return HEADER_TIPS.get(column)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return _alignment(column)
        return None

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        return _CELL_FLAGS if index.isValid() else _NO_FLAGS

    # A repaint asks seven roles of every visible cell, ten repaints a second while prices move. Each call
    # from C++ into Python costs more than the answer, so the view's delegate gets all seven in one call
    # (multiData, forwarded by the proxy too): through the proxy's per-role data() it was about 900 calls a
    # repaint, plus two rowCount/columnCount calls each, and a repaint of the table took 8 ms on an idle
    # 2-core machine and 18-25 ms beside the feed threads. Roles the model never answers return at once,
    # the column is a tuple lookup (not an enum call), and brushes and fonts are made once.
    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        kind = _ROLE_KIND.get(role)
        if kind is None:
            return None
        position = index.row()
        rows = self._rows
        if not 0 <= position < len(rows) or not index.isValid():
            return None
        return self._value(rows[position], _COLUMNS[index.column()], kind)

    def multiData(self, index: AnyIndex, roleDataSpan: QModelRoleDataSpan | QModelRoleData) -> None:
        """Every role the delegate asks of one cell in one call (see data)."""
        items = _role_items(roleDataSpan)
        position = index.row()
        rows = self._rows
        if not 0 <= position < len(rows) or not index.isValid():
            for item in items:
                item.clearData()
            return
        row, column = rows[position], _COLUMNS[index.column()]
        kinds = _ROLE_KIND
        for item in items:
            kind = kinds.get(item.role())
            item.setData(None if kind is None else self._value(row, column, kind))

    def _value(self, row: PositionRow, column: Column, kind: int) -> Any:
        if kind == _DISPLAY:
            return self._display(row, column)
        if kind == _FOREGROUND:
            color = self._foreground(row, column)
            return None if color is None else self._brush(color)
        if kind == _ALIGNMENT:
            return _ALIGNMENTS[column]
        if kind == _FONT:
            return self._font(row, column)
        if kind == _BACKGROUND:
            bad = row.state in (RowState.FAILED, RowState.NOT_WATCHED)
            return self._brush(self._colors.failed_bg) if bad else None
        if kind == _SORT:
            value = _sort_value(row, column)
            return -math.inf if value is None else value
        if kind == _TOOLTIP:
            return self._tooltip(row, column)
        if kind == _PID:
            return row.pid
        return row.state.value  # _STATE

    def _brush(self, color: QColor) -> QBrush:
        key = color.rgba()
        brush = self._brushes.get(key)
        if brush is None:
            brush = self._brushes[key] = QBrush(color)
        return brush

    # ----------------------------------------------------------------- cells

    @staticmethod
    def _display(row: PositionRow, column: Column) -> str:
        if column is Column.SYMBOL:
            return row.symbol
        if column is Column.SIDE:
            return "Long" if row.is_long else "Short"
        if column is Column.QTY:
            return theme.group_indian(row.quantity)
        if column is Column.PRODUCT:
            return row.product.value
        if column is Column.ENTRY:
            return theme.format_price(row.entry, row.tick_size)
        if column is Column.LTP:
            return theme.format_price(row.ltp, row.tick_size)
        if column is Column.STOP:
            return theme.format_price(row.stop, row.tick_size)
        if column is Column.SAFETY:
            return row.safety_text()
        if column is Column.DISTANCE:
            return theme.format_percent(row.distance_percent())
        if column is Column.PNL:
            return theme.format_inr(row.pnl())
        return row.status_text

    def _foreground(self, row: PositionRow, column: Column) -> Any:
        c = self._colors
        state = row.state
        if state is RowState.CLOSED:
            return c.closed
        if column is Column.STATUS:
            if state is RowState.PAUSED and row.stop_crossed():
                return c.progress  # resuming would exit at once: a warning, not a calm "paused"
            return {
                RowState.NOT_WATCHED: c.failed,
                RowState.ARMED: c.armed,
                RowState.PAUSED: c.paused,
                RowState.PENDING: c.pending,
                RowState.IN_PROGRESS: c.progress,
                RowState.FAILED: c.failed,
            }[state]
        if column is Column.PNL:
            pnl = row.pnl()
            if pnl is None or abs(pnl) < 0.005:
                return None
            return c.profit if pnl > 0 else c.loss
        if column is Column.SIDE:
            return c.buy if row.is_long else c.sell
        if column is Column.SAFETY:
            return self._safety_foreground(row)
        if column is Column.DISTANCE:
            distance = row.distance_percent()
            if distance is not None and distance < NEAR_STOP_PERCENT:
                return c.progress
        if state is RowState.PAUSED and column is not Column.SYMBOL:
            return c.muted
        return None

    def _safety_foreground(self, row: PositionRow) -> Any:
        c = self._colors
        state = row.safety_state
        if state is SafetyState.MISSING:
            return c.progress  # the warning colour (as near the stop)
        if state in (SafetyState.FIRED, SafetyState.EXIT, SafetyState.REMOVED):
            return c.closed
        if state in (SafetyState.OFF, SafetyState.PLACING, SafetyState.MOVING):
            return c.muted
        return c.muted if row.state is RowState.PAUSED else None  # placed: as the rest of the row

    def _font(self, row: PositionRow, column: Column) -> QFont | None:
        alarming = row.state in (RowState.FAILED, RowState.NOT_WATCHED)
        if column is Column.SYMBOL or (column is Column.STATUS and alarming):
            return self._bold
        if column is Column.STATUS and row.state is RowState.CLOSED:
            return self._italic
        return None

    @staticmethod
    def _tooltip(row: PositionRow, column: Column) -> str | None:
        if column is Column.SYMBOL:
            return f"{row.exchange}:{row.symbol} · trail {row.rule.describe()} · protection #{row.pid}"
        if column is Column.STATUS:
            explain = {
                RowState.NOT_WATCHED: (
                    f"NOT WATCHED ({row.not_watched}): no stop trails or fires until the account is live"
                    " again. Log in or check the connection; the reconciler catches up as soon as it is."
                ),
                RowState.ARMED: "The stop is armed and trails the price.",
                RowState.PAUSED: (
                    "Paused: the stop does not trail and will not fire until resumed; the price stays live."
                    + (
                        " The price is through the stop: resuming exits at once."
                        if row.stop_crossed()
                        else ""
                    )
                ),
                RowState.PENDING: "The entry order is working; the stop arms when it fills.",
                RowState.IN_PROGRESS: "The stop fired; the exit order is being placed or filled.",
                RowState.FAILED: "The exit order failed: retry it, or close the position at the broker.",
                RowState.CLOSED: "This protection has ended.",
            }[row.state]
            reason = f" Reason: {row.reason}." if row.reason else ""
            exit_text = ""
            if row.exit_price is not None:
                exit_text = f" Exit at {theme.format_price(row.exit_price, row.tick_size)}."
            return explain + reason + exit_text
        if column is Column.SAFETY:
            return row.safety_tooltip()
        if row.underlying and column in (Column.STOP, Column.DISTANCE):
            view = "long" if row.stop_is_long else "short"
            at = (
                "" if row.underlying_ltp is None else f" (now {theme.format_price(row.underlying_ltp, 0.05)})"
            )
            if column is Column.STOP:
                return f"A price of {row.underlying}, not of {row.symbol}: the stop trails it ({view} view)"
            return (
                f"Measured on {row.underlying}{at}, whose price the stop trails; the exit sells {row.symbol}"
            )
        if column is Column.PNL:
            return "Realised" if row.status is Status.CLOSED else "Unrealised, at the last traded price"
        return None

    # ----------------------------------------------------------------- rows

    def rows(self) -> list[PositionRow]:
        return list(self._rows)

    def rows_view(self) -> list[PositionRow]:
        """The rows themselves, not a copy (for the proxy's filter, called once per row)."""
        return self._rows

    def row_for(self, pid: int) -> PositionRow | None:
        position = self._index.get(pid)
        return None if position is None else self._rows[position]

    def row_number(self, pid: int) -> int | None:
        return self._index.get(pid)

    def set_not_watched(self, account_id: int, why: str | None) -> None:
        """Say that an account's protections are not watched (``why``), or are again (None)."""
        text = why or ""
        if self._not_watched.get(account_id, "") == text:
            return
        if text:
            self._not_watched[account_id] = text
        else:
            self._not_watched.pop(account_id, None)
        changed = False
        for position, row in enumerate(self._rows):
            if row.account_id == account_id and row.not_watched != text:
                before = row.state
                row.not_watched = text
                self._mark(position)
                changed = changed or row.state is not before
        if changed:
            self.states_changed.emit()

    def not_watched(self, account_id: int) -> str | None:
        return self._not_watched.get(account_id)

    def _row(self, p: Protection, ltp: float | None = None) -> PositionRow:
        row = PositionRow.from_protection(p, ltp)
        row.not_watched = self._not_watched.get(p.account_id, "")
        row.set_underlying(self._underlying_rule(p.id))
        return row

    def set_underlying_rules(self, rule_of: Callable[[int], Any]) -> None:
        """Where stops on the underlying come from (``UnderlyingService.rule``); rows shown are updated."""
        self._underlying_rule = rule_of
        for row in self._rows:
            row.set_underlying(rule_of(row.pid))
        self._reindex_instruments()
        if self._rows:
            self._dirty.update(range(len(self._rows)))
            self.flush()

    def load(self, protections: Iterable[Protection]) -> None:
        """Replace every row (at start-up)."""
        self.beginResetModel()
        self._rows = [self._row(p) for p in protections]
        self._rows.sort(key=self._sort_key(), reverse=self._descending())
        self._reindex()
        self._dirty.clear()
        self.endResetModel()
        self.states_changed.emit()

    def upsert(self, p: Protection) -> None:
        """Add the protection's row, or refresh it from the stored protection (keeping the live LTP)."""
        position = self._index.get(p.id)
        if position is None:
            at = len(self._rows)
            self.beginInsertRows(QModelIndex(), at, at)
            self._rows.append(self._row(p))
            self._index[p.id] = at
            self._add_instrument(self._rows[at])
            self.endInsertRows()
            self._resort()
            return
        old = self._rows[position]
        new = self._row(p, ltp=old.ltp)
        if new.underlying_instrument == old.underlying_instrument:
            new.underlying_ltp = old.underlying_ltp
        if (old.account_id, old.instrument, old.underlying_instrument) != (
            new.account_id,
            new.instrument,
            new.underlying_instrument,
        ):
            self._reindex_instruments()
        self._rows[position] = new
        self._mark(position)
        if old.state is not new.state:
            self.states_changed.emit()

    def apply_snapshot(self, snapshot: Mapping[str, Any]) -> list[int]:
        """Take a feed snapshot's quotes and stops; returns the protection ids it touched."""
        account_id = snapshot.get("account_id")
        touched: list[int] = []
        quotes: Mapping[InstrumentId, Any] = snapshot.get("quotes") or {}
        latest = self.last_tick_at
        for instrument, quote in quotes.items():
            if account_id is None:
                pids = self._by_bare_instrument.get(instrument, ())
            else:
                pids = self._by_instrument.get((account_id, instrument), ())
            at = getattr(quote, "at", None)
            if at is not None and (latest is None or at > latest):
                latest = at
            ltp = getattr(quote, "ltp", None)
            if ltp is None or not ltp > 0:
                continue
            for pid in pids:
                position = self._index[pid]
                self._rows[position].ltp = ltp
                self._dirty.add(position)
                touched.append(pid)
            if account_id is None:
                watching = self._by_bare_underlying.get(instrument, ())
            else:
                watching = self._by_underlying.get((account_id, instrument), ())
            for pid in watching:
                position = self._index[pid]
                self._rows[position].underlying_ltp = ltp
                self._dirty.add(position)
                touched.append(pid)
        self.last_tick_at = latest
        stops: Mapping[int, float] = snapshot.get("stops") or {}
        for pid, stop in stops.items():
            found = self._index.get(pid)
            if found is None:
                continue
            row = self._rows[found]
            if row.status is Status.OPEN:
                row.stop = stop
                self._dirty.add(found)
                touched.append(pid)
        if self._dirty and not self._flush.isActive():
            self._flush.start()
        return touched

    def flush(self) -> None:
        """Emit one dataChanged spanning every dirty row (called by the timer; tests may call it)."""
        self._flush.stop()
        if not self._dirty:
            return
        top, bottom = min(self._dirty), max(self._dirty)
        self._dirty.clear()
        bottom = min(bottom, len(self._rows) - 1)
        if top > bottom:
            return
        self.dataChanged.emit(self.index(top, 0), self.index(bottom, len(Column) - 1), [])
        if self.sort_column >= 0 and not self._resort_timer.isActive():
            wait = RESORT_INTERVAL_S - (time.monotonic() - self._sorted_at)
            if wait <= 0:
                self._resort()
            else:
                self._resort_timer.start(int(wait * 1000) + 1)

    # ----------------------------------------------------------------- sorting

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort by a column (-1: the order protections were created in)."""
        self.sort_column = column if 0 <= column < len(Column) else -1
        self.sort_order = order
        self._resort(force=True)

    def _descending(self) -> bool:
        return self.sort_column >= 0 and self.sort_order == Qt.SortOrder.DescendingOrder

    def _sort_key(self) -> Any:
        if self.sort_column < 0:
            return lambda row: row.pid
        column = Column(self.sort_column)
        descending = self._descending()

        def key(row: PositionRow) -> tuple[bool, Any, int]:
            value = _sort_value(row, column)
            # No value sorts last either way; the id keeps equal rows in a stable order.
            missing = value is None
            return (not missing if descending else missing, 0 if missing else value, row.pid)

        return key

    def _resort(self, force: bool = False) -> None:
        self._resort_timer.stop()
        self._sorted_at = time.monotonic()
        if not self._rows:
            return
        key = self._sort_key()
        order = sorted(range(len(self._rows)), key=lambda n: key(self._rows[n]), reverse=self._descending())
        if not force and order == list(range(len(self._rows))):
            return
        self.layoutAboutToBeChanged.emit()
        new_row = {old: new for new, old in enumerate(order)}
        self._rows = [self._rows[n] for n in order]
        self._index = {row.pid: n for n, row in enumerate(self._rows)}
        self._dirty = {new_row[n] for n in self._dirty}
        persistent = self.persistentIndexList()
        self.changePersistentIndexList(
            persistent, [self.index(new_row[i.row()], i.column()) for i in persistent]
        )
        self.layoutChanged.emit()

    def set_colors(self, colors: theme.Colors) -> None:
        self._colors = colors
        if self._rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._rows) - 1, len(Column) - 1), [])

    def counts(self) -> dict[RowState, int]:
        out = dict.fromkeys(RowState, 0)
        for row in self._rows:
            out[row.state] += 1
        return out

    def total_pnl(self) -> tuple[float, float, int, int]:
        """(unrealised, realised, open rows with a price, closed rows with an exit), as Kite's total line."""
        unrealised = realised = 0.0
        priced = closed = 0
        for row in self._rows:
            pnl = row.pnl()
            if pnl is None:
                continue
            if row.status is Status.CLOSED:
                realised += pnl
                closed += 1
            else:
                unrealised += pnl
                priced += 1
        return unrealised, realised, priced, closed

    def instruments(self) -> set[tuple[int, InstrumentId]]:
        return set(self._by_instrument)

    # ----------------------------------------------------------------- internals

    def _mark(self, position: int) -> None:
        self._dirty.add(position)
        if not self._flush.isActive():
            self._flush.start()

    def _reindex(self) -> None:
        self._index = {row.pid: n for n, row in enumerate(self._rows)}
        self._reindex_instruments()

    def _reindex_instruments(self) -> None:
        self._by_instrument = {}
        self._by_bare_instrument = {}
        self._by_underlying = {}
        self._by_bare_underlying = {}
        for row in self._rows:
            self._add_instrument(row)

    def _add_instrument(self, row: PositionRow) -> None:
        self._by_instrument.setdefault((row.account_id, row.instrument), set()).add(row.pid)
        self._by_bare_instrument.setdefault(row.instrument, set()).add(row.pid)
        if row.underlying_instrument is not None:
            key = (row.account_id, row.underlying_instrument)
            self._by_underlying.setdefault(key, set()).add(row.pid)
            self._by_bare_underlying.setdefault(row.underlying_instrument, set()).add(row.pid)


def _sort_value(row: PositionRow, column: Column) -> Any:
    """The raw value a column sorts on (None: no value)."""
    if column is Column.SYMBOL:
        return row.symbol
    if column is Column.SIDE:
        return row.side.value
    if column is Column.QTY:
        return float(row.quantity)
    if column is Column.PRODUCT:
        return row.product.value
    if column is Column.ENTRY:
        return row.entry
    if column is Column.LTP:
        return row.ltp
    if column is Column.STOP:
        return row.stop
    if column is Column.SAFETY:
        return row.safety_level
    if column is Column.DISTANCE:
        return row.distance_percent()
    if column is Column.PNL:
        return row.pnl()
    return row.status_text


def _role_items(span: QModelRoleDataSpan | QModelRoleData) -> Iterable[QModelRoleData]:
    """The roles asked in one multiData call (PySide6 iterates a span; one role may come bare)."""
    if isinstance(span, QModelRoleData):
        return (span,)
    return cast(Iterable[QModelRoleData], span)


def _alignment(column: Column) -> int:
    horizontal = Qt.AlignmentFlag.AlignRight if column in NUMERIC else Qt.AlignmentFlag.AlignLeft
    return int(horizontal | Qt.AlignmentFlag.AlignVCenter)


# What data() needs on every call, worked out once (see PositionsModel.data).
_COLUMNS: tuple[Column, ...] = tuple(Column)
_COLUMN_COUNT = len(_COLUMNS)
_ALIGNMENTS = {column: _alignment(column) for column in Column}
_CELL_FLAGS = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
_NO_FLAGS = Qt.ItemFlag.NoItemFlags
_DISPLAY, _FOREGROUND, _ALIGNMENT, _FONT, _BACKGROUND, _SORT, _TOOLTIP, _PID, _STATE = range(9)
_ROLE_KIND: dict[int, int] = {
    int(Qt.ItemDataRole.DisplayRole): _DISPLAY,
    int(Qt.ItemDataRole.ForegroundRole): _FOREGROUND,
    int(Qt.ItemDataRole.TextAlignmentRole): _ALIGNMENT,
    int(Qt.ItemDataRole.FontRole): _FONT,
    int(Qt.ItemDataRole.BackgroundRole): _BACKGROUND,
    int(SORT_ROLE): _SORT,
    int(Qt.ItemDataRole.ToolTipRole): _TOOLTIP,
    int(PID_ROLE): _PID,
    int(STATE_ROLE): _STATE,
}


class PositionsProxy(QSortFilterProxyModel):
    """Sorts on raw values; hides ended protections unless asked, except those that just ended.

    A protection that ends stays in view (greyed) for ``recent_s`` seconds, so the trader sees it go
    from armed to triggered to closed, with its realised P&L, before it leaves the table.
    """

    def __init__(
        self,
        parent: QObject | None = None,
        *,
        recent_s: float = RECENTLY_CLOSED_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(parent)
        self._show_closed = False
        self.recent_s = recent_s
        self._clock = clock
        self.setSortRole(SORT_ROLE)
        # The source model sorts itself and says when a state changed: no work here on every update.
        self.setDynamicSortFilter(False)
        # Woken when the next recently closed row is due to leave (not on a slow fixed beat: a closed row
        # must not linger for minutes).
        self._expire = QTimer(self)
        self._expire.setSingleShot(True)
        self._expire.timeout.connect(self._on_expire)

    def multiData(self, index: AnyIndex, roleDataSpan: QModelRoleDataSpan | QModelRoleData) -> None:
        # QSortFilterProxyModel answers multiData with one data() per role, each a call into Python: hand
        # the whole cell to the source model's multiData instead (see PositionsModel.data).
        model = self.sourceModel()
        if isinstance(model, PositionsModel):
            model.multiData(self.mapToSource(index), roleDataSpan)
        else:
            super().multiData(index, roleDataSpan)

    def setSourceModel(self, model: QAbstractItemModel) -> None:
        previous = self.sourceModel()
        if isinstance(previous, PositionsModel):
            previous.states_changed.disconnect(self._on_expire)
        super().setSourceModel(model)
        if isinstance(model, PositionsModel):
            model.states_changed.connect(self._on_expire)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """The view's header asks the proxy; the source model does the sorting."""
        model = self.sourceModel()
        if isinstance(model, PositionsModel):
            model.sort(column, order)
        else:
            super().sort(column, order)

    @property
    def show_closed(self) -> bool:
        return self._show_closed

    def set_show_closed(self, show: bool) -> None:
        if show != self._show_closed:
            self.beginFilterChange()
            self._show_closed = show
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
            self._schedule_expiry()

    def filterAcceptsRow(self, source_row: int, source_parent: AnyIndex) -> bool:
        if self._show_closed:
            return True
        model = self.sourceModel()
        if isinstance(model, PositionsModel):
            row = model.rows_view()[source_row]
            if row.state is not RowState.CLOSED:
                return True
            return row.closed_at is not None and self._clock() - row.closed_at < self.recent_s
        state = model.data(model.index(source_row, 0, source_parent), STATE_ROLE)
        return bool(state != RowState.CLOSED.value)

    def _on_expire(self) -> None:
        if not self._show_closed:
            self.beginFilterChange()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        self._schedule_expiry()

    def next_expiry_s(self) -> float | None:
        """Seconds until the next recently closed row leaves the view (None: none is due)."""
        model = self.sourceModel()
        if self._show_closed or not isinstance(model, PositionsModel):
            return None
        now = self._clock()
        due = [
            row.closed_at + self.recent_s - now
            for row in model.rows_view()
            if row.state is RowState.CLOSED
            and row.closed_at is not None
            and now - row.closed_at < self.recent_s
        ]
        return max(0.0, min(due)) if due else None

    def _schedule_expiry(self) -> None:
        wait = self.next_expiry_s()
        if wait is None:
            self._expire.stop()
        else:
            self._expire.start(int(wait * 1000) + 50)
