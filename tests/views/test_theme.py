"""Theme: both colour schemes readable, Indian number formats, icons drawn without files."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QStyle,
    QStyleOptionButton,
    QTableWidget,
    QTableWidgetItem,
)
from pytestqt.qtbot import QtBot

from trailstop_gui.views import theme


def test_both_schemes_are_readable(qapp: QApplication) -> None:
    for colors, palette in ((theme.LIGHT, theme.light_palette()), (theme.DARK, theme.dark_palette())):
        base = palette.base().color()
        for name in ("armed", "progress", "failed", "paused", "profit", "loss", "pending", "buy", "sell"):
            assert theme.contrast_ratio(getattr(colors, name), base) >= 4.5, name
        assert theme.contrast_ratio(colors.failed, colors.failed_bg) >= 4.0
        assert theme.colors(palette) is colors


def test_indian_number_formats(qapp: QApplication) -> None:
    assert theme.group_indian(1234567) == "12,34,567"
    assert theme.format_inr(123456.7) == "+₹1,23,456.70"
    assert theme.format_inr(-950) == f"{theme.MINUS}₹950.00"
    assert theme.format_inr(0.001) == "₹0.00"
    assert theme.format_price(24850.35) == "24,850.35"
    assert theme.format_price(None) == theme.EM_DASH
    assert not theme.app_icon().isNull() and not theme.tray_icon(True).isNull()


def test_apply_theme_sets_a_palette_of_the_asked_scheme(qapp: QApplication) -> None:
    app = qapp
    original, style = app.palette(), app.style().name()
    try:
        assert theme.apply_theme(app, "dark") and theme.palette_is_dark()
        assert not theme.apply_theme(app, "light") and not theme.palette_is_dark()
        used = app.style()
        assert isinstance(used, theme.VisibleIndicatorStyle) and used.baseStyle().name().lower() == "fusion"
    finally:
        app.setStyle(style)
        app.setPalette(original)


def test_check_boxes_are_visible_on_the_dark_window(qapp: QApplication, qtbot: QtBot) -> None:
    original, style = qapp.palette(), qapp.style().name()
    try:
        theme.apply_theme(qapp, "dark")
        box = QCheckBox("Start trailing after")
        qtbot.addWidget(box)
        box.resize(220, 30)
        box.show()
        qtbot.waitExposed(box)
        image = box.grab().toImage()
        option = QStyleOptionButton()
        option.initFrom(box)
        rect = box.style().subElementRect(QStyle.SubElement.SE_CheckBoxIndicator, option, box)
        back = box.palette().color(QPalette.ColorRole.Window)

        def lightness(c: QColor) -> float:
            return 0.2126 * c.red() + 0.7152 * c.green() + 0.0722 * c.blue()

        contrast = max(
            abs(lightness(image.pixelColor(x, y)) - lightness(back))
            for x in range(rect.left(), rect.right() + 1)
            for y in range(rect.top(), rect.bottom() + 1)
        )
        assert contrast > 60  # Fusion's own outline: about 23, next to invisible
    finally:
        qapp.setStyle(style)
        qapp.setPalette(original)


def test_a_busy_item_view_draws_its_cells_without_calling_into_python(
    qapp: QApplication, qtbot: QtBot
) -> None:
    # The app's proxy style draws every primitive through Python; the positions table repaints ten times a
    # second and asks for two per cell, so it draws with plain Fusion (and still in the app's palette).
    original, style = qapp.palette(), qapp.style().name()
    try:
        calls: list[object] = []

        class Counting(theme.VisibleIndicatorStyle):
            def drawPrimitive(self, element: QStyle.PrimitiveElement, *args: Any) -> None:
                calls.append(element)
                super().drawPrimitive(element, *args)

        qapp.setStyle(Counting("Fusion"))
        theme.apply_theme(qapp, "dark")
        tables = []
        for in_cpp in (False, True):
            table = QTableWidget(3, 2)
            qtbot.addWidget(table)
            for row in range(3):
                for column in range(2):
                    table.setItem(row, column, QTableWidgetItem("1,234.50"))
            if in_cpp:
                theme.draw_cells_in_cpp(table)
            table.show()
            qtbot.waitExposed(table)
            calls.clear()
            table.viewport().grab()
            tables.append((table, len(calls)))
        (_, through_python), (table, in_cpp_calls) = tables
        assert through_python >= 6 and in_cpp_calls == 0  # a panel per cell, before; none after
        used = table.style()
        assert not isinstance(used, theme.VisibleIndicatorStyle) and used.name().lower() == "fusion"
        assert used.parent() is table  # lives as long as the table (setStyle does not own it)
        assert table.palette().color(QPalette.ColorRole.Base) == theme.dark_palette().color(
            QPalette.ColorRole.Base
        )
    finally:
        qapp.setStyle(style)
        qapp.setPalette(original)
