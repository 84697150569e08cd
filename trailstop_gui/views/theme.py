"""Colours, palettes, number formats and icons shared by every view.

Colours are semantic (armed, in progress, failed, profit, ...) and come in a light and a dark set, chosen
from the palette actually in effect, so they stay readable whatever the system's colour scheme is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QGuiApplication,
    QIcon,
    QLinearGradient,
    QPainter,
    QPainterPath,
    QPalette,
    QPen,
    QPixmap,
)
from PySide6.QtWidgets import QApplication, QProxyStyle, QStyle, QStyleFactory, QStyleOption, QWidget

from trailstop_gui.models.domain import tick_decimals

MINUS = "\u2212"  # a real minus sign: as wide as "+", so columns of P&L line up
RUPEE = "\u20b9"
EM_DASH = "\u2014"


@dataclass(frozen=True)
class Colors:
    """The semantic colours of one scheme."""

    dark: bool
    armed: QColor
    progress: QColor
    failed: QColor
    failed_bg: QColor
    closed: QColor
    paused: QColor
    pending: QColor
    profit: QColor
    loss: QColor
    buy: QColor  # the side of a position: blue and orange as brokers show them, never P&L's green and red
    sell: QColor
    muted: QColor
    live: QColor
    reconnecting: QColor
    stale: QColor
    login_needed: QColor
    logged_out: QColor
    chart_price: QColor
    chart_stop: QColor
    chart_entry: QColor
    chart_target: QColor
    chart_trigger: QColor
    chart_grid: QColor


LIGHT = Colors(
    dark=False,
    armed=QColor("#17803d"),
    progress=QColor("#a35a00"),
    failed=QColor("#c62828"),
    failed_bg=QColor("#fde7e7"),
    closed=QColor("#7b818b"),
    paused=QColor("#4a57b0"),
    pending=QColor("#3b6ea8"),
    profit=QColor("#17803d"),
    loss=QColor("#c62828"),
    buy=QColor("#1f5fbf"),
    sell=QColor("#b54708"),
    muted=QColor("#6b7280"),
    live=QColor("#1e9e4a"),
    reconnecting=QColor("#d98200"),
    stale=QColor("#d98200"),
    login_needed=QColor("#d32f2f"),
    logged_out=QColor("#8a9099"),
    chart_price=QColor("#1f5fbf"),
    chart_stop=QColor("#d2461e"),
    chart_entry=QColor("#6b7280"),
    chart_target=QColor("#17803d"),
    chart_trigger=QColor("#c62828"),
    chart_grid=QColor("#e3e6eb"),
)

DARK = Colors(
    dark=True,
    armed=QColor("#4cc27a"),
    progress=QColor("#f2a93b"),
    failed=QColor("#ff6b6b"),
    failed_bg=QColor("#4a2326"),
    closed=QColor("#8b929c"),
    paused=QColor("#9aa7ff"),
    pending=QColor("#7fb2f0"),
    profit=QColor("#4cc27a"),
    loss=QColor("#ff6b6b"),
    buy=QColor("#7fb2f0"),
    sell=QColor("#ff9a5c"),
    muted=QColor("#9aa1ab"),
    live=QColor("#46c97a"),
    reconnecting=QColor("#f2a93b"),
    stale=QColor("#f2a93b"),
    login_needed=QColor("#ff6363"),
    logged_out=QColor("#8b929c"),
    chart_price=QColor("#6aa8ff"),
    chart_stop=QColor("#ff8a5c"),
    chart_entry=QColor("#9aa1ab"),
    chart_target=QColor("#4cc27a"),
    chart_trigger=QColor("#ff6b6b"),
    chart_grid=QColor("#353a42"),
)


def palette_is_dark(palette: QPalette | None = None) -> bool:
    """Whether the palette in effect has a dark window background."""
    if palette is None:
        palette = QGuiApplication.palette()
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def colors(palette: QPalette | None = None) -> Colors:
    """The semantic colours matching the palette in effect (the application's unless given)."""
    return DARK if palette_is_dark(palette) else LIGHT


def system_prefers_dark() -> bool:
    scheme = QGuiApplication.styleHints().colorScheme()
    return scheme == Qt.ColorScheme.Dark


def _palette(colours: dict[QPalette.ColorRole, str], disabled: dict[QPalette.ColorRole, str]) -> QPalette:
    """``colours`` for the active and inactive groups alike, ``disabled`` for the disabled group."""
    p = QPalette()
    for group in (QPalette.ColorGroup.Active, QPalette.ColorGroup.Inactive):
        for role, colour in colours.items():
            p.setColor(group, role, QColor(colour))
    for role, colour in disabled.items():
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor(colour))
    return p


_ROLE = QPalette.ColorRole


