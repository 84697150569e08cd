"""The settings dialog: a round trip through the store, bad values named, the data folder shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QDialogButtonBox
from pytestqt.qtbot import QtBot

from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.settings import Settings, load_settings
from trailstop_gui.views import settings_dialog
from trailstop_gui.views.settings_dialog import SettingsDialog


def make(
    qtbot: QtBot, store: ProtectionStore, tmp_path: Path, settings: Settings | None = None
) -> SettingsDialog:
    dialog = SettingsDialog(store, settings or load_settings(store), tmp_path)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def test_round_trip_through_the_store(qtbot: QtBot, store: ProtectionStore, tmp_path: Path) -> None:
    dialog = make(qtbot, store, tmp_path)
    assert dialog.values() == Settings()  # shows what is stored (the defaults)
    dialog.rule_kind.setCurrentIndex(dialog.rule_kind.findData("points"))
    dialog.rule_value.setValue(7.5)
    dialog.product.setCurrentIndex(dialog.product.findData("CNC"))
    dialog.quantity.setValue(25)
    dialog.confirm_orders.setChecked(False)
    dialog.confirm_exit_all.setChecked(False)
    dialog.market_protection.setValue(5)
    dialog.sound.setChecked(False)
    dialog.close_to_tray.setChecked(False)
    dialog.theme.setCurrentIndex(dialog.theme.findData("dark"))
    assert dialog.rule_value.suffix() == " pts"
    with qtbot.waitSignal(dialog.settings_saved, timeout=1000) as saved:
        dialog.buttons.button(dialog.buttons.StandardButton.Save).click()
    expected = Settings(
        default_rule_kind="points",
        default_rule_value=7.5,
        default_product="CNC",
        default_quantity=25,
        confirm_orders=False,
        confirm_exit_all=False,
        market_protection=5,
        sound=False,
        close_to_tray=False,
        theme="dark",
    )
    assert saved.args == [expected] and dialog.saved == expected
    assert load_settings(store) == expected
    assert not dialog.isVisible()
    again = make(qtbot, store, tmp_path)
    assert again.values() == expected
    assert again.market_protection.value() == 5


def test_bad_values_name_the_field_and_nothing_is_saved(
    qtbot: QtBot, store: ProtectionStore, tmp_path: Path
) -> None:
    dialog = make(qtbot, store, tmp_path)
    dialog.rule_value.setValue(100)  # percent
    dialog.quantity.setValue(0)
    dialog.accept()
    assert dialog.isVisible() and dialog.saved is None
    assert dialog.error_label.isVisible()
    assert "Default trailing stop: a percentage must be below 100" in dialog.error_label.text()
    assert dialog.errors()[1] == ("Default quantity", "must be at least 1")
    assert load_settings(store) == Settings()
    # Points have no 100 cap (the switch clears the number, to be entered in points); fixing the fields
    # clears the errors as you type.
    dialog.rule_kind.setCurrentIndex(dialog.rule_kind.findData("points"))
    dialog.rule_value.setValue(100)
    dialog.quantity.setValue(2)
    assert not dialog.error_label.isVisible()
    dialog.accept()
    assert load_settings(store).default_rule_value == 100.0


def test_sound_follows_notifications_and_automatic_market_protection(
    qtbot: QtBot, store: ProtectionStore, tmp_path: Path
) -> None:
    dialog = make(qtbot, store, tmp_path, Settings(notifications=False, market_protection=-1))
    assert not dialog.sound.isEnabled()
    assert dialog.market_protection.text() == "Automatic (the broker decides)"
    dialog.notifications.setChecked(True)
    assert dialog.sound.isEnabled()
    assert dialog.values().market_protection == -1


def test_data_folder_is_shown_read_only_and_opens(
    qtbot: QtBot, store: ProtectionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Path] = []
    monkeypatch.setattr(settings_dialog, "open_folder", lambda path: opened.append(path) or True)
    dialog = make(qtbot, store, tmp_path)
    assert dialog.folder.text() == str(tmp_path) and dialog.folder.isReadOnly()
    dialog.open_button.click()
    assert opened == [tmp_path]


def test_cancel_keeps_the_stored_settings(qtbot: QtBot, store: ProtectionStore, tmp_path: Path) -> None:
    dialog = make(qtbot, store, tmp_path)
    dialog.quantity.setValue(99)
    dialog.buttons.button(dialog.buttons.StandardButton.Cancel).click()
    assert dialog.saved is None and load_settings(store) == Settings()


def test_the_broker_held_safety_stop_default_is_set_here(qtbot: QtBot, tmp_path: Path) -> None:
    store = ProtectionStore(tmp_path / "safety.db")
    try:
        dialog = SettingsDialog(store, Settings(), str(tmp_path))
        qtbot.addWidget(dialog)
        assert not dialog.safety_stop.isChecked()  # off by default, as README says
        dialog.safety_stop.click()
        dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
        assert dialog.saved is not None and dialog.saved.safety_stop
        assert load_settings(store).safety_stop
    finally:
        store.close()


def type_into(qtbot: QtBot, spin: Any, text: str) -> None:
    """Select the field's number and type over it, as a trader does."""
    spin.setFocus()
    spin.selectAll()
    qtbot.keyClicks(spin, text)


