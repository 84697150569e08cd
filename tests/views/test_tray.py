"""TrayController: notifications for the alerts that matter, an attention state, and a clean fallback
where there is no system tray (as here, offscreen)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from trailstop_gui.services.notifier import Alert, AlertKind, Notifier
from trailstop_gui.settings import Settings
from trailstop_gui.views.tray import NOTIFY, TrayController, notify_desktop


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


class FakeRunner:
    """Stands in for QProcess.startDetached: records the program and its argument list."""

    def __init__(self, started: bool = True) -> None:
        self.started = started
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, program: str, args: list[str]) -> bool:
        self.calls.append((program, list(args)))
        return self.started


def notify_with(runner: FakeRunner, tools: set[str], **kw: Any) -> bool:
    options: dict[str, Any] = {
        "run": runner,
        "which": lambda name: f"/usr/bin/{name}" if name in tools else None,
        "platform": "linux",
        "desktop": "xcb",
        "environ": {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus"},
    }
    options.update(kw)
    return notify_desktop("Exit failed", "INFY: rejected", True, **options)


@pytest.mark.parametrize(("urgent", "urgency"), [(True, "critical"), (False, "normal")])
def test_notify_send_gets_the_app_name_the_urgency_the_title_and_the_text(urgent: bool, urgency: str) -> None:
    runner = FakeRunner()
    shown = notify_desktop(
        "Exit failed",
        "INFY: rejected",
        urgent,
        run=runner,
        which=lambda name: "/usr/bin/notify-send" if name == "notify-send" else "/usr/bin/gdbus",
        platform="linux",
        desktop="wayland",
        environ={"DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus"},
    )
    assert shown
    # notify-send(1): -a app name, -u low|normal|critical; critical stays until dismissed.
    assert runner.calls == [
        ("/usr/bin/notify-send", ["-a", "TrailStop", "-u", urgency, "Exit failed", "INFY: rejected"])
    ]


def test_without_notify_send_gdbus_calls_the_freedesktop_notify_method() -> None:
    runner = FakeRunner()
    assert notify_with(runner, {"gdbus"})
    # org.freedesktop.Notifications.Notify(app_name s, replaces_id u, app_icon s, summary s, body s,
    # actions as, hints a{sv}, expire_timeout i): -1 lets the server decide, after "--" so it is no option.
    assert runner.calls == [
        (
            "/usr/bin/gdbus",
            [
                "call", "--session", "--dest", "org.freedesktop.Notifications",
                "--object-path", "/org/freedesktop/Notifications",
                "--method", "org.freedesktop.Notifications.Notify",
                "--",
                "TrailStop", "0", "trailstop", "Exit failed", "INFY: rejected", "[]", "{}", "-1",
            ],
        )
    ]  # fmt: skip


@pytest.mark.parametrize(
    "where",
    [
        {"platform": "win32"},
        {"platform": "darwin"},
        {"desktop": "offscreen"},
        {"desktop": "minimal"},
        {"environ": {}},  # no session bus
    ],
)
def test_no_desktop_notification_where_there_is_no_service_to_reach(where: dict[str, Any]) -> None:
    runner = FakeRunner()
    assert not notify_with(runner, {"notify-send", "gdbus"}, **where)
    assert runner.calls == []


def test_no_tool_or_a_tool_that_does_not_start_is_not_a_notification_shown() -> None:
    runner = FakeRunner()
    assert not notify_with(runner, set())
    assert runner.calls == []
    failing = FakeRunner(started=False)
    assert not notify_with(failing, {"notify-send"})
    assert len(failing.calls) == 1
