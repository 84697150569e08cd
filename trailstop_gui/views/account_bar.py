"""The account bar: each broker account's user and feed state, in colour, at the top of the window."""

from __future__ import annotations

import html
from typing import Protocol

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSizePolicy, QToolButton, QWidget

from trailstop_gui.models.store import AccountRecord
from trailstop_gui.views import theme

BROKER_NAMES = {"kite": "Zerodha", "upstox": "Upstox"}

STATE_TEXT = {
    "live": "Live",
    "connecting": "Connecting",
    "reconnecting": "Reconnecting",
    "stale": "Stale",
    "login needed": "Login needed",
    "logged out": "Logged out",
}

STATE_HELP = {
    "live": "Prices are streaming; stops are trailing and will fire.",
    "connecting": "Connecting to the broker's price feed.",
    "reconnecting": "The price feed dropped; reconnecting. Stops cannot fire until prices flow again.",
    "stale": "No prices for a few seconds; the feed is being checked. Stops cannot fire on old prices.",
    "login needed": "The broker's session has expired. Click to log in again; protections resume after.",
    "logged out": "Not logged in. Click to log in.",
}

# The order route's state (RouteState values), as the chip shows it. Only a failing route is shown in the
# chip's text: a working one needs no attention.
ROUTE_TEXT = {
    "ok": "Orders go through",
    "refused": "Orders refused: IP not registered",
    "unreachable": "Order route unreachable",
    "login needed": "Order route not checked yet (log in)",
    "unknown": "Order route: unclear answer",
    "unchecked": "Order route not checked yet",
}
ROUTE_TROUBLE = frozenset({"refused", "unreachable"})

# States in which a click on the account means "log me in".
NEEDS_LOGIN = frozenset({"login needed", "logged out"})
# States that are not fine: the tray and the window show that attention is needed.
TROUBLE = frozenset({"reconnecting", "stale", "login needed", "logged out"})


class SessionLike(Protocol):
    """What the bar reads of an AccountSession."""

    @property
    def account(self) -> AccountRecord: ...
    @property
    def account_id(self) -> int: ...
    @property
    def state(self) -> object: ...


def state_color(state: str, colors: theme.Colors) -> QColor:
    return {
        "live": colors.live,
        "connecting": colors.pending,
        "reconnecting": colors.reconnecting,
        "stale": colors.stale,
        "login needed": colors.login_needed,
        "logged out": colors.logged_out,
    }.get(state, colors.muted)


