"""The order form's live preview: where the stop starts, what hitting it costs, and what else rides along.

``compute_preview`` is the arithmetic (no Qt in it but the module's); ``OrderPreviewBox`` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel

from trailstop_gui.models.domain import (
    RuleKind,
    Side,
    TrailRule,
    round_down,
    round_up,
    safety_level,
    tick_decimals,
)
from trailstop_gui.models.engine import initial_stop
from trailstop_gui.models.store import InstrumentRecord

LIVE_COLOUR = "#2e7d32"


def format_inr(value: float, decimals: int = 2) -> str:
    """Rupees with Indian digit grouping: ₹1,50,000.00."""
    text = f"{abs(value):.{decimals}f}"
    whole, _, fraction = text.partition(".")
    if len(whole) > 3:
        head, groups = whole[:-3], [whole[-3:]]
        while len(head) > 2:
            groups.insert(0, head[-2:])
            head = head[:-2]
        if head:
            groups.insert(0, head)
        whole = ",".join(groups)
    sign = "−" if value < 0 and float(text) != 0 else ""
    return f"{sign}₹{whole}" + (f".{fraction}" if fraction else "")


def price_decimals(tick_size: float) -> int:
    return max(2, tick_decimals(tick_size)) if tick_size > 0 else 2


@dataclass(frozen=True)
class Preview:
    """What the order would do if it filled at ``entry``: where the stop starts and what hitting it costs."""

    entry: float
    source: str  # "last price" or "limit price"
    stop: float
    risk: float  # rupees lost if the stop is hit at the stop price
    value: float  # quantity x entry
    target: float | None
    safety: float | None = None  # where the broker-held safety stop starts (None: off)


def compute_preview(
    side: Side,
    quantity: int,
    entry: float,
    tick_size: float,
    rule: TrailRule,
    source: str,
    safety_buffer: tuple[float, int] | None = None,
) -> Preview:
    """``safety_buffer``: (percent, ticks) of the broker-held safety stop when it is on."""
    stop = initial_stop(side, entry, tick_size, rule)
    target = None
    if rule.target is not None:
        raw = entry + (1 if side.is_long else -1) * rule.amount(rule.target, entry)
        target = round_up(raw, tick_size) if side.is_long else round_down(raw, tick_size)
    safety = None
    if safety_buffer is not None and stop > 0:
        safety = safety_level(side, stop, tick_size, *safety_buffer)  # as services/safety_stop.py places it
    return Preview(entry, source, stop, quantity * abs(entry - stop), quantity * entry, target, safety)


@dataclass(frozen=True)
class PreviewInputs:
    """What the form holds, as the preview box needs it to draw."""

    record: InstrumentRecord | None
    last_price: tuple[float, str] | None  # (price, "live" | "polled")
    polled_at: str  # wall-clock time of a polled price
    preview: Preview | None
    side: Side
    quantity: int
    rule: TrailRule | None
    limit_without_price: bool  # a LIMIT order whose price is still empty
    market: bool  # a MARKET order
    safety_on: bool


class OrderPreviewBox(QFrame):
    """Last price, entry, initial stop, risk, target and safety stop, with a sentence under them."""

    def __init__(self, red: str) -> None:
        super().__init__()
        self._red = red
        self.setObjectName("preview")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet(
            "QFrame#preview { border: 1px solid palette(mid); border-radius: 6px; }"
            " QFrame#preview QLabel { border: none; }"
        )
        self.grid = grid = QGridLayout(self)
        grid.setContentsMargins(10, 8, 10, 8)
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(3)
        self.ltp_caption = QLabel("Last price")
        self.ltp_value = QLabel("—")
        self.entry_caption = QLabel("Entry (estimate)")
        self.entry_value = QLabel("—")
        self.stop_caption = QLabel("Initial stop")
        self.stop_value = QLabel("—")
        self.risk_caption = QLabel("Risk if the stop is hit")
        self.risk_value = QLabel("—")
        self.target_caption = QLabel("Target")
        self.target_value = QLabel("—")
        self.safety_caption = QLabel("Safety stop at the broker")
        self.safety_value = QLabel("—")
        self.note = QLabel("")
        self.note.setObjectName("hint")
        self.note.setWordWrap(True)
        rows = (
            (self.ltp_caption, self.ltp_value),
            (self.entry_caption, self.entry_value),
            (self.stop_caption, self.stop_value),
            (self.risk_caption, self.risk_value),
            (self.target_caption, self.target_value),
            (self.safety_caption, self.safety_value),
        )
        self.rows = 0
        for caption, value in rows:
            self.add_row(caption, value)
        grid.setColumnStretch(1, 1)
        big = self.stop_value.font()
        big.setBold(True)
        big.setPointSizeF(big.pointSizeF() * 1.15)
        self.stop_value.setFont(big)
        self.risk_value.setFont(big)

    def add_row(self, caption: QLabel, value: QLabel) -> None:
        """A caption and its value, right-aligned and selectable, above the note."""
        row = self.rows
        self.rows += 1
        self.grid.removeWidget(self.note)
        self.grid.addWidget(self.note, self.rows, 0, 1, 2)
        value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.grid.addWidget(caption, row, 0)
        self.grid.addWidget(value, row, 1)

    def draw(self, given: PreviewInputs) -> None:
        record, known, preview = given.record, given.last_price, given.preview
        decimals = price_decimals(record.tick_size) if record is not None else 2
        if known is None:
            self.ltp_value.setText("—")
        else:
            price, source = known
            if source == "live":
                where = f"<small style='color:{LIVE_COLOUR}'>● live</small>"
            else:
                where = f"<small style='color:gray'>at {given.polled_at}</small>"
            self.ltp_value.setText(f"{format_inr(price, decimals)}  {where}")
        for label in (
            self.entry_value,
            self.stop_value,
            self.risk_value,
            self.target_value,
            self.safety_value,
        ):
            label.setText("—")
        self.entry_caption.setText("Entry (estimate)")
        self.target_caption.setVisible(False)
        self.target_value.setVisible(False)
        self.safety_caption.setVisible(given.safety_on)
        self.safety_value.setVisible(given.safety_on)
        if record is None:
            self.note.setText("Choose an instrument to see where the stop starts and what it risks.")
            return
        if preview is None or given.rule is None:
            if given.limit_without_price:
                self.note.setText("Enter the limit price to see the stop and the risk.")
            elif given.market and known is None:
                self.note.setText(f"Waiting for the last price of {record.symbol}…")
            else:
                self.note.setText("Fix the fields marked in red to see the stop and the risk.")
            return
        rule = given.rule
        distance = abs(preview.entry - preview.stop)
        pct = 100.0 * distance / preview.entry if preview.entry else 0.0
        sign = "−" if given.side.is_long else "+"
        self.entry_caption.setText("Entry (estimate)" if preview.source == "last price" else "Entry (limit)")
        self.entry_value.setText(format_inr(preview.entry, decimals))
        self.stop_value.setText(
            f"{format_inr(preview.stop, decimals)}"
            # The points are on the risk line below: here only the percent, so the line is never cut.
            f"  <small style='font-weight:normal'>({sign}{pct:.2f} %)</small>"
        )
        self.risk_value.setText(
            f"<span style='color:{self._red}'>{format_inr(preview.risk)}</span>"
            f"  <small style='font-weight:normal'>"
            f"({given.quantity:,} × {distance:.{decimals}f})</small>"
        )
        if preview.target is not None:
            gain = given.quantity * abs(preview.target - preview.entry)
            self.target_caption.setVisible(True)
            self.target_value.setVisible(True)
            self.target_value.setText(
                f"{format_inr(preview.target, decimals)}  <small>(+{format_inr(gain)})</small>"
            )
        unit = "%" if rule.kind is RuleKind.PERCENT else " pts"
        where = "below" if given.side.is_long else "above"
        safety_note = ""
        if preview.safety is not None:
            gap = abs(preview.stop - preview.safety)
            self.safety_value.setText(
                f"{format_inr(preview.safety, decimals)}"
                f"  <small style='font-weight:normal'>({gap:.{decimals}f} behind the stop)</small>"
            )
            at = format_inr(preview.safety, decimals)
            safety_note = f" A safety stop at the broker starts at {at} and follows it."
        self.note.setText(
            f"The stop starts {rule.value:g}{unit} {where} the {preview.source} and follows the price."
            f"{safety_note} Position value {format_inr(preview.value)}."
        )