def dark_palette() -> QPalette:
    """A calm dark palette for the Fusion style."""
    window, text, button = "#1e2126", "#e6e8eb", "#2a2e35"
    return _palette(
        {
            _ROLE.Window: window,
            _ROLE.WindowText: text,
            _ROLE.Base: "#16181c",
            _ROLE.AlternateBase: "#22262c",
            _ROLE.ToolTipBase: "#2a2e35",
            _ROLE.ToolTipText: text,
            _ROLE.PlaceholderText: "#8b929c",
            _ROLE.Text: text,
            _ROLE.Button: button,
            _ROLE.ButtonText: text,
            _ROLE.BrightText: "#ff6b6b",
            _ROLE.Highlight: "#2f6fd0",
            _ROLE.HighlightedText: "#ffffff",
            _ROLE.Link: "#6aa8ff",
            _ROLE.Mid: "#3a3f47",
            _ROLE.Midlight: "#30353c",
            _ROLE.Dark: "#101215",
            _ROLE.Shadow: "#000000",
            _ROLE.Light: "#3f444c",
        },
        {
            _ROLE.WindowText: "#6b717a",
            _ROLE.Text: "#6b717a",
            _ROLE.ButtonText: "#6b717a",
            _ROLE.Window: window,
            _ROLE.Base: window,
            _ROLE.Button: button,
            _ROLE.Highlight: "#3a3f47",
        },
    )


def light_palette() -> QPalette:
    text = "#1d2126"
    return _palette(
        {
            _ROLE.Window: "#f4f5f7",
            _ROLE.WindowText: text,
            _ROLE.Base: "#ffffff",
            _ROLE.AlternateBase: "#f6f7f9",
            _ROLE.ToolTipBase: "#ffffff",
            _ROLE.ToolTipText: text,
            _ROLE.PlaceholderText: "#7b818b",
            _ROLE.Text: text,
            _ROLE.Button: "#e9ebef",
            _ROLE.ButtonText: text,
            _ROLE.BrightText: "#c62828",
            _ROLE.Highlight: "#2f6fd0",
            _ROLE.HighlightedText: "#ffffff",
            _ROLE.Link: "#1f5fbf",
            _ROLE.Mid: "#c4c8cf",
            _ROLE.Midlight: "#e2e5ea",
            _ROLE.Dark: "#9aa0a8",
            _ROLE.Light: "#ffffff",
        },
        {_ROLE.WindowText: "#a0a5ad", _ROLE.Text: "#a0a5ad", _ROLE.ButtonText: "#a0a5ad"},
    )


class VisibleIndicatorStyle(QProxyStyle):
    """Fusion, with check boxes and radio buttons outlined in the placeholder-text colour: Fusion draws their
    outline a shade darker than the window, which on a dark window is next to invisible."""

    def drawPrimitive(
        self,
        element: QStyle.PrimitiveElement,
        option: QStyleOption,
        painter: QPainter,
        widget: QWidget | None = None,
    ) -> None:
        super().drawPrimitive(element, option, painter, widget)
        round_box = element is QStyle.PrimitiveElement.PE_IndicatorRadioButton
        if element is not QStyle.PrimitiveElement.PE_IndicatorCheckBox and not round_box:
            return
        if option.palette.color(QPalette.ColorRole.Window).lightness() >= 128:
            return  # Fusion's own outline reads well on a light window
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(QPen(option.palette.color(QPalette.ColorRole.PlaceholderText), 1.2))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        rect = QRectF(option.rect).adjusted(0.6, 0.6, -0.6, -0.6)
        if round_box:
            painter.drawEllipse(rect)
        else:
            painter.drawRoundedRect(rect, 2.0, 2.0)
        painter.restore()


def draw_cells_in_cpp(view: QWidget) -> None:
    """Let a busy item view draw with plain Fusion, never calling into Python for a primitive.

    VisibleIndicatorStyle overrides drawPrimitive in Python, so every primitive drawn through it crosses
    into the interpreter (and waits for it while a feed thread holds it); an item view asks for two per
    visible cell on every repaint (the positions table: about 240 a repaint, ten repaints a second). A view
    with no check box or radio button loses nothing by drawing with the proxy's base, Fusion.
    """
    if isinstance(view.style(), VisibleIndicatorStyle):
        fusion = QStyleFactory.create("Fusion")
        if fusion is not None:
            fusion.setParent(view)  # setStyle does not take ownership: the style lives as long as the view
            view.setStyle(fusion)


def apply_theme(app: QApplication, preference: str = "system") -> bool:
    """Fusion with a light or dark palette: ``preference`` is system, light or dark. Returns dark."""
    if not isinstance(app.style(), VisibleIndicatorStyle) and "Fusion" in list(QStyleFactory.keys()):
        app.setStyle(VisibleIndicatorStyle("Fusion"))
    dark = system_prefers_dark() if preference == "system" else preference == "dark"
    app.setPalette(dark_palette() if dark else light_palette())
    return dark


# ----------------------------------------------------------------- numbers, Indian style


