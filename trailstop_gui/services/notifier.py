"""Alerts as signals: the tray, the status bar and the headless log all listen to one Notifier."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from datetime import datetime

from PySide6.QtCore import QObject, Signal

log = logging.getLogger("trailstop.alerts")


class AlertKind(enum.StrEnum):
    STOP_TRIGGERED = "stop triggered"
    EXIT_PLACED = "exit placed"
    EXIT_FILLED = "exit filled"
    EXIT_FAILED = "exit failed"
    EXIT_DELAYED = "exit delayed"  # still TRIGGERED: sent again by the reconciler
    FEED_DOWN = "feed down"
    LOGIN_NEEDED = "login needed"
    ROUTE_FAILED = "order route failed"  # orders of an account with live protections would be refused
    SAFETY_FAILED = "safety stop unavailable"  # no broker-held stop can be placed for a protection
    CLOSED_EXTERNALLY = "closed outside TrailStop"
    INFO = "info"


# Alerts a trader must act on: shown as warnings, never only logged.
URGENT = frozenset(
    {
        AlertKind.EXIT_FAILED,
        AlertKind.EXIT_DELAYED,
        AlertKind.LOGIN_NEEDED,
        AlertKind.FEED_DOWN,
        AlertKind.ROUTE_FAILED,
        AlertKind.SAFETY_FAILED,
    }
)


@dataclass(frozen=True)
class Alert:
    kind: AlertKind
    title: str
    message: str
    protection_id: int | None = None
    account_id: int | None = None
    at: datetime = field(default_factory=datetime.now)

    @property
    def urgent(self) -> bool:
        return self.kind in URGENT


class Notifier(QObject):
    """Emits every alert once on ``alerted`` and once on its kind's own signal."""

    alerted = Signal(object)  # Alert
    stop_triggered = Signal(object)
    exit_placed = Signal(object)
    exit_filled = Signal(object)
    exit_failed = Signal(object)
    exit_delayed = Signal(object)
    feed_down = Signal(object)
    login_needed = Signal(object)
    route_failed = Signal(object)

    def notify(self, alert: Alert) -> None:
        level = logging.WARNING if alert.urgent else logging.INFO
        log.log(level, "%s: %s", alert.title, alert.message)
        self.alerted.emit(alert)
        specific = {
            AlertKind.STOP_TRIGGERED: self.stop_triggered,
            AlertKind.EXIT_PLACED: self.exit_placed,
            AlertKind.EXIT_FILLED: self.exit_filled,
            AlertKind.EXIT_FAILED: self.exit_failed,
            AlertKind.EXIT_DELAYED: self.exit_delayed,
            AlertKind.FEED_DOWN: self.feed_down,
            AlertKind.LOGIN_NEEDED: self.login_needed,
            AlertKind.ROUTE_FAILED: self.route_failed,
        }.get(alert.kind)
        if specific is not None:
            specific.emit(alert)
