"""The confirmation asked before an order is sent: what, how much, where the stop starts, what it risks."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QPushButton, QWidget

from trailstop_gui.models.domain import Side
from trailstop_gui.models.store import InstrumentRecord
from trailstop_gui.services.protection_service import EntryRequest
from trailstop_gui.views.order_form import BUY_COLOUR, SELL_COLOUR
from trailstop_gui.views.order_preview import Preview, format_inr, price_decimals
from trailstop_gui.views.rule_editor import describe_in_full


@dataclass(frozen=True)
class Confirmation:
    """Everything the question shows."""

    request: EntryRequest
    preview: Preview
    record: InstrumentRecord
    account_label: str
    limit_warning: str | None
    red: str
    extras: tuple[str, ...] = ()  # what else the protection gets (basket, exit time, underlying), as HTML
    # The stop is on the underlying (an extra says where): this instrument's own stop and risk do not apply.
    stop_on_underlying: bool = False


def confirmation_html(c: Confirmation) -> str:
    request, preview, record = c.request, c.preview, c.record
    decimals = price_decimals(record.tick_size)
    colour = BUY_COLOUR if request.side is Side.BUY else SELL_COLOUR
    price = "MARKET" if request.price is None else f"LIMIT {format_inr(request.price, decimals)}"
    lines = [
        f"<p style='font-size:13pt'><b style='color:{colour}'>{request.side.value}</b>"
        f" <b>{request.quantity:,} {record.symbol}</b> ({record.exchange})</p>",
        f"<p>{price} · {request.product.value} · {c.account_label}</p>",
    ]
    if c.stop_on_underlying:
        lines.append(f"<p>Trailing stop {describe_in_full(request.rule)}, on the underlying:</p>")
    else:
        lines += [
            f"<p>Trailing stop {describe_in_full(request.rule)}:"
            f" starts at <b>{format_inr(preview.stop, decimals)}</b>"
            f" (from the {preview.source} {format_inr(preview.entry, decimals)})</p>",
            f"<p>Risk if the stop is hit: <b style='color:{c.red}'>{format_inr(preview.risk)}</b></p>",
        ]
    if preview.target is not None and not c.stop_on_underlying:
        lines.append(f"<p>Target: {format_inr(preview.target, decimals)}</p>")
    if c.limit_warning is not None:
        lines.insert(2, f"<p style='color:{c.red}'><b>⚠ Limit {c.limit_warning}</b></p>")
    if preview.safety is not None:
        lines.append(
            f"<p>Broker-held safety stop: starts at {format_inr(preview.safety, decimals)},"
            " a little behind the trailing stop</p>"
        )
    lines.extend(f"<p>{extra}</p>" for extra in c.extras)
    return "".join(lines)


def confirmation_box(parent: QWidget, c: Confirmation) -> tuple[QMessageBox, QPushButton]:
    """The question, and its "Place" button (Enter); Esc cancels."""
    colour = BUY_COLOUR if c.request.side is Side.BUY else SELL_COLOUR
    box = QMessageBox(parent)
    box.setWindowTitle("Confirm order")
    box.setIcon(QMessageBox.Icon.Question)
    box.setTextFormat(Qt.TextFormat.RichText)
    box.setText(confirmation_html(c))
    box.setInformativeText("The stop is placed from the actual fill price once the order fills.")
    place = box.addButton(f"Place {c.request.side.value} order", QMessageBox.ButtonRole.AcceptRole)
    place.setStyleSheet(
        f"QPushButton {{ background: {colour}; color: white; font-weight: bold; padding: 5px 14px;"
        " border-radius: 4px; }"
    )
    box.addButton("Cancel", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(place)
    box.setEscapeButton(QMessageBox.StandardButton.Cancel)
    return box, place
