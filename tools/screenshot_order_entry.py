"""Screenshots of the order form (live preview, errors, confirmation) and the settings dialog.

Runs against the built-in simulator in a temporary data folder; needs a display (Xvfb is fine):

    Xvfb :99 -screen 0 1400x900x24 &
    DISPLAY=:99 QT_QPA_PLATFORM= .venv/bin/python tools/screenshot_order_entry.py [OUT_DIR] [--dark]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from trailstop_gui.models.domain import TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.instruments import InstrumentService
from trailstop_gui.services.protection_service import ProtectionService
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.services.session import AccountSession, Endpoints
from trailstop_gui.settings import Settings
from trailstop_gui.simulator.runner import start_simulator
from trailstop_gui.views.order_entry import OrderEntryPanel
from trailstop_gui.views.settings_dialog import SettingsDialog


def wait(app: QApplication, predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the screen never reached the state to capture")
        app.processEvents()
        time.sleep(0.02)


def settle(app: QApplication, seconds: float = 0.3) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def shoot(app: QApplication, widget: QWidget, path: Path) -> None:
    settle(app)
    widget.grab().save(str(path))
    print(path)


def dark_palette() -> QPalette:
    """A plain dark palette: enough to see that nothing is drawn for a light background only."""
    p = QPalette()
    roles = QPalette.ColorRole
    for role, colour in (
        (roles.Window, "#2b2b2b"),
        (roles.WindowText, "#e8e8e8"),
        (roles.Base, "#1e1e1e"),
        (roles.AlternateBase, "#2b2b2b"),
        (roles.Text, "#e8e8e8"),
        (roles.Button, "#3a3a3a"),
        (roles.ButtonText, "#e8e8e8"),
        (roles.Mid, "#555555"),
        (roles.Highlight, "#3d7bd9"),
        (roles.HighlightedText, "#ffffff"),
        (roles.PlaceholderText, "#9a9a9a"),
        (roles.ToolTipBase, "#3a3a3a"),
        (roles.ToolTipText, "#e8e8e8"),
    ):
        p.setColor(role, QColor(colour))
    p.setColor(QPalette.ColorGroup.Disabled, roles.Text, QColor("#777777"))
    p.setColor(QPalette.ColorGroup.Disabled, roles.ButtonText, QColor("#777777"))
    p.setColor(QPalette.ColorGroup.Disabled, roles.WindowText, QColor("#777777"))
    return p


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    dark = "--dark" in sys.argv
    out = Path(args[0] if args else "/tmp/trailstop-shots")
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication(sys.argv[:1])
    if dark:
        app.setStyle("Fusion")
        app.setPalette(dark_palette())
    sim = start_simulator(seed=3, auto=False, fill_delay=0.0)
    tmp = tempfile.TemporaryDirectory()
    store = ProtectionStore(Path(tmp.name) / "shots.db")
    section = sim.info["kite"]
    account = store.add_account(
        "kite",
        "Zerodha (simulator)",
        user_id=section["user_id"],
        api_key=section["api_key"],
        redirect_url=section["redirect_url"],
        api_root=sim.url,
    )
    secrets = SecretStore()
    secrets.set(account.id, "api_secret", section["api_secret"])
    session = AccountSession(account, secrets, Endpoints.for_simulator(sim.info, "kite"))
    session.login_with_password(section["user_id"], section["password"])
    service = ProtectionService(store)
    service.add_session(session)
    service.start()
    instruments = InstrumentService(store)
    try:
        sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
        panel = OrderEntryPanel(service, store, Settings(), instruments)
        panel.setWindowTitle("TrailStop: new order")
        panel.resize(400, 640)
        panel.show()
        panel.activateWindow()
        wait(app, lambda: store.instrument_count("kite@sim") > 0)
        shoot(app, panel, out / "order_entry_empty.png")

        panel.instrument.setFocus()
        for ch in "tata":
            QTest.keyClicks(panel.instrument, ch)
            settle(app, 0.05)
        popup = panel.completer.popup()
        wait(app, lambda: popup is not None and popup.isVisible())
        settle(app)
        # The popup is a separate window: capture the screen area under the form.
        screen = app.primaryScreen()
        geometry = panel.frameGeometry()
        screen.grabWindow(0, geometry.x(), geometry.y(), geometry.width(), geometry.height()).save(
            str(out / "order_entry_completion.png")
        )
        print(out / "order_entry_completion.png")
        if popup is not None:
            popup.hide()

        panel.instrument.clear()
        QTest.keyClicks(panel.instrument, "INFY")
        panel.instrument.editingFinished.emit()
        panel.quantity.setValue(10)
        wait(app, lambda: panel.preview() is not None)
        shoot(app, panel, out / "order_entry_preview.png")

        panel.rule_editor.set_rule(TrailRule.percent(1.5, breakeven=1.0, target=4.0))
        panel.sell.click()
        shoot(app, panel, out / "order_entry_sell_options.png")

        panel.clear()
        QTest.keyClicks(panel.instrument, "NIFTY")
        settle(app, 0.2)
        record = instruments.search("kite@sim", "NIFTY")[0]
        if popup is not None:
            popup.hide()
        panel.select_instrument(record)
        panel.quantity.setValue(60)
        panel.order_type.setCurrentIndex(1)
        panel.price.setValue(24500.03)
        panel.submit()
        shoot(app, panel, out / "order_entry_errors.png")

        panel.clear()
        panel.select_instrument(instruments.search("kite@sim", "INFY")[0])
        panel.quantity.setValue(10)
        wait(app, lambda: panel.preview() is not None)

        def capture_confirmation() -> None:
            box = panel.confirm_box
            if box is None or not box.isVisible():
                QTimer.singleShot(20, capture_confirmation)
                return
            shoot(app, box, out / "order_entry_confirm.png")
            next(b for b in box.buttons() if box.buttonRole(b) == QMessageBox.ButtonRole.RejectRole).click()

        QTimer.singleShot(0, capture_confirmation)
        panel.submit()

        dialog = SettingsDialog(store, Settings(), tmp.name)
        dialog.show()
        shoot(app, dialog, out / "settings_dialog.png")
        dialog.rule_value.setValue(0)
        dialog.accept()
        shoot(app, dialog, out / "settings_dialog_errors.png")
        dialog.close()
    finally:
        service.shutdown()
        instruments.wait_for_done()
        store.close()
        sim.stop()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
