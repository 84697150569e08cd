"""The system tray: the state at a glance, the alerts a trader must see, and the way back to the window.

Where the platform has no tray (offscreen tests, GNOME without an extension, some tiling desktops), an
alert must still reach the trader: it goes to the desktop's notification service (freedesktop
``org.freedesktop.Notifications``) where there is one, urgent ones also beep, and ``notified``
is emitted so that the window comes forward and keeps the alert in view until dismissed.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping

from PySide6.QtCore import QObject, QProcess, Signal
from PySide6.QtGui import QAction, QGuiApplication, QIcon
from PySide6.QtWidgets import QApplication, QMenu, QSystemTrayIcon

from trailstop_gui.services.notifier import Alert, AlertKind, Notifier
from trailstop_gui.settings import Settings
from trailstop_gui.views import theme

log = logging.getLogger("trailstop.views")

# The alerts that pop up a notification; the rest only reach the log and the journal.
NOTIFY = frozenset(
    {
        AlertKind.STOP_TRIGGERED,
        AlertKind.EXIT_FILLED,
        AlertKind.EXIT_FAILED,
        AlertKind.EXIT_DELAYED,
        AlertKind.FEED_DOWN,
        AlertKind.LOGIN_NEEDED,
        AlertKind.ROUTE_FAILED,
        AlertKind.CLOSED_EXTERNALLY,
        AlertKind.SAFETY_FAILED,
    }
)

MESSAGE_MS = 8000
URGENT_MESSAGE_MS = 20000

DesktopNotify = Callable[[str, str, bool], bool]  # title, text, urgent -> shown


def start_detached(program: str, args: list[str]) -> bool:
    """Start ``program`` with ``args`` and do not wait for it (nothing on the GUI thread waits)."""
    return bool(QProcess.startDetached(program, args)[0])


def notify_desktop(
    title: str,
    text: str,
    urgent: bool,
    *,
    run: Callable[[str, list[str]], bool] = start_detached,
    which: Callable[[str], str | None] = shutil.which,
    platform: str | None = None,
    desktop: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """A notification through the desktop's notification service (freedesktop Notify over D-Bus, sent by
    ``notify-send`` or ``gdbus``, started detached so that nothing waits); False where there is neither.

    The keywords are the outside world (tests give their own): the runner, the PATH lookup, ``sys.platform``,
    Qt's platform plugin and the environment.
    """
    if (platform or sys.platform) in ("win32", "darwin"):
        return False  # both have a tray; nothing to fall back to here
    if (desktop or QGuiApplication.platformName()) in ("offscreen", "minimal"):
        return False  # no desktop on screen to notify
    if not (os.environ if environ is None else environ).get("DBUS_SESSION_BUS_ADDRESS"):
        return False  # no session bus: no notification service to reach
    notify_send = which("notify-send")
    if notify_send is not None:
        # Critical urgency stays on screen until dismissed (Desktop Notifications Specification).
        urgency = "critical" if urgent else "normal"
        return run(notify_send, ["-a", "TrailStop", "-u", urgency, title, text])
    gdbus = which("gdbus")
    if gdbus is not None:
        args = [
            "call", "--session", "--dest", "org.freedesktop.Notifications",
            "--object-path", "/org/freedesktop/Notifications",
            "--method", "org.freedesktop.Notifications.Notify",
            "--",  # the -1 timeout below is an argument, not an option
            "TrailStop", "0", "trailstop", title, text, "[]", "{}", "-1",
        ]  # fmt: skip
        return run(gdbus, args)
    return False


class TrayController(QObject):
    """Owns the QSystemTrayIcon, when there is a tray, and turns alerts into notifications."""

    notified = Signal(object)  # Alert: shown in the tray, or that would have been without one
    show_requested = Signal()
    quit_requested = Signal()

    def __init__(
        self,
        notifier: Notifier,
        parent: QObject | None = None,
        *,
        available: bool | None = None,
        desktop_notify: DesktopNotify = notify_desktop,
        beep: Callable[[], None] = QApplication.beep,
    ) -> None:
        super().__init__(parent)
        self.notifier = notifier
        # The trader's settings "notifications" and "sound" (apply_settings); on until told otherwise.
        self.notifications = True
        self.sound = True
        self._beep = beep
        self.available = QSystemTrayIcon.isSystemTrayAvailable() if available is None else available
        self._desktop_notify = desktop_notify
        self.attention = False
        self.tooltip = "TrailStop"
        self.last_message: tuple[str, str] | None = None
        self._icons = {False: theme.tray_icon(False), True: theme.tray_icon(True)}
        self.icon: QSystemTrayIcon | None = None
        self.menu: QMenu | None = None
        self.act_show = QAction("&Show TrailStop", self)
        self.act_show.triggered.connect(self.show_requested)
        self.act_quit = QAction("&Quit TrailStop…", self)
        self.act_quit.triggered.connect(self.quit_requested)
        if self.available:
            self.menu = QMenu()
            self.menu.addAction(self.act_show)
            self.menu.addSeparator()
            self.menu.addAction(self.act_quit)
            self.icon = QSystemTrayIcon(self._icons[False], self)
            self.icon.setContextMenu(self.menu)
            self.icon.setToolTip(self.tooltip)
            self.icon.activated.connect(self._on_activated)
            self.icon.messageClicked.connect(self.show_requested)
            self.icon.show()
        else:
            log.info("no system tray here: alerts show in the window only")
        notifier.alerted.connect(self._on_alerted)

    def current_icon(self) -> QIcon:
        return self._icons[self.attention]

    def set_attention(self, attention: bool, reasons: list[str] | None = None) -> None:
        """All well (green) or attention needed (red), with the reasons in the tooltip."""
        self.attention = attention
        lines = ["TrailStop"]
        if attention and reasons:
            lines += reasons
        elif not attention:
            lines.append("All protections are being watched")
        self.tooltip = "\n".join(lines)
        if self.icon is not None:
            self.icon.setIcon(self._icons[attention])
            self.icon.setToolTip(self.tooltip)

    def show_message(self, title: str, text: str, *, urgent: bool = False) -> None:
        self.last_message = (title, text)
        if self.icon is not None:
            kind = QSystemTrayIcon.MessageIcon.Warning if urgent else QSystemTrayIcon.MessageIcon.Information
            self.icon.showMessage(title, text, kind, URGENT_MESSAGE_MS if urgent else MESSAGE_MS)
            return
        # No tray: the desktop's notification service where there is one (the sound for what is urgent is
        # _on_alerted's, the window itself comes forward through ``notified``).
        try:
            self._desktop_notify(title, text, urgent)
        except Exception:  # a broken notification service must not cost the alert its other paths
            log.exception("desktop notification failed")

    def apply_settings(self, settings: Settings) -> None:
        self.notifications = settings.notifications
        self.sound = settings.sound

    def _on_alerted(self, alert: Alert) -> None:
        if alert.kind not in NOTIFY or not self.notifications:
            return  # the alert is still in the log, the journal and the window's status
        self.show_message(alert.title, alert.message, urgent=alert.urgent)
        if self.sound and alert.urgent:
            self._beep()  # the platform's alert sound: a notification that needs attention
        self.notified.emit(alert)

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.show_requested.emit()

    def hide(self) -> None:
        if self.icon is not None:
            self.icon.hide()