class AccountChip(QToolButton):
    """One account: a coloured dot, the broker, the user and the feed state."""

    def __init__(self, account: AccountRecord, state: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.account = account
        self.state = state
        self.route_state = "unchecked"
        self.route_message = ""
        self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.setAutoRaise(True)
        self.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        self.setObjectName(f"account-{account.id}")
        self.set_state(state, theme.colors())

    @property
    def broker_name(self) -> str:
        return BROKER_NAMES.get(self.account.broker, self.account.broker)

    def set_state(self, state: str, colors: theme.Colors) -> None:
        self.state = state
        color = state_color(state, colors)
        self.setIcon(theme.dot_icon(color, 12))
        label = (
            self.account.label if self.account.label not in ("", self.account.broker) else self.broker_name
        )
        state_text = STATE_TEXT.get(state, state.capitalize())
        if state in NEEDS_LOGIN:
            state_text += " – log in"
        route_trouble = self.route_state in ROUTE_TROUBLE
        if route_trouble:
            state_text += f" · {ROUTE_TEXT[self.route_state]}"
        # The user id when there is one that says more than the label; never the label twice.
        who = self.account.user_id if self.account.user_id not in ("", label) else ""
        self.setText(" · ".join(part for part in (label, who, state_text) if part))
        route_line = ROUTE_TEXT.get(self.route_state, self.route_state)
        if self.route_message:
            route_line += f": {html.escape(self.route_message)}"
        self.setToolTip(
            f"<b>{self.broker_name}</b> account “{self.account.label}”<br>"
            f"User: {self.account.user_id or 'unknown'}<br>"
            f"Feed: <b>{STATE_TEXT.get(state, state)}</b><br>{STATE_HELP.get(state, '')}<br>"
            f"Order route: {route_line}"
        )
        if route_trouble:
            color = colors.login_needed
        self.setCursor(
            Qt.CursorShape.PointingHandCursor if state in NEEDS_LOGIN else Qt.CursorShape.ArrowCursor
        )
        trouble = state in TROUBLE or route_trouble
        font = self.font()
        font.setBold(trouble)
        self.setFont(font)
        self.setStyleSheet(f"QToolButton {{ color: {color.name()}; }}" if trouble else "")

    def set_route(self, route_state: str, message: str, colors: theme.Colors) -> None:
        self.route_state, self.route_message = route_state, message
        self.set_state(self.state, colors)


class AccountBar(QWidget):
    """Every account with its state; a click on one that needs a login asks for the login."""

    login_requested = Signal(int)  # account id
    accounts_requested = Signal()
    states_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("accountBar")
        self._chips: dict[int, AccountChip] = {}
        self._routes: dict[int, tuple[str, str]] = {}  # account id -> (route state, message)
        self._colors = theme.colors()
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(8, 4, 8, 4)
        self._layout.setSpacing(6)
        self._empty = QLabel("No broker account yet: add one to start protecting positions.", self)
        self._layout.addWidget(self._empty)
        self._layout.addStretch(1)
        self.manage = QPushButton("&Accounts…", self)
        self.manage.setToolTip("Add, edit or log in to broker accounts")
        self.manage.clicked.connect(self.accounts_requested)
        self._layout.addWidget(self.manage)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def set_sessions(self, sessions: list[SessionLike]) -> None:
        """Show these accounts (in this order) with their current state."""
        for chip in self._chips.values():
            self._layout.removeWidget(chip)
            chip.deleteLater()
        self._chips = {}
        for n, session in enumerate(sessions):
            state = str(getattr(session.state, "value", session.state))
            chip = AccountChip(session.account, state, self)
            if session.account_id in self._routes:
                chip.set_route(*self._routes[session.account_id], self._colors)
            chip.clicked.connect(lambda _checked=False, aid=session.account_id: self._on_chip_clicked(aid))
            self._layout.insertWidget(n, chip)
            self._chips[session.account_id] = chip
        self._empty.setVisible(not sessions)
        self.manage.setText("&Accounts…" if sessions else "&Add account…")
        self.states_changed.emit()

    def set_state(self, account_id: int, state: str) -> None:
        chip = self._chips.get(account_id)
        if chip is not None and chip.state != state:
            chip.set_state(state, self._colors)
            self.states_changed.emit()

    def set_route(self, account_id: int, route_state: str, message: str) -> None:
        """Show the result of an order-route check (a RouteState value and its message)."""
        self._routes[account_id] = (route_state, message)
        chip = self._chips.get(account_id)
        if chip is not None:
            chip.set_route(route_state, message, self._colors)
            self.states_changed.emit()

    def state(self, account_id: int) -> str | None:
        chip = self._chips.get(account_id)
        return None if chip is None else chip.state

    def chip(self, account_id: int) -> AccountChip | None:
        return self._chips.get(account_id)

    def states(self) -> dict[int, str]:
        return {aid: chip.state for aid, chip in self._chips.items()}

    def troubled(self) -> list[str]:
        """A line for each account that is not fine, for the tray's tooltip."""
        lines = [
            f"{chip.broker_name} {chip.account.user_id}: {STATE_TEXT.get(chip.state, chip.state)}"
            for chip in self._chips.values()
            if chip.state in TROUBLE
        ]
        lines += [
            f"{chip.broker_name} {chip.account.user_id}: {ROUTE_TEXT[chip.route_state]}"
            for chip in self._chips.values()
            if chip.route_state in ROUTE_TROUBLE
        ]
        return lines

    def set_colors(self, colors: theme.Colors) -> None:
        self._colors = colors
        for chip in self._chips.values():
            chip.set_state(chip.state, colors)

    def _on_chip_clicked(self, account_id: int) -> None:
        chip = self._chips.get(account_id)
        if chip is not None and chip.state in NEEDS_LOGIN:
            self.login_requested.emit(account_id)
