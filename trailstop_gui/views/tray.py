"""The system tray: the state at a glance, the alerts a trader must see, and the way back to the window.

Where the platform has no tray (offscreen tests, some Linux desktops), the controller keeps working without
an icon: it still emits ``notified`` for every alert it would have shown, and the window stays the way in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QIcon
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
        AlertKind.FEED_DOWN,
        AlertKind.LOGIN_NEEDED,
        AlertKind.ROUTE_FAILED,
        AlertKind.CLOSED_EXTERNALLY,
        AlertKind.SAFETY_FAILED,
    }
)

MESSAGE_MS = 8000
URGENT_MESSAGE_MS = 20000


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
        beep: Callable[[], None] = QApplication.beep,
    ) -> None:
        super().__init__(parent)
        self.notifier = notifier
        # The trader's settings "notifications" and "sound" (apply_settings); on until told otherwise.
        self.notifications = True
        self.sound = True
        self._beep = beep
        self.available = QSystemTrayIcon.isSystemTrayAvailable() if available is None else available
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