def group_indian(whole: int) -> str:
    """1234567 -> 12,34,567 (lakh and crore grouping)."""
    digits = str(abs(whole))
    if len(digits) <= 3:
        out = digits
    else:
        head, tail = digits[:-3], digits[-3:]
        groups: list[str] = []
        while len(head) > 2:
            groups.insert(0, head[-2:])
            head = head[:-2]
        if head:
            groups.insert(0, head)
        out = ",".join(groups) + "," + tail
    return (MINUS if whole < 0 else "") + out


def format_number(value: float | None, decimals: int = 2) -> str:
    """Indian grouping with a fixed number of decimals; an em dash for no value."""
    if value is None or not math.isfinite(value):
        return EM_DASH
    text = f"{abs(value):.{decimals}f}"
    whole, _, frac = text.partition(".")
    sign = MINUS if value < 0 and float(text) != 0 else ""
    return sign + group_indian(int(whole)) + ("." + frac if frac else "")


def format_price(value: float | None, tick_size: float = 0.05) -> str:
    return format_number(value, max(2, tick_decimals(tick_size)))


def format_inr(value: float | None, *, signed: bool = True) -> str:
    """+₹1,23,456.70 / −₹950.00; an em dash for no value."""
    if value is None or not math.isfinite(value):
        return EM_DASH
    rounded = round(value, 2)
    sign = "+" if rounded > 0 and signed else MINUS if rounded < 0 else ""
    return f"{sign}{RUPEE}{format_number(abs(rounded))}"


def format_percent(value: float | None, decimals: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return EM_DASH
    return f"{format_number(value, decimals)}%"


# ----------------------------------------------------------------- icons, drawn: nothing to find on disk

_APP_BG_TOP = QColor("#16324f")
_APP_BG_BOTTOM = QColor("#0d1f33")
_PRICE = QColor("#5fd08a")
_STOP = QColor("#f2a93b")


def _glyph(painter: QPainter, size: float) -> None:
    """The TrailStop mark: a rising price line with the stop stepping up beneath it."""
    s = size
    rect = QRectF(s * 0.04, s * 0.04, s * 0.92, s * 0.92)
    bg = QPainterPath()
    bg.addRoundedRect(rect, s * 0.2, s * 0.2)
    gradient = QLinearGradient(rect.topLeft(), rect.bottomLeft())
    gradient.setColorAt(0.0, _APP_BG_TOP)
    gradient.setColorAt(1.0, _APP_BG_BOTTOM)
    painter.fillPath(bg, QBrush(gradient))
    price = QPainterPath(QPointF(s * 0.16, s * 0.66))
    for x, y in ((0.34, 0.48), (0.46, 0.56), (0.64, 0.32), (0.72, 0.38), (0.86, 0.2)):
        price.lineTo(QPointF(s * x, s * y))
    pen = QPen(_PRICE, max(1.5, s * 0.085))
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
    painter.strokePath(price, pen)
    stop = QPainterPath(QPointF(s * 0.16, s * 0.82))
    for x, y in ((0.40, 0.82), (0.40, 0.70), (0.62, 0.70), (0.62, 0.52), (0.86, 0.52)):
        stop.lineTo(QPointF(s * x, s * y))
    pen = QPen(_STOP, max(1.2, s * 0.065))
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
    painter.strokePath(stop, pen)


def app_pixmap(size: int = 64) -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    _glyph(painter, size)
    painter.end()
    return pixmap


def app_icon() -> QIcon:
    icon = QIcon()
    for size in (16, 24, 32, 48, 64, 128, 256):
        icon.addPixmap(app_pixmap(size))
    return icon


def tray_pixmap(attention: bool, size: int = 64) -> QPixmap:
    """The app mark with a status badge: green when all is well, red with "!" when attention is needed."""
    pixmap = app_pixmap(size)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    d = size * 0.46
    badge = QRectF(size - d - 1, size - d - 1, d, d)
    painter.setPen(QPen(QColor("#ffffff"), max(1.0, size * 0.04)))
    painter.setBrush(QColor("#e53935") if attention else QColor("#2eaa5c"))
    painter.drawEllipse(badge)
    if attention:
        font = QFont()
        font.setBold(True)
        font.setPixelSize(max(6, int(d * 0.8)))
        painter.setFont(font)
        painter.setPen(QColor("#ffffff"))
        painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, "!")
    painter.end()
    return pixmap


def tray_icon(attention: bool) -> QIcon:
    icon = QIcon()
    for size in (16, 22, 24, 32, 48, 64):
        icon.addPixmap(tray_pixmap(attention, size))
    return icon


def dot_icon(color: QColor, size: int = 12) -> QIcon:
    """A filled circle, for a state shown beside text."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(color)
    painter.drawEllipse(QRectF(1, 1, size - 2, size - 2))
    painter.end()
    return QIcon(pixmap)


def contrast_ratio(a: QColor, b: QColor) -> float:
    """WCAG contrast ratio between two colours (1 to 21)."""

    def luminance(c: QColor) -> float:
        def channel(v: float) -> float:
            return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

        return 0.2126 * channel(c.redF()) + 0.7152 * channel(c.greenF()) + 0.0722 * channel(c.blueF())

    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)
