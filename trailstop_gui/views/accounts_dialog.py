"""Broker accounts: list them with their login state, add, edit, remove, and log each one in.

API secrets go to the keyring through AccountManager; this dialog never writes one anywhere else and never
shows one back (an edit leaves the secret field empty: empty keeps the stored secret).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from typing import Any

import shiboken6
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from trailstop_gui.models.store import AccountRecord, ProtectionStore
from trailstop_gui.services.accounts import (
    AccountInput,
    AccountInUse,
    AccountManager,
    ValidationError,
    account_title,
    field_label,
    spec_for,
)
from trailstop_gui.services.protection_service import ProtectionService
from trailstop_gui.services.route_monitor import (
    OrderRoute,
    RouteCheck,
    RouteKind,
    RouteMonitor,
    RouteValidationError,
    validate_route,
)
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.services.session import SessionState
from trailstop_gui.views.async_slot import async_slot
from trailstop_gui.views.login_view import LoginDialog
from trailstop_gui.views.table_model import RowsTableModel

log = logging.getLogger("trailstop.views.accounts")

NO_SESSION = "offline"  # an account with no session: a simulator account whose simulator is not running

_STATE_COLOURS = {
    SessionState.LIVE.value: QColor("#1b7f3b"),
    SessionState.CONNECTING.value: QColor("#8a6d00"),
    SessionState.RECONNECTING.value: QColor("#b35c00"),
    SessionState.STALE.value: QColor("#b35c00"),
    SessionState.LOGIN_NEEDED.value: QColor("#c62828"),
}

_STATE_TIPS = {
    SessionState.LIVE.value: "Logged in; prices are arriving.",
    SessionState.CONNECTING.value: "Logged in; connecting to the price feed.",
    SessionState.RECONNECTING.value: "The price feed dropped; reconnecting.",
    SessionState.STALE.value: "No prices for a few seconds; the feed is being checked.",
    SessionState.LOGIN_NEEDED.value: "The broker ended the session: log in again to keep protecting.",
    SessionState.LOGGED_OUT.value: "Not logged in yet.",
    NO_SESSION: "A simulator account: start TrailStop with --demo or --sim to use it.",
}


BEFORE_YOU_START = (
    "<b>Before you start</b>, on your broker's developer console "
    "(Zerodha: developers.kite.trade; Upstox: account.upstox.com/developer/apps):"
    "<ol style='margin-top:2px'>"
    "<li>Create an app and copy its <b>API key</b> and <b>secret</b> here.</li>"
    "<li>Set its <b>redirect URL</b> and give exactly the same one here.</li>"
    "<li>Register your <b>static IP</b> (up to two; one change a week). Since 1 April 2026 both brokers "
    "refuse API orders from any other IP, exits included. A home connection's IP changes: set an "
    "<b>order route</b> through a proxy on a host with a static IP (a small VPS: "
    "<code>ssh -N -D 1080 user@vps</code> gives a SOCKS5 proxy on 127.0.0.1:1080), then "
    "<b>Check order route</b>. Prices, positions and login work from any IP.</li>"
    "</ol>"
)

ROUTE_KINDS = (
    (RouteKind.DIRECT, "Direct: this machine has the registered IP"),
    (RouteKind.SOCKS5, "SOCKS5 proxy (e.g. ssh -D)"),
    (RouteKind.HTTP, "HTTP proxy (CONNECT)"),
)


def _broker_name(broker: str) -> str:
    try:
        return spec_for(broker).name
    except ValueError:
        return broker


def add_field(
    parent: QWidget, form: QFormLayout, name: str, label: str, placeholder: str
) -> tuple[QLineEdit, QLabel]:
    """A row of ``form``: a line edit named ``name`` with its error line under it (hidden until a check
    fails, then red: the field's own message beside it)."""
    edit = QLineEdit(parent)
    edit.setObjectName(name)
    edit.setPlaceholderText(placeholder)
    error = QLabel(parent)
    error.setObjectName(f"{name}_error")
    error.setStyleSheet("color: #c62828;")
    error.setWordWrap(True)
    error.hide()
    column = QVBoxLayout()
    column.setSpacing(2)
    column.addWidget(edit)
    column.addWidget(error)
    form.addRow(label, column)
    return edit, error


class AccountsModel(RowsTableModel[AccountRecord]):
    """Accounts with their session state; one row per account, keyed by account id."""

    HEADERS = ("Broker", "Label", "User", "State", "")
    LOGIN_COLUMN = 4

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._states: dict[int, str] = {}
        self._index: dict[int, int] = {}

    def reset(self, accounts: list[AccountRecord], states: dict[int, str]) -> None:
        self.beginResetModel()
        self._rows = list(accounts)
        self._states = dict(states)
        self._index = {a.id: row for row, a in enumerate(self._rows)}
        self.endResetModel()

    def set_state(self, account_id: int, state: str) -> None:
        row = self._index.get(account_id)
        if row is None or self._states.get(account_id) == state:
            return
        self._states[account_id] = state
        cell = self.index(row, 3)
        self.dataChanged.emit(cell, cell, [Qt.ItemDataRole.DisplayRole])

    def account_at(self, row: int) -> AccountRecord | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def row_of(self, account_id: int) -> int | None:
        return self._index.get(account_id)

    def state_of(self, account_id: int) -> str:
        return self._states.get(account_id, NO_SESSION)

    def _cell(self, account: AccountRecord, column: int, role: int) -> Any:
        state = self.state_of(account.id)
        if role == Qt.ItemDataRole.DisplayRole:
            if column == 0:
                return _broker_name(account.broker) + (" simulator" if account.api_root else "")
            if column == 1:
                return account.label
            if column == 2:
                return account.user_id or "—"
            if column == 3:
                return state
            return None
        if role == Qt.ItemDataRole.ForegroundRole and column == 3:
            return _STATE_COLOURS.get(state)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == 3:
                return _STATE_TIPS.get(state, state)
            if column in (0, 1) and account.api_root:
                return f"The built-in simulator at {account.api_root}: no real broker, no real money"
        return None


class AccountForm(QDialog):
    """Add or edit one account. OK validates through ``submit``; an error appears under its field."""

    def __init__(
        self,
        broker: str,
        submit: Callable[[AccountInput], AccountRecord],  # raises ValidationError
        account: AccountRecord | None = None,
        parent: QWidget | None = None,
        *,
        keyring: bool = True,
    ) -> None:
        super().__init__(parent)
        self.broker = broker
        self._submit = submit
        self.account: AccountRecord | None = None
        spec = spec_for(broker)
        editing = account is not None
        self.setWindowTitle(f"{'Edit' if editing else 'Add'} {spec.name} account")
        self.setMinimumWidth(520)

        self.edits: dict[str, QLineEdit] = {}
        self.errors: dict[str, QLabel] = {}
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        console = "developers.kite.trade" if broker == "kite" else "account.upstox.com/developer/apps"
        placeholders = {
            "label": spec.name,
            "api_key": f"from your app on {console}",
            "api_secret": (
                "stored in the keyring: leave empty to keep it"
                if editing
                else "kept in the system keyring only"
            )
            if keyring
            else (
                "kept in memory: leave empty to keep it"
                if editing
                else "kept in memory until TrailStop quits"
            ),
            "redirect_url": "exactly as registered for your app, e.g. https://127.0.0.1:5000/callback",
            "user_id": "optional, e.g. AB1234 (filled in after the first login)",
        }
        for field in ("label", "api_key", "api_secret", "redirect_url", "user_id"):
            edit, error = add_field(self, form, field, field_label(broker, field), placeholders[field])
            edit.setClearButtonEnabled(field != "api_secret")
            if field == "api_secret":
                edit.setEchoMode(QLineEdit.EchoMode.Password)
            edit.textEdited.connect(lambda _text, f=field: self._clear_error(f))
            self.edits[field], self.errors[field] = edit, error
        if account is not None:
            self.edits["label"].setText(account.label)
            self.edits["api_key"].setText(account.api_key)
            self.edits["redirect_url"].setText(account.redirect_url)
            self.edits["user_id"].setText(account.user_id)

        # The same words as the Accounts window: where the secret really goes on this machine.
        where = (
            "is kept in the system keyring, never in TrailStop's files."
            if keyring
            else "is kept in memory only (this system has no keyring): enter it again after a restart."
            " It is never written to TrailStop's files."
        )
        self.note = note = QLabel(f"The {spec.secret_label.lower()} {where}", self)
        note.setWordWrap(True)
        note.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Save" if editing else "Add")
        self.buttons.accepted.connect(self._on_accepted)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(self.buttons)

    def value(self) -> AccountInput:
        text = {field: edit.text() for field, edit in self.edits.items()}
        return AccountInput(self.broker, **text)

    def _on_accepted(self) -> None:
        for field in self.errors:
            self._clear_error(field)
        try:
            self.account = self._submit(self.value())
        except ValidationError as exc:
            self.show_error(exc.field, str(exc))
            return
        self.edits["api_secret"].clear()
        self.accept()

    def show_error(self, field: str, message: str) -> None:
        label = self.errors.get(field)
        if label is None:  # not a field of this form (the broker): show it under the first one
            label, field = self.errors["label"], "label"
        label.setText(message)
        label.show()
        edit = self.edits[field]
        edit.setStyleSheet("QLineEdit { border: 1px solid #c62828; }")
        edit.setFocus()

    def _clear_error(self, field: str) -> None:
        self.errors[field].hide()
        self.errors[field].clear()
        self.edits[field].setStyleSheet("")


class RouteForm(QDialog):
    """An account's order route: direct, or a proxy on a host whose IP is registered with the broker.

    Only order calls (place, modify, cancel, GTT) take it; login, prices and reads stay direct.
    """

    FIELDS = ("host", "port", "username", "password")

    def __init__(
        self,
        account: AccountRecord,
        route: OrderRoute,
        save: Callable[[OrderRoute, str | None], None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.account = account
        self._save = save
        self.saved_route: OrderRoute | None = None
        self.setWindowTitle(f"Order route of {account_title(account)}")
        self.setMinimumWidth(480)
        self.kind = QComboBox(self)
        self.kind.setObjectName("kind")
        for kind, text in ROUTE_KINDS:
            self.kind.addItem(text, kind.value)
        self.kind.setCurrentIndex(next(i for i, (k, _t) in enumerate(ROUTE_KINDS) if k is route.kind))
        self.kind.currentIndexChanged.connect(lambda _i: self._update_fields())
        self.edits: dict[str, QLineEdit] = {}
        self.errors: dict[str, QLabel] = {}
        form = QFormLayout()
        form.addRow("Route", self.kind)
        labels = {
            "host": "Proxy host",
            "port": "Proxy port",
            "username": "Proxy user",
            "password": "Proxy password",
        }
        placeholders = {
            "host": "e.g. 127.0.0.1 (an ssh -D tunnel) or your VPS",
            "port": "e.g. 1080",
            "username": "optional",
            "password": "kept in the system keyring; leave empty to keep the stored one",
        }
        for field in self.FIELDS:
            edit, error = add_field(self, form, field, labels[field], placeholders[field])
            if field == "password":
                edit.setEchoMode(QLineEdit.EchoMode.Password)
            edit.textEdited.connect(lambda _t, f=field: self.errors[f].hide())
            self.edits[field], self.errors[field] = edit, error
        if not route.is_direct:
            self.edits["host"].setText(route.host)
            self.edits["port"].setText(str(route.port))
            self.edits["username"].setText(route.username)
        note = QLabel(
            "Only order calls (place, modify, cancel, GTT) go through the route; login, prices, positions "
            "and the order book stay direct. The proxy's host must have the IP you registered.",
            self,
        )
        note.setWordWrap(True)
        note.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel, self
        )
        self.buttons.accepted.connect(self._on_accepted)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(self.buttons)
        self._update_fields()

    def _update_fields(self) -> None:
        proxied = self.kind.currentData() != RouteKind.DIRECT.value
        for edit in self.edits.values():
            edit.setEnabled(proxied)

    def value(self) -> tuple[OrderRoute, str | None]:
        """The route typed (RouteValidationError names a bad field) and the password (None: keep)."""
        route = validate_route(
            str(self.kind.currentData()),
            self.edits["host"].text(),
            self.edits["port"].text(),
            self.edits["username"].text(),
        )
        password = self.edits["password"].text()
        return route, (password or None)

    def _on_accepted(self) -> None:
        for label in self.errors.values():
            label.hide()
        try:
            route, password = self.value()
        except RouteValidationError as exc:
            self.show_error(exc.field, str(exc))
            return
        self._save(route, password)
        self.edits["password"].clear()
        self.saved_route = route
        self.accept()

    def show_error(self, field: str, message: str) -> None:
        label = self.errors.get(field, self.errors["host"])
        label.setText(message)
        label.show()


class AccountsDialog(QDialog):
    """The trader's broker accounts: state at a glance, add/edit/remove, a Log in button per account."""

    account_added = Signal(int)
    account_changed = Signal(int)
    account_removed = Signal(int)
    logged_in = Signal(int)  # an account completed a login from this dialog
    login_dialog_opened = Signal(object)  # the LoginDialog

    def __init__(
        self,
        store: ProtectionStore,
        secrets: SecretStore,
        service: ProtectionService,
        parent: QWidget | None = None,
        *,
        routes: RouteMonitor | None = None,
    ) -> None:
        super().__init__(parent)
        self.store = store
        self.secrets = secrets
        self.service = service
        self.routes = routes
        self.manager = AccountManager(store, secrets, service, routes)
        self._watched_dialogs: set[int] = set()
        self.setWindowTitle("Broker accounts")
        self.resize(720, 360)

        self.model = AccountsModel(self)
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.doubleClicked.connect(lambda _index: self.edit_selected())
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._update_buttons())

        self.add_kite = QPushButton("Add &Zerodha…", self)
        self.add_upstox = QPushButton("Add &Upstox…", self)
        self.edit_button = QPushButton("&Edit…", self)
        self.remove_button = QPushButton("&Remove…", self)
        self.route_button = QPushButton("Order &route…", self)
        self.route_button.setToolTip("How this account's orders reach the broker from a registered static IP")
        self.check_button = QPushButton("&Check order route", self)
        self.check_button.setToolTip(
            "Cancel an order that cannot exist, through the route: 'IP not allowed' and 'order not found' "
            "are different answers. Nothing is placed."
        )
        close = QPushButton("Close", self)
        for button in (
            self.add_kite,
            self.add_upstox,
            self.edit_button,
            self.remove_button,
            self.route_button,
            self.check_button,
            close,
        ):
            button.setAutoDefault(False)
        self.route_button.clicked.connect(self.edit_route)
        self.check_button.clicked.connect(self.check_route)
        self.before_you_start = QLabel(BEFORE_YOU_START, self)
        self.before_you_start.setObjectName("beforeYouStart")
        self.before_you_start.setWordWrap(True)
        self.before_you_start.setTextFormat(Qt.TextFormat.RichText)
        self.route_status = QLabel(self)
        self.route_status.setObjectName("routeStatus")
        self.route_status.setWordWrap(True)
        self.route_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.add_kite.clicked.connect(lambda: self.add_account("kite"))
        self.add_upstox.clicked.connect(lambda: self.add_account("upstox"))
        self.edit_button.clicked.connect(self.edit_selected)
        self.remove_button.clicked.connect(self.remove_selected)
        close.clicked.connect(self.accept)

        self.keyring_note = QLabel(
            "No system keyring was found: API secrets and logins are kept in memory until TrailStop quits.",
            self,
        )
        self.keyring_note.setWordWrap(True)
        self.keyring_note.setStyleSheet("color: #b35c00;")
        self.empty_note = QLabel("No broker account yet: add your Zerodha or Upstox API app.", self)

        buttons = QHBoxLayout()
        for button in (self.add_kite, self.add_upstox, self.edit_button, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(close)
        route_buttons = QHBoxLayout()
        route_buttons.addWidget(self.route_button)
        route_buttons.addWidget(self.check_button)
        route_buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.before_you_start)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.empty_note)
        layout.addWidget(self.keyring_note)
        layout.addLayout(route_buttons)
        layout.addWidget(self.route_status)
        layout.addLayout(buttons)

        service.session_state_changed.connect(self._on_session_state_changed)
        if routes is not None:
            routes.route_checked.connect(self._on_route_checked)
        self.reload()

    # ----------------------------------------------------------------- list

    def reload(self) -> None:
        accounts = self.store.accounts()
        states = {aid: s.state.value for aid, s in self.service.sessions.items()}
        selected = self.selected_account()
        self.model.reset(accounts, states)
        for row, account in enumerate(accounts):
            button = QPushButton("Log in", self.table)
            button.setObjectName(f"login-{account.id}")
            button.setAutoDefault(False)
            button.setEnabled(account.id in self.service.sessions)
            button.setToolTip(f"Log in to {account_title(account)} in the broker's own page")
            button.clicked.connect(lambda _checked=False, aid=account.id: self.open_login(aid))
            self.table.setIndexWidget(self.model.index(row, AccountsModel.LOGIN_COLUMN), button)
        if selected is not None:
            self.select_account(selected.id)
        self.empty_note.setVisible(not accounts)
        self.keyring_note.setVisible(not self.secrets.probe())
        self._update_buttons()

    def login_button(self, account_id: int) -> QPushButton | None:
        row = self.model.row_of(account_id)
        if row is None:
            return None
        widget = self.table.indexWidget(self.model.index(row, AccountsModel.LOGIN_COLUMN))
        return widget if isinstance(widget, QPushButton) else None

    def selected_account(self) -> AccountRecord | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self.model.account_at(rows[0].row()) if rows else None

    def select_account(self, account_id: int) -> None:
        row = self.model.row_of(account_id)
        if row is not None:
            self.table.selectRow(row)

    def _update_buttons(self) -> None:
        account = self.selected_account()
        has = account is not None
        self.edit_button.setEnabled(has)
        self.remove_button.setEnabled(has)
        routable = has and self.routes is not None and account is not None and not account.is_paper
        self.route_button.setEnabled(routable)
        self.check_button.setEnabled(routable and account is not None and account.id in self.service.sessions)
        self._show_route(account)

    # ----------------------------------------------------------------- order route

    def _show_route(self, account: AccountRecord | None) -> None:
        if account is None or self.routes is None:
            self.route_status.clear()
            return
        if account.is_paper:
            self.route_status.setText("Paper trading: orders never leave this machine; no route needed.")
            return
        text = f"Order route: <b>{self.routes.route(account.id).describe()}</b>"
        check = self.routes.checks.get(account.id)
        if check is not None:
            colour = "#c62828" if check.failed else "#1b7f3b" if check.state.value == "ok" else "#8a6d00"
            text += f" — <span style='color:{colour}'>{html.escape(check.message)}</span>"
        else:
            text += " — not checked yet"
        self.route_status.setText(text)

    def edit_route(self) -> RouteForm | None:
        account = self.selected_account()
        if account is None or self.routes is None:
            return None
        routes = self.routes

        def save(route: OrderRoute, password: str | None) -> None:
            routes.set_route(account.id, route, password)

        form = RouteForm(account, routes.route(account.id), save, self)
        form.accepted.connect(lambda: self._show_route(self.selected_account()))
        form.open()
        return form

    @async_slot()
    async def check_route(self) -> None:
        """The "Check order route" button: say it is checking, await the probe, show its answer."""
        account = self.selected_account()
        if account is None or self.routes is None:
            return
        self.route_status.setText(
            f"Order route: <b>{self.routes.route(account.id).describe()}</b> — checking…"
        )
        await self.routes.check_now(account.id)
        if shiboken6.isValid(self):  # the dialog may have been closed while the broker answered
            self._show_route(self.selected_account())

    def _on_route_checked(self, account_id: int, _check: RouteCheck) -> None:
        account = self.selected_account()
        if account is not None and account.id == account_id:
            self._show_route(account)

    def _on_session_state_changed(self, account_id: int, state: str) -> None:
        self.model.set_state(account_id, state)

    # ----------------------------------------------------------------- add, edit, remove

    def add_account(self, broker: str) -> AccountForm:
        form = AccountForm(broker, self.manager.add, None, self, keyring=self.secrets.persistent)
        form.accepted.connect(lambda: self._on_form_saved(form, added=True))
        form.open()
        return form

    def edit_selected(self) -> AccountForm | None:
        account = self.selected_account()
        if account is None:
            return None
        form = AccountForm(
            account.broker,
            lambda data: self.manager.update(account.id, data),
            account,
            self,
            keyring=self.secrets.persistent,
        )
        form.accepted.connect(lambda: self._on_form_saved(form, added=False))
        form.open()
        return form

    def _on_form_saved(self, form: AccountForm, *, added: bool) -> None:
        if form.account is None:
            return
        self.reload()
        self.select_account(form.account.id)
        (self.account_added if added else self.account_changed).emit(form.account.id)

    def remove_selected(self) -> bool:
        """Ask, then remove the selected account. Refused, saying why, while it has live protections."""
        account = self.selected_account()
        if account is None:
            return False
        title = account_title(account)
        live, finished = self.manager.removal_check(account.id)
        if live:
            QMessageBox.warning(
                self,
                "Account in use",
                f"{title} has {live} live protection{'s' if live != 1 else ''}.\n\n"
                "Exit or remove them first: nothing would watch them once the account is gone.",
            )
            return False
        details = "Its API secret and login are deleted from the system keyring."
        if finished:
            details += (
                f" Its {finished} finished protection{'s' if finished != 1 else ''} and "
                f"{'their' if finished != 1 else 'its'} journal are deleted too."
            )
        answer = QMessageBox.question(
            self,
            "Remove account",
            f"Remove {title}?\n\n{details}",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return False
        try:
            self.manager.remove(account.id)
        except AccountInUse as exc:
            QMessageBox.warning(self, "Account in use", str(exc))
            return False
        self.reload()
        self.account_removed.emit(account.id)
        return True

    # ----------------------------------------------------------------- login

    def open_login(self, account_id: int) -> LoginDialog | None:
        session = self.service.sessions.get(account_id)
        if session is None:
            return None
        dialog = LoginDialog.open_for(session, self)
        key = id(dialog)
        if key not in self._watched_dialogs:
            self._watched_dialogs.add(key)
            dialog.logged_in.connect(lambda aid, d=dialog: self._on_logged_in(aid, d.user_id))
            dialog.destroyed.connect(lambda *_a: self._watched_dialogs.discard(key))
        self.login_dialog_opened.emit(dialog)
        return dialog

    def _on_logged_in(self, account_id: int, user_id: str) -> None:
        try:
            self.manager.record_login(account_id, user_id)
        except KeyError:
            return  # removed meanwhile
        self.reload()
        self.logged_in.emit(account_id)
