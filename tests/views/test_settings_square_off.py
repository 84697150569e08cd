"""The settings dialog's MIS square-off: off by default (suggesting 15:15), saved as HH:MM when on."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTime
from pytestqt.qtbot import QtBot

from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.settings import Settings, load_settings
from trailstop_gui.views.settings_dialog import SettingsDialog


def test_off_suggesting_1515_then_saved(qtbot: QtBot, store: ProtectionStore, tmp_path: Path) -> None:
    dialog = SettingsDialog(store, load_settings(store), str(tmp_path))
    qtbot.addWidget(dialog)
    assert not dialog.mis_square_off.isChecked()
    assert not dialog.mis_square_off_time.isEnabled()
    assert dialog.mis_square_off_time.time() == QTime(15, 15)
    assert dialog.values().mis_square_off == ""
    dialog.mis_square_off.setChecked(True)
    assert dialog.mis_square_off_time.isEnabled()
    dialog.mis_square_off_time.setTime(QTime(15, 10))
    with qtbot.waitSignal(dialog.settings_saved) as saved:
        dialog.accept()
    assert saved.args[0].mis_square_off == "15:10"
    assert load_settings(store).mis_square_off == "15:10"


def test_a_stored_time_is_shown(qtbot: QtBot, store: ProtectionStore, tmp_path: Path) -> None:
    dialog = SettingsDialog(store, Settings(mis_square_off="15:05"), str(tmp_path))
    qtbot.addWidget(dialog)
    assert dialog.mis_square_off.isChecked()
    assert dialog.mis_square_off_time.time() == QTime(15, 5)
    dialog.mis_square_off.setChecked(False)
    assert dialog.values().mis_square_off == ""
