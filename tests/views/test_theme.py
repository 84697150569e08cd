"""Theme: both colour schemes readable, Indian number formats, icons drawn without files."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QCheckBox, QStyle, QStyleOptionButton
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