@pytest.mark.parametrize(
    ("field", "typed", "name", "why"),
    [
        ("quantity", "1o", "Default quantity", "'1o' is not a number"),
        ("rule_value", "2x", "Default trailing stop", "'2x' is not a number"),
        ("market_protection", "5o", "Market protection", "'5o' is not a number"),
        ("quantity", "-5", "Default quantity", "-5 is negative; enter a positive number"),
    ],
)
def test_a_number_typed_wrong_blocks_save_and_says_why_beside_the_field(
    qtbot: QtBot, store: ProtectionStore, tmp_path: Path, field: str, typed: str, name: str, why: str
) -> None:
    dialog = make(qtbot, store, tmp_path)
    spin = getattr(dialog, field)
    type_into(qtbot, spin, typed)
    assert spin.lineEdit().text().replace(" %", "") == typed  # kept as typed, not "1"
    dialog.theme.setFocus()
    dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    assert dialog.isVisible() and dialog.saved is None
    assert load_settings(store) == Settings()  # nothing stored is lost
    beside = dialog.field_errors[name]
    assert beside.isVisible() and beside.text() == why
    assert f"{name}: {why}" in dialog.error_label.text()
    assert dialog.focusWidget() in (spin, spin.lineEdit())  # the field to fix, not Save
    # Fixed as typed: the message goes, and Save stores the number that was typed.
    type_into(qtbot, spin, "3")
    assert not beside.isVisible()
    dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    assert dialog.saved is not None and getattr(dialog.saved, _SAVED[field]) == 3


_SAVED = {
    "quantity": "default_quantity",
    "rule_value": "default_rule_value",
    "market_protection": "market_protection",
}


def test_switching_points_and_percent_clears_the_distance_and_asks_for_it_again(
    qtbot: QtBot, store: ProtectionStore, tmp_path: Path
) -> None:
    dialog = make(qtbot, store, tmp_path, Settings(default_rule_kind="points", default_rule_value=10.0))
    assert dialog.rule_value.text() == "10.00 pts" and not dialog.unit_note.isVisible()
    dialog.rule_kind.setCurrentIndex(dialog.rule_kind.findData("percent"))
    # 10 points must not become 10 %: a default has no price to convert at, so the number is cleared.
    assert dialog.rule_value.problem() == "enter a number"
    assert (
        dialog.unit_note.isVisible()
        and dialog.unit_note.text() == "Switched to percent: enter the distance again."
    )
    dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    assert dialog.saved is None and load_settings(store) == Settings()
    assert dialog.field_errors["Default trailing stop"].text() == "enter a number"
    type_into(qtbot, dialog.rule_value, "1.5")
    assert not dialog.unit_note.isVisible()
    dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    assert dialog.saved is not None
    assert (dialog.saved.default_rule_kind, dialog.saved.default_rule_value) == ("percent", 1.5)
