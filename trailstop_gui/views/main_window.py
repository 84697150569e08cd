"""The main window: accounts, order entry, live positions with their chart and journal, and the tray.

The window only shows state and forwards the trader's decisions to the ProtectionService. It is never on
the path from a tick to an exit: closing it, or keeping it busy, changes nothing about when a stop fires.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QEvent, QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSplitter,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from trailstop_gui import __version__
from trailstop_gui.models.domain import Status
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.notifier import Alert, AlertKind, Notifier
from trailstop_gui.services.protection_service import ProtectionService
from trailstop_gui.services.session import SessionState, not_watched_reason
from trailstop_gui.settings import load_settings
from trailstop_gui.views import theme
from trailstop_gui.views.account_bar import AccountBar
from trailstop_gui.views.detail_pane import ChartHistory, DetailPane
from trailstop_gui.views.journal_view import JournalView
from trailstop_gui.views.positions_model import ACCOUNT_NOT_LOADED, RowState
from trailstop_gui.views.positions_view import PositionsView, ask_confirmation, place_safety_beside_stop
from trailstop_gui.views.tray import TrayController

log = logging.getLogger("trailstop.views")

README = Path(__file__).resolve().parents[2] / "README.md"  # beside the sources; absent when frozen

SETTINGS_PREFIX = "main_window/"
CLOSE_HINT_KEY = "tray/close_hint_shown"

ConfirmFn = Callable[[str, str, str], bool]


class MainWindow(QMainWindow):
    """Top-level window; remembers its geometry and splitters, follows the system's colour scheme."""

    accounts_requested = Signal()
    login_requested = Signal(int)  # account id
    settings_requested = Signal()
    quit_requested = Signal()  # the trader confirmed Quit: the application should shut down

    def __init__(
        self,
        service: ProtectionService,
        store: ProtectionStore,
        notifier: Notifier,
        data_location: str,
        *,
        settings: QSettings | None = None,
        tray: TrayController | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.service = service
        self.store = store
        self.notifier = notifier
        self.data_location = data_location
        self.qsettings = settings if settings is not None else QSettings()
        self.confirm: ConfirmFn = lambda title, text, accept: ask_confirmation(self, title, text, accept)
        self._quitting = False
        self._applied_dark: bool | None = None
        self._tick_second = 0
        self._journal: JournalView | None = None
        self._banner_account: int | None = None
        self.order_entry: QWidget | None = None
        self.getting_started_box: QMessageBox | None = None
        self.setWindowTitle("TrailStop")
        self.setWindowIcon(theme.app_icon())
        self.setObjectName("mainWindow")
        self.setMinimumSize(760, 500)

        # ----------------------------------------------------------------- the parts
        self.account_bar = AccountBar(self)
        self.account_bar.login_requested.connect(self.login_requested)
        self.account_bar.accounts_requested.connect(self.accounts_requested)
        self.account_bar.set_sessions(list(service.sessions.values()))

        self.banner = QWidget(self)
        self.banner.setObjectName("alertBanner")
        self.banner.setAutoFillBackground(True)
        self.banner_text = QLabel(self.banner)
        self.banner_text.setWordWrap(True)
        self.banner_login = QPushButton("Log in…", self.banner)
        self.banner_login.clicked.connect(self._on_banner_login)
        self.banner_dismiss = QPushButton("Dismiss", self.banner)
        self.banner_dismiss.clicked.connect(self.banner.hide)
        banner_layout = QHBoxLayout(self.banner)
        banner_layout.setContentsMargins(10, 6, 10, 6)
        banner_layout.addWidget(self.banner_text, 1)
        banner_layout.addWidget(self.banner_login)
        banner_layout.addWidget(self.banner_dismiss)
        self.banner.hide()

        self.order_area = QWidget(self)
        self.order_area.setObjectName("orderArea")
        self.order_area.setMinimumWidth(260)
        self._order_layout = QVBoxLayout(self.order_area)
        self._order_layout.setContentsMargins(0, 0, 0, 0)
        self.order_area.hide()  # until the order panel is set: no empty column

        self.positions = PositionsView(service, store, self)
        self.model = self.positions.model
        self.history = ChartHistory()
        self.detail = DetailPane(store, self.model, self.history, self)

        self.right_splitter = QSplitter(Qt.Orientation.Vertical, self)
        self.right_splitter.setObjectName("rightSplitter")
        self.right_splitter.addWidget(self.positions)
        self.right_splitter.addWidget(self.detail)
        self.right_splitter.setStretchFactor(0, 3)
        self.right_splitter.setStretchFactor(1, 2)
        self.right_splitter.setChildrenCollapsible(False)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.setObjectName("mainSplitter")
        self.splitter.addWidget(self.order_area)
        self.splitter.addWidget(self.right_splitter)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setChildrenCollapsible(False)

        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 0, 6, 4)
        layout.setSpacing(4)
        layout.addWidget(self.account_bar)
        layout.addWidget(self.banner)
        layout.addWidget(self.splitter, 1)
        self.setCentralWidget(central)

        self.tray = tray if tray is not None else TrayController(notifier, self)
        self.tray.apply_settings(load_settings(self.store))
        self.tray.show_requested.connect(self.show_and_raise)
        self.tray.notified.connect(self._on_tray_notified)
        self.tray.quit_requested.connect(self.request_quit)

        self._build_actions()
        self._build_status_bar()

        # ----------------------------------------------------------------- wiring
        service.snapshot_ready.connect(self._on_snapshot_ready)
        service.protection_changed.connect(self._on_protection_changed)
        service.session_state_changed.connect(self._on_session_state_changed)
        service.action_failed.connect(self._on_action_failed)
        notifier.alerted.connect(self._on_alerted)
        self.positions.selection_changed.connect(self.detail.show_protection)
        self.positions.message_posted.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.positions.action_failed.connect(self._on_action_failed)
        self.account_bar.states_changed.connect(self._update_attention)
        hints = QGuiApplication.styleHints()
        hints.colorSchemeChanged.connect(self._on_color_scheme_changed)

        self.setTabOrder(self.positions.table, self.positions.unprotected_table)
        self.setTabOrder(self.positions.unprotected_table, self.detail.journal)
        self._apply_colors()
        self._update_counts()
        self._update_attention()
        self._update_tick_label()
        self._restore_state()

    # ----------------------------------------------------------------- building

    def _build_actions(self) -> None:
        def action(
            text: str,
            shortcut: QKeySequence | QKeySequence.StandardKey | str | None,
            tip: str,
            slot: Callable[[], Any],
        ) -> QAction:
            act = QAction(text, self)
            if shortcut is not None:
                act.setShortcut(QKeySequence(shortcut))
            act.setStatusTip(tip)
            act.setToolTip(tip + (f" ({act.shortcut().toString()})" if shortcut is not None else ""))
            act.triggered.connect(slot)
            return act

        self.act_exit_all = action(
            "E&xit all…", "Ctrl+Shift+X", "Send market exits for every armed position", self.exit_all
        )
        self.act_journal = action("&Journal", "Ctrl+J", "Every event of every protection", self.open_journal)
        self.act_accounts = action(
            "&Accounts…",
            "Ctrl+Shift+A",
            "Add, edit or log in to broker accounts",
            self.accounts_requested.emit,
        )
        self.act_settings = action(
            "&Settings…",
            QKeySequence.StandardKey.Preferences,
            "Defaults, notifications",
            self.settings_requested.emit,
        )
        if self.act_settings.shortcut().isEmpty():
            self.act_settings.setShortcut(QKeySequence("Ctrl+,"))
        self.act_close = action(
            "&Close window", QKeySequence.StandardKey.Close, "Hide the window; protection goes on", self.close
        )
        self.act_quit = action("&Quit", QKeySequence.StandardKey.Quit, "Stop TrailStop", self.request_quit)
        if self.act_quit.shortcut().isEmpty():
            self.act_quit.setShortcut(QKeySequence("Ctrl+Q"))
        self.act_focus_order = action("&Order entry", "Alt+1", "Go to the order form", self._focus_order)
        self.act_focus_positions = action(
            "&Positions", "Alt+2", "Go to the positions table", self.positions.table.setFocus
        )
        self.act_focus_detail = action(
            "&Detail journal",
            "Alt+3",
            "Go to the selected protection's journal",
            self.detail.journal.setFocus,
        )
        self.act_about = action("&About TrailStop", None, "Version and data folder", self.show_about)
        self.act_getting_started = action(
            "&Getting started",
            QKeySequence.StandardKey.HelpContents,
            "API access, redirect URL, the demo",
            self.show_getting_started,
        )

        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        file_menu.addAction(self.act_accounts)
        file_menu.addAction(self.act_settings)
        file_menu.addSeparator()
        file_menu.addAction(self.act_close)
        file_menu.addAction(self.act_quit)
        positions_menu = menu.addMenu("&Positions")
        for act in self.positions.row_actions:
            positions_menu.addAction(act)
        positions_menu.addSeparator()
        for act in self.positions.group_actions:  # shown once the window has baskets
            positions_menu.addAction(act)
        positions_menu.addSeparator()
        positions_menu.addAction(self.act_exit_all)
        positions_menu.addSeparator()
        positions_menu.addAction(self.positions.act_protect)
        positions_menu.addAction(self.positions.act_refresh)
        positions_menu.addAction(self.positions.act_show_closed)
        view_menu = menu.addMenu("&View")
        view_menu.addAction(self.act_journal)
        view_menu.addSeparator()
        view_menu.addAction(self.act_focus_order)
        view_menu.addAction(self.act_focus_positions)
        view_menu.addAction(self.act_focus_detail)
        help_menu = menu.addMenu("&Help")
        help_menu.addAction(self.act_getting_started)
        help_menu.addSeparator()
        help_menu.addAction(self.act_about)

        self.toolbar = QToolBar("Main", self)
        self.toolbar.setObjectName("mainToolbar")
        self.toolbar.setMovable(False)
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.toolbar.addAction(self.act_exit_all)
        self.toolbar.addSeparator()
        self.toolbar.addAction(self.act_journal)
        self.toolbar.addAction(self.act_accounts)
        self.toolbar.addAction(self.act_settings)
        self.toolbar.toggleViewAction().setVisible(False)
        exit_button = self.toolbar.widgetForAction(self.act_exit_all)
        if exit_button is not None:
            exit_button.setObjectName("exitAllButton")
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.toolbar)
        for act in (
            self.act_exit_all,
            self.act_journal,
            self.act_accounts,
            self.act_settings,
            self.act_quit,
            self.act_close,
            self.act_focus_order,
            self.act_focus_positions,
            self.act_focus_detail,
        ):
            self.addAction(act)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.counts_label = QLabel(self)
        self.counts_label.setObjectName("countsLabel")
        self.tick_label = QLabel("", self)
        self.tick_label.setObjectName("tickLabel")
        self.tick_label.setToolTip(
            "The brokers' price feeds: live (with the time of the last price of a protected position),"
            " or which account is not watched and why"
        )
        for label in (self.counts_label, self.tick_label):
            label.setContentsMargins(10, 0, 10, 0)
            bar.addPermanentWidget(label)
        self._tick_timer = QTimer(self)
        self._tick_timer.setInterval(1000)
        self._tick_timer.timeout.connect(self._update_tick_label)
        self._tick_timer.start()

    # ----------------------------------------------------------------- public

    def set_order_entry(self, widget: QWidget) -> None:
        """Put the order panel in the left area."""
        if self.order_entry is not None:
            self._order_layout.removeWidget(self.order_entry)
            self.order_entry.setParent(None)
        self.order_entry = widget
        self._order_layout.addWidget(widget)
        self.order_area.show()
        self.setTabOrder(widget, self.positions.table)
        sizes = self.splitter.sizes()
        if sizes and sizes[0] == 0:
            width = max(300, widget.sizeHint().width())
            self.splitter.setSizes([width, max(400, sum(sizes) - width)])

    def refresh_accounts(self) -> None:
        """Show the service's accounts again (after one was added or removed)."""
        self.account_bar.set_sessions(list(self.service.sessions.values()))
        self.positions.refresh_watch()
        self.positions.refresh_unprotected()
        self._update_counts()
        self._update_attention()
        self._update_tick_label()

    def show_and_raise(self) -> None:
        self.show()
        if self.isMinimized():
            self.showNormal()
        self.raise_()
        self.activateWindow()

    def open_journal(self) -> JournalView:
        if self._journal is None:
            self._journal = JournalView(self.store, self, changed=self.service.protection_changed)
            self._journal.set_colors(theme.colors(self.palette()))
        else:
            self._journal.reload()
        self._journal.show()
        self._journal.raise_()
        self._journal.activateWindow()
        return self._journal

    @property
    def journal_window(self) -> JournalView | None:
        return self._journal

    def exit_all(self) -> list[int]:
        """Ask, naming how many positions, then exit every armed one at market."""
        armed = self.store.protections([Status.OPEN])
        if not armed:
            self.statusBar().showMessage("No armed positions to exit.", 6000)
            return []
        n = len(armed)
        symbols = sorted({p.symbol for p in armed})
        names = ", ".join(symbols[:8]) + (f" and {len(symbols) - 8} more" if len(symbols) > 8 else "")
        noun = "position" if n == 1 else "positions"
        text = (
            f"Exit all {n} protected {noun} now?\n\n{names}\n\n"
            "TrailStop sends a MARKET exit order for each. Pending entries and exits already under way "
            "are not touched."
        )
        if load_settings(self.store).confirm_exit_all and not self.confirm("Exit all", text, f"Exit all {n}"):
            return []
        try:
            # Each exit is reported as Exit now reports it: "exit sent (order ...)" once the broker took it.
            done = self.positions.ask_exits(armed, self.service.exit_all)
        except Exception as exc:
            self._on_action_failed("Exit all", str(exc))
            return []
        self.statusBar().showMessage(self._exit_all_summary(armed, done), 15000)
        return done

    def _exit_all_summary(self, armed: list[Any], done: list[int]) -> str:
        """What is true right after Exit all: the exits are requested, not sent; which cannot go out now."""
        n = len(armed)
        noun = "position" if n == 1 else "positions"
        text = f"Exit requested for {len(done)} of {n} {noun}; each is reported once the broker takes it."
        stuck: dict[int, int] = {}
        for p in armed:
            if p.id in done and self.model.not_watched(p.account_id):
                stuck[p.account_id] = stuck.get(p.account_id, 0) + 1
        if stuck:
            accounts = "; ".join(
                f"{self._account_label(a)}: {self.model.not_watched(a)} ({count})"
                for a, count in stuck.items()
            )
            text += f" NOT sent yet for {sum(stuck.values())}, its account not watched: {accounts}."
        return text

    def active_protections(self) -> int:
        return len(self.store.live())

    def request_quit(self, *, closing: bool = False) -> bool:
        """Quit, after asking when protections are active (they stop being watched until the next start).

        ``closing``: the window's close button on a desktop with no tray, where closing is quitting.
        """
        active = self.active_protections()
        if active:
            noun = "protection is" if active == 1 else "protections are"
            stop = "TrailStop stops watching prices: no stop will trail or fire until you start it again."
            if closing:
                title, accept = "Close TrailStop", "Close and stop protecting"
                text = (
                    f"{active} {noun} active.\n\nThis desktop has no system tray, so closing the window"
                    f" quits TrailStop: {stop} Your positions stay open at the broker.\n\n"
                    "To stay protected, keep the window open (minimise it)."
                )
            elif self.tray.available:
                title, accept = "Quit TrailStop", "Quit anyway"
                text = (
                    f"{active} {noun} active.\n\nIf you quit, {stop} Your positions stay open at the"
                    " broker.\n\nClose the window instead to keep protecting from the tray."
                )
            else:
                title, accept = "Quit TrailStop", "Quit anyway"
                text = (
                    f"{active} {noun} active.\n\nIf you quit, {stop} Your positions stay open at the"
                    " broker.\n\nTo stay protected, keep TrailStop running (minimise the window)."
                )
            if not self.confirm(title, text, accept):
                return False
        self._quitting = True
        self.save_state()
        self.quit_requested.emit()
        return True

    def prepare_quit(self) -> None:
        """The application is quitting without asking (a signal, a logout): let the window close."""
        self._quitting = True
        self.save_state()

    def stop(self) -> None:
        """Stop timers and background fetches (before the services shut down)."""
        self._tick_timer.stop()
        self.positions.stop()

    def getting_started_text(self) -> str:
        """What a new trader needs to connect a broker, with links into README's sections."""
        readme = README if README.exists() else None

        def section(anchor: str, words: str) -> str:
            if readme is None:
                return words
            url = QUrl.fromLocalFile(str(readme))
            url.setFragment(anchor)
            return f"<a href='{url.toString()}'>{words}</a>"

        return (
            "<h3>Getting started</h3>"
            "<p><b>The demo market</b> needs no account: a simulated exchange inside TrailStop (start it with"
            " <code>--demo</code>, or choose it on the first start). Place an order and watch the stop trail"
            " and fire.</p>"
            "<p><b>Zerodha</b>: a Kite Connect app on <a href='https://developers.kite.trade'>"
            "developers.kite.trade</a> gives an API key and secret. <b>Upstox</b>: an app under <a href="
            "'https://account.upstox.com/developer/apps'>account.upstox.com/developer/apps</a> gives a client"
            " id and secret.</p>"
            "<p><b>Redirect URL</b>: register one such as <code>https://127.0.0.1:5000/callback</code> with"
            " the broker and enter exactly the same in Accounts. Nothing needs to run there: TrailStop's"
            " login window stops at it and reads the login.</p>"
            "<p><b>Static IP</b>: since April 2026 both brokers take API orders only from an IP registered on"
            " their developer console.</p>"
            f"<p>More: {section('getting-started', 'Getting started')} · "
            f"{section('how-a-stop-trails', 'How a stop trails')} · "
            f"{section('broker-held-safety-stop', 'Broker-held safety stop')} · "
            f"{section('where-the-data-lives', 'Where the data lives')}</p>"
        )

    def show_getting_started(self) -> None:
        box = QMessageBox(self)
        box.setWindowTitle("Getting started")
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        box.setText(self.getting_started_text())
        box.setStandardButtons(QMessageBox.StandardButton.Close)
        self.getting_started_box = box
        box.open()

    def show_about(self) -> None:
        QMessageBox.about(
            self,
            "About TrailStop",
            f"<b>TrailStop {__version__}</b><br>Trailing stop-losses for Zerodha and Upstox.<br><br>"
            f"Data folder:<br><code>{self.data_location}</code>",
        )

    # ----------------------------------------------------------------- signals in

    def _on_snapshot_ready(self, snapshot: Mapping[str, Any]) -> None:
        touched = self.model.apply_snapshot(snapshot)
        self.history.record_snapshot(snapshot)
        self.detail.on_snapshot(touched)
        at = self.model.last_tick_at
        if at is not None and int(at) != self._tick_second:
            self._tick_second = int(at)
            self._update_tick_label()

    def _on_protection_changed(self, pid: int) -> None:
        self.detail.on_protection_changed(pid)
        self._update_counts()
        self._update_attention()

    def _on_session_state_changed(self, account_id: int, state: str) -> None:
        if self.account_bar.chip(account_id) is None and account_id in self.service.sessions:
            self.account_bar.set_sessions(list(self.service.sessions.values()))
        self.account_bar.set_state(account_id, state)
        if state == "live" and self._banner_account == account_id:
            self.banner.hide()
        self._update_counts()  # the positions view has marked the account's rows (not) watched
        self._update_attention()
        self._update_tick_label()

    def _on_action_failed(self, what: str, why: str) -> None:
        self.statusBar().showMessage(f"{what} failed: {why}", 15000)
        self._show_banner(f"<b>{what} failed.</b> {why}", account_id=None)

    def _on_alerted(self, alert: Alert) -> None:
        self.statusBar().showMessage(f"{alert.title}: {alert.message}", 15000)
        if alert.urgent:
            login = alert.account_id if alert.kind is AlertKind.LOGIN_NEEDED else None
            self._show_banner(f"<b>{alert.title}.</b> {alert.message}", account_id=login)
        self._update_attention()

    def _on_tray_notified(self, alert: Alert) -> None:
        if self.tray.available:
            return
        # No tray to show it in: the window comes forward and keeps the alert until it is dismissed.
        login = alert.account_id if alert.kind is AlertKind.LOGIN_NEEDED else None
        self._show_banner(f"<b>{alert.title}.</b> {alert.message}", account_id=login)
        self.show_and_raise()

    def _on_banner_login(self) -> None:
        if self._banner_account is not None:
            self.login_requested.emit(self._banner_account)

    def _on_color_scheme_changed(self, _scheme: Qt.ColorScheme) -> None:
        app = QApplication.instance()
        if isinstance(app, QApplication) and load_settings(self.store).theme == "system":
            theme.apply_theme(app, "system")
        self._apply_colors()

    def changeEvent(self, event: QEvent) -> None:
        palette_changed = event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange)
        if palette_changed and hasattr(self, "toolbar"):  # not during construction
            # Once every child has taken the new palette too (the chart reads its own).
            QTimer.singleShot(0, self._apply_colors)
        super().changeEvent(event)

    # ----------------------------------------------------------------- state shown

    def _show_banner(self, html: str, *, account_id: int | None) -> None:
        self._banner_account = account_id
        self.banner_text.setText(html)
        self.banner_login.setVisible(account_id is not None)
        self.banner.show()

    def _apply_colors(self) -> None:
        colors = theme.colors(self.palette())
        if self._applied_dark is colors.dark:
            return
        self._applied_dark = colors.dark
        self.positions.set_colors(colors)
        self.account_bar.set_colors(colors)
        if self.order_entry is not None and self.order_entry.styleSheet():
            # A widget with a style sheet keeps the palette its children had when it was polished:
            # setting the sheet again re-polishes them with the new scheme's colours.
            sheet = self.order_entry.styleSheet()
            self.order_entry.setStyleSheet("")
            self.order_entry.setStyleSheet(sheet)
        self.detail.set_colors(colors)
        if self._journal is not None:
            self._journal.set_colors(colors)
        self.banner.setStyleSheet(
            f"QWidget#alertBanner {{ background: {colors.failed_bg.name()}; border: 1px solid "
            f"{colors.failed.name()}; border-radius: 4px; }}"
        )
        exit_button = self.toolbar.widgetForAction(self.act_exit_all)
        if exit_button is not None:
            exit_button.setStyleSheet(f"QToolButton {{ color: {colors.failed.name()}; font-weight: bold; }}")

    def _update_counts(self) -> None:
        counts = self.model.counts()
        parts = []
        for state, word in (
            (RowState.NOT_WATCHED, "NOT WATCHED"),
            (RowState.ARMED, "armed"),
            (RowState.PAUSED, "paused"),
            (RowState.PENDING, "pending"),
            (RowState.IN_PROGRESS, "exiting"),
            (RowState.FAILED, "exit failed"),
        ):
            if counts[state]:
                parts.append(f"{counts[state]} {word}")
        self.counts_label.setText(" · ".join(parts) if parts else "No active protections")
        failed = counts[RowState.FAILED] + counts[RowState.NOT_WATCHED]
        self.counts_label.setStyleSheet(
            f"color: {theme.colors(self.palette()).failed.name()}; font-weight: bold;" if failed else ""
        )

    def _update_tick_label(self) -> None:
        """The feeds' state, from the sessions: a quiet instrument on a live feed is not a stale feed (the
        feed's own watchdog catches a silent socket), and the order form's polled prices do not come here."""
        colors = theme.colors(self.palette())
        down = []
        for session in self.service.sessions.values():
            why = not_watched_reason(getattr(session, "state", SessionState.LIVE))
            if why:
                down.append(f"{getattr(session, 'label', 'account')}: {why}")
        for account_id in sorted(self._accounts_not_loaded()):
            down.append(f"{self._account_label(account_id)}: {ACCOUNT_NOT_LOADED}")
        at = self.model.last_tick_at
        if down:
            self.tick_label.setText(" · ".join(down))
            self.tick_label.setStyleSheet(f"color: {colors.failed.name()}; font-weight: bold;")
            return
        self.tick_label.setStyleSheet("")
        if at is not None:
            self.tick_label.setText(f"Last tick {datetime.fromtimestamp(at):%H:%M:%S}")
        elif self.service.sessions:
            self.tick_label.setText("Feed live")
        else:
            self.tick_label.setText("No account connected")

    def _accounts_not_loaded(self) -> set[int]:
        """Accounts with live protections in the table and no session this run."""
        return {
            row.account_id
            for row in self.model.rows_view()
            if row.state is RowState.NOT_WATCHED and row.not_watched == ACCOUNT_NOT_LOADED
        }

    def _account_label(self, account_id: int) -> str:
        try:
            return self.store.account(account_id).label
        except KeyError:
            return f"account {account_id}"

    def _update_attention(self) -> None:
        reasons = self.account_bar.troubled()
        counts = self.model.counts()
        failed = counts[RowState.FAILED]
        if failed:
            reasons.insert(0, f"{failed} exit{'s' if failed > 1 else ''} failed")
        unwatched = counts[RowState.NOT_WATCHED]
        if unwatched:
            noun = "protection is" if unwatched == 1 else "protections are"
            reasons.insert(0, f"{unwatched} {noun} NOT watched: no stop fires")
        self.tray.set_attention(bool(reasons), reasons)

    def _focus_order(self) -> None:
        if self.order_entry is not None:
            self.order_entry.setFocus(Qt.FocusReason.ShortcutFocusReason)

    # ----------------------------------------------------------------- geometry and closing

    def _splitters(self) -> dict[str, QSplitter]:
        return {
            "splitter": self.splitter,
            "right_splitter": self.right_splitter,
            "positions_splitter": self.positions.splitter,
            "detail_splitter": self.detail.splitter,
        }

    def save_state(self) -> None:
        s = self.qsettings
        s.setValue(SETTINGS_PREFIX + "geometry", self.saveGeometry())
        s.setValue(SETTINGS_PREFIX + "state", self.saveState())
        for name, splitter in self._splitters().items():
            s.setValue(SETTINGS_PREFIX + name, splitter.saveState())
        s.setValue(SETTINGS_PREFIX + "positions_header", self.positions.table.horizontalHeader().saveState())
        s.setValue(SETTINGS_PREFIX + "show_closed", self.positions.act_show_closed.isChecked())
        s.sync()

    def _restore_state(self) -> None:
        s = self.qsettings

        def blob(key: str) -> QByteArray | None:
            value = s.value(SETTINGS_PREFIX + key)
            return value if isinstance(value, QByteArray) and not value.isEmpty() else None

        geometry = blob("geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1280, 800)
        state = blob("state")
        if state is not None:
            self.restoreState(state)
        restored = False
        for name, splitter in self._splitters().items():
            saved = blob(name)
            if saved is not None:
                restored = splitter.restoreState(saved) or restored
        if not restored:
            self.splitter.setSizes([320, 960])
            self.right_splitter.setSizes([430, 320])
            self.positions.splitter.setSizes([300, 130])
            self.detail.splitter.setSizes([540, 480])
        header = blob("positions_header")
        if header is not None:
            table_header = self.positions.table.horizontalHeader()
            if table_header.restoreState(header):
                # A layout saved before the Safety column existed would leave it last: put it by Stop.
                place_safety_beside_stop(table_header)
        show_closed = s.value(SETTINGS_PREFIX + "show_closed", False)
        self.positions.act_show_closed.setChecked(show_closed in (True, "true", "1", 1))

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_state()
        if self._quitting:
            event.accept()
            return
        if self.tray.available and load_settings(self.store).close_to_tray:
            event.ignore()
            self.hide()
            if self.qsettings.value(CLOSE_HINT_KEY, False) not in (True, "true"):
                self.tray.show_message(
                    "TrailStop is still protecting",
                    "Your stops keep trailing and firing with the window closed. "
                    "Use Quit in the tray menu to stop TrailStop.",
                )
                self.qsettings.setValue(CLOSE_HINT_KEY, True)
            return
        if self.request_quit(closing=not self.tray.available):
            event.accept()
        else:
            event.ignore()
