"""TrayController: notifications for the alerts that matter, an attention state, and a clean fallback
where there is no system tray (as here, offscreen)."""

from __future__ import annotations

from dataclasses import replace

from pytestqt.qtbot import QtBot

from trailstop_gui.services.notifier import Alert, AlertKind, Notifier
from trailstop_gui.settings import Settings
from trailstop_gui.views.tray import NOTIFY, TrayController


def test_without_a_tray_alerts_are_still_reported(qtbot: QtBot) -> None:
    notifier = Notifier()
    tray = TrayController(notifier, available=False)
    assert tray.icon is None
    shown: list[Alert] = []
    tray.notified.connect(shown.append)
    for kind in AlertKind:
        notifier.notify(Alert(kind, kind.value.title(), f"INFY: {kind.value}"))
    assert [a.kind for a in shown] == [k for k in AlertKind if k in NOTIFY]
    assert {
        AlertKind.STOP_TRIGGERED,
        AlertKind.EXIT_FILLED,
        AlertKind.EXIT_FAILED,
        AlertKind.FEED_DOWN,
        AlertKind.LOGIN_NEEDED,
    } <= NOTIFY
    assert AlertKind.INFO not in NOTIFY and AlertKind.EXIT_PLACED not in NOTIFY
    assert tray.last_message == ("Closed Outside Trailstop", "INFY: closed outside TrailStop")


def test_attention_state_changes_icon_and_tooltip(qtbot: QtBot) -> None:
    tray = TrayController(Notifier(), available=False)
    calm = tray.current_icon().pixmap(32).toImage()
    tray.set_attention(True, ["1 exit failed", "Zerodha AB1234: Login needed"])
    assert tray.attention
    assert "1 exit failed" in tray.tooltip and "Login needed" in tray.tooltip
    assert tray.current_icon().pixmap(32).toImage() != calm
    tray.set_attention(False)
    assert "All protections are being watched" in tray.tooltip
    assert tray.current_icon().pixmap(32).toImage() == calm


def test_menu_actions_signal(qtbot: QtBot) -> None:
    tray = TrayController(Notifier(), available=False)
    with qtbot.waitSignal(tray.show_requested):
        tray.act_show.trigger()
    with qtbot.waitSignal(tray.quit_requested):
        tray.act_quit.trigger()


def test_a_failing_order_route_is_an_urgent_tray_message(qtbot: QtBot) -> None:
    notifier = Notifier()
    tray = TrayController(notifier, available=False)
    shown: list[Alert] = []
    tray.notified.connect(shown.append)
    text = "Zerodha (AB1234): orders from this IP are refused by Zerodha: register it or set an order route"
    notifier.notify(Alert(AlertKind.ROUTE_FAILED, "Order route failed", text, account_id=1))
    assert [a.kind for a in shown] == [AlertKind.ROUTE_FAILED] and shown[0].urgent
    assert tray.last_message == ("Order route failed", text)


def test_the_notifications_setting_silences_the_tray(qtbot: QtBot) -> None:
    notifier = Notifier()
    beeps: list[None] = []
    tray = TrayController(notifier, available=False, beep=lambda: beeps.append(None))
    shown: list[Alert] = []
    tray.notified.connect(shown.append)
    tray.apply_settings(replace(Settings(), notifications=False))
    notifier.notify(Alert(AlertKind.EXIT_FAILED, "Exit failed", "INFY: refused"))
    assert shown == [] and tray.last_message is None and beeps == []
    tray.apply_settings(Settings())
    notifier.notify(Alert(AlertKind.EXIT_FAILED, "Exit failed", "INFY: refused"))
    assert [a.kind for a in shown] == [AlertKind.EXIT_FAILED]


def test_the_sound_setting_beeps_for_urgent_alerts_only(qtbot: QtBot) -> None:
    notifier = Notifier()
    beeps: list[None] = []
    tray = TrayController(notifier, available=False, beep=lambda: beeps.append(None))
    tray.apply_settings(Settings())
    notifier.notify(Alert(AlertKind.EXIT_FILLED, "Exit filled", "INFY at 1500"))
    assert beeps == []  # not urgent: no sound
    notifier.notify(Alert(AlertKind.LOGIN_NEEDED, "Login needed", "Zerodha: log in again"))
    assert len(beeps) == 1
    tray.apply_settings(replace(Settings(), sound=False))
    notifier.notify(Alert(AlertKind.SAFETY_FAILED, "No broker-held stop", "INFY: refused"))
    assert len(beeps) == 1 and tray.last_message == ("No broker-held stop", "INFY: refused")


def test_without_a_tray_alerts_reach_the_desktop_and_urgent_ones_beep(qtbot: QtBot) -> None:
    sent: list[tuple[str, str, bool]] = []
    beeps: list[bool] = []
    notifier = Notifier()
    tray = TrayController(
        notifier,
        available=False,
        desktop_notify=lambda title, text, urgent: sent.append((title, text, urgent)) is None,
        beep=lambda: beeps.append(True),
    )
    notifier.notify(Alert(AlertKind.EXIT_FILLED, "Exit filled", "INFY at 1470.00"))
    notifier.notify(Alert(AlertKind.EXIT_FAILED, "Exit failed", "INFY: rejected"))
    assert sent == [("Exit filled", "INFY at 1470.00", False), ("Exit failed", "INFY: rejected", True)]
    assert beeps == [True]  # the urgent one only
    assert tray.icon is None
