"""The embedded broker login: a web view that only goes to the broker's hosts and stops at the redirect.

The flow: the view opens the Kite login page or the Upstox authorisation dialog; the trader logs in there
(2FA and all); the broker redirects to the app's redirect URL. That navigation is never loaded: the view
reads ``request_token`` (Kite) or ``code`` and ``state`` (Upstox) from it, closes, and awaits the token
exchange (blocking HTTP, on a worker thread) in one async slot on the qasync loop. Cookies, cache and
storage stay in memory (an off-the-record profile), so nothing of the broker's web session lands in a file.

QtWebEngineWidgets must be imported before the QApplication exists: import this module early.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import secrets as random_tokens
from collections.abc import Sequence
from typing import ClassVar

import shiboken6
from PySide6.QtCore import QCoreApplication, QObject, Qt, QTimer, QUrl, Signal
from PySide6.QtWebEngineCore import (
    QWebEngineDownloadRequest,
    QWebEnginePage,
    QWebEngineProfile,
    QWebEngineSettings,
    QWebEngineUrlRequestInfo,
    QWebEngineUrlRequestInterceptor,
)
from PySide6.QtWebEngineWidgets import QWebEngineView
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from trailstop_gui.services.accounts import LoginPolicy, account_title, origin_of, spec_for
from trailstop_gui.services.errors import BrokerError, redact
from trailstop_gui.services.protection_service import ProtectionService
from trailstop_gui.services.session import AccountSession, SessionState
from trailstop_gui.views.async_slot import async_slot

log = logging.getLogger("trailstop.login")

# Widgets created before the QApplication are not allowed, but this attribute must be set before it.
if QCoreApplication.instance() is None:
    QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_ShareOpenGLContexts)


def login_profile(parent: QObject) -> QWebEngineProfile:
    """A fresh off-the-record profile: cookies, cache and storage in memory only, gone with ``parent``.

    One per login dialog: one account's web session can never log another account in as the wrong user.
    """
    profile = QWebEngineProfile(parent)  # no storage name: off the record
    assert profile.isOffTheRecord()
    profile.setHttpCacheType(QWebEngineProfile.HttpCacheType.MemoryHttpCache)
    profile.setPersistentCookiesPolicy(QWebEngineProfile.PersistentCookiesPolicy.NoPersistentCookies)
    profile.setPersistentPermissionsPolicy(QWebEngineProfile.PersistentPermissionsPolicy.AskEveryTime)
    profile.setSpellCheckEnabled(False)
    profile.downloadRequested.connect(_refuse_download)
    settings = profile.settings()
    attr = QWebEngineSettings.WebAttribute
    for attribute, on in (
        (attr.PluginsEnabled, False),
        (attr.PdfViewerEnabled, False),
        (attr.ScreenCaptureEnabled, False),
        (attr.JavascriptCanAccessClipboard, False),
        (attr.JavascriptCanPaste, False),
        (attr.LocalContentCanAccessFileUrls, False),
        (attr.LocalContentCanAccessRemoteUrls, False),
        (attr.NavigateOnDropEnabled, False),
        (attr.DnsPrefetchEnabled, False),
        (attr.HyperlinkAuditingEnabled, False),
    ):
        settings.setAttribute(attribute, on)
    return profile


# Every LoginDialog not yet destroyed. Chromium crashes the process at exit if a profile is released while
# one of its pages still exists, which is what happens when the QApplication goes before a dialog does.
_alive: dict[int, LoginDialog] = {}


def delete_login_dialogs() -> None:
    """Delete every login dialog now (pages before their profiles). Runs on aboutToQuit and at exit."""
    for dialog in list(_alive.values()):
        if shiboken6.isValid(dialog):
            shiboken6.delete(dialog)
    _alive.clear()


atexit.register(delete_login_dialogs)


def _refuse_download(download: QWebEngineDownloadRequest) -> None:
    # A login needs no downloads, and a downloaded file is exactly what must not land on disk.
    log.warning("login view: refused a download from %s", origin_of(download.url().toString()))
    download.cancel()


def _encoded(url: QUrl) -> str:
    return bytes(url.toEncoded().data()).decode("ascii", "replace")


class HostInterceptor(QWebEngineUrlRequestInterceptor):
    """Every request of the login's pages (scripts, images, XHR, fetch, WebSockets, forms), not only the
    navigations GuardedPage decides: anything not on the broker's login hosts (or the simulator's origin)
    is blocked before it leaves, so a script in the page cannot send what the trader types elsewhere.

    Runs on Chromium's IO thread: it only reads the immutable policy and counts.
    """

    def __init__(self, policy: LoginPolicy, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.policy = policy
        self.blocked: list[str] = []  # origins only (a blocked URL may carry a token)

    def interceptRequest(self, info: QWebEngineUrlRequestInfo) -> None:
        url = _encoded(info.requestUrl())
        if self.policy.allows_request(url):
            return
        info.block(True)
        origin = origin_of(url)
        self.blocked.append(origin)
        log.warning("login view: blocked a request to %s", origin)


class GuardedPage(QWebEnginePage):
    """A page that loads only what ``policy`` allows and never loads the redirect URL."""

    redirect_reached = Signal(str)  # the full redirect URL: read it, never log it
    navigation_refused = Signal(str)  # the full URL that was refused

    def __init__(
        self, policy: LoginPolicy, profile: QWebEngineProfile, parent: QObject | None = None
    ) -> None:
        super().__init__(profile, parent)
        self.policy = policy

    def decide(self, url: str, is_main_frame: bool) -> bool:
        if self.policy.is_redirect(url):
            if is_main_frame:
                self.redirect_reached.emit(url)
            else:
                self.navigation_refused.emit(url)
            return False
        if self.policy.allows(url):
            return True
        self.navigation_refused.emit(url)
        return False

    def acceptNavigationRequest(
        self,
        url: QUrl | str,
        type: QWebEnginePage.NavigationType,
        isMainFrame: bool,
    ) -> bool:
        return self.decide(_encoded(url) if isinstance(url, QUrl) else url, isMainFrame)

    def createWindow(self, type: QWebEnginePage.WebWindowType) -> QWebEnginePage:
        # A popup goes through the same policy; an allowed one opens in this view (there is one window).
        return _PopupCatcher(self)

    def chooseFiles(
        self,
        mode: QWebEnginePage.FileSelectionMode,
        oldFiles: list[str] | Sequence[str],
        acceptedMimeTypes: list[str] | Sequence[str],
    ) -> list[str]:
        # A login never needs a file from this machine: no file dialog, nothing offered to the page.
        log.warning("login view: refused a file chooser")
        return []


class _PopupCatcher(QWebEnginePage):
    """Stands in for a new window: its first navigation is decided by the owner, then it goes away."""

    def __init__(self, owner: GuardedPage) -> None:
        super().__init__(owner.profile(), owner)
        self._owner = owner
        self._done = False

    def acceptNavigationRequest(
        self,
        url: QUrl | str,
        type: QWebEnginePage.NavigationType,
        isMainFrame: bool,
    ) -> bool:
        if self._done:
            return False
        self._done = True
        qurl = url if isinstance(url, QUrl) else QUrl(url)
        if self._owner.decide(_encoded(qurl), True):
            # Not from inside this decision: Chromium is still in the middle of it.
            QTimer.singleShot(0, self._owner, lambda: self._owner.setUrl(qurl))
        self.deleteLater()
        return False


_BANNER_STYLE = {
    "error": "background:#fdecea; color:#8a1c12; border:1px solid #f1aeb5;",
    "warning": "background:#fff4e5; color:#7a4a00; border:1px solid #ffd699;",
    "info": "background:#e8f1fb; color:#0b3d6e; border:1px solid #b6d4f2;",
}


class LoginDialog(QDialog):
    """Logs one account in through the broker's own page. Use ``open_for`` (one dialog per account)."""

    logged_in = Signal(int)  # account id: the token is in the keyring, the session is connecting
    login_failed = Signal(int, str)  # account id, why
    navigation_refused = Signal(str)  # the refused origin (scheme://host:port; never a path or query)
    exchange_started = Signal(int)  # account id: the redirect was read, the token exchange is running

    _open: ClassVar[dict[int, LoginDialog]] = {}

    @classmethod
    def open_for(cls, session: AccountSession, parent: QWidget | None = None) -> LoginDialog:
        """Show the account's login dialog, raising the one already open rather than opening a second."""
        dialog = cls._open.get(session.account_id)
        if dialog is None or not shiboken6.isValid(dialog):
            dialog = cls(session, parent)
        dialog.show()
        dialog.raise_()
        dialog.activateWindow()
        return dialog

    def __init__(self, session: AccountSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.account_id = session.account_id
        self.policy = LoginPolicy.for_account(session.account)
        self.broker_name = spec_for(session.account.broker).name
        self.user_id = ""  # the broker's user id, once logged in
        self._exchange: asyncio.Task[None] | None = None  # the token exchange, while it runs
        self._state = random_tokens.token_urlsafe(16)  # Upstox echoes it back: proves the answer is ours
        self._refused = False  # a navigation was refused since the last load started

        self.setWindowTitle(f"Log in: {account_title(session.account)}")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
        self.resize(560, 720)

        self.where = QLabel(self)
        self.where.setTextFormat(Qt.TextFormat.PlainText)
        self.where.setToolTip(f"This window only opens: {self.policy.describe()}")
        self.banner = QLabel(self)
        self.banner.setWordWrap(True)
        self.banner.setTextFormat(Qt.TextFormat.PlainText)
        self.banner.setContentsMargins(8, 6, 8, 6)
        self.banner.hide()

        # Order matters: a profile must outlive its pages, and a widget deletes its children in the order
        # they were added. The view (which owns the page) comes first, so it goes first.
        self.view = QWebEngineView(self)
        self.profile = login_profile(self)
        self.interceptor = HostInterceptor(self.policy, self.profile)
        self.profile.setUrlRequestInterceptor(self.interceptor)
        self.page = GuardedPage(self.policy, self.profile, self.view)
        self.view.setPage(self.page)
        # Queued: the page emits these from inside acceptNavigationRequest, where stopping or hiding the
        # view would re-enter Chromium mid-decision (and crash it).
        queued = Qt.ConnectionType.QueuedConnection
        self.page.redirect_reached.connect(self._on_redirect_reached, queued)
        self.page.navigation_refused.connect(self._on_navigation_refused, queued)
        self.page.urlChanged.connect(self._on_url_changed)
        self.page.loadStarted.connect(self._on_load_started)
        self.page.loadFinished.connect(self._on_load_finished)
        self.page.renderProcessTerminated.connect(self._on_render_process_terminated)

        self.status = QLabel(self)
        self.start_over = QPushButton("&Start over", self)
        self.start_over.setToolTip("Load the broker's login page again")
        self.start_over.clicked.connect(self.restart)
        cancel = QPushButton("Cancel", self)
        cancel.setAutoDefault(False)
        self.start_over.setAutoDefault(False)
        cancel.clicked.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.where)
        layout.addWidget(self.banner)
        layout.addWidget(self.view, 1)
        footer = QHBoxLayout()
        footer.addWidget(self.status, 1)
        footer.addWidget(self.start_over)
        footer.addWidget(cancel)
        layout.addLayout(footer)

        LoginDialog._open[self.account_id] = self
        key = id(self)
        app = QCoreApplication.instance()
        if app is not None and not app.property("trailstop_login_cleanup"):
            app.setProperty("trailstop_login_cleanup", True)
            app.aboutToQuit.connect(delete_login_dialogs)
        _alive[key] = self
        self.destroyed.connect(lambda *_args: _alive.pop(key, None))
        self.finished.connect(self._on_finished)
        self.restart()

    # ----------------------------------------------------------------- navigation

    def restart(self) -> None:
        """(Re)open the broker's login page."""
        if self._exchange is not None:
            return
        self._state = random_tokens.token_urlsafe(16)
        self._hide_banner()
        self.status.setText(f"Opening {self.broker_name}'s login page…")
        self.view.setUrl(QUrl(self.session.login_url(self._state)))

    def _on_url_changed(self, url: QUrl) -> None:
        shown = origin_of(url.toString())
        if url.scheme() == "https":
            self.where.setText(f"Secure connection to {shown}   ·   {self.broker_name} login")
        elif self.policy.origin is not None:
            self.where.setText(f"Simulator at {shown}   ·   {self.broker_name} login (no real broker)")
        else:
            self.where.setText(shown)

    def _on_load_started(self) -> None:
        self._refused = False

    def _on_load_finished(self, ok: bool) -> None:
        refused, self._refused = self._refused, False
        if self._exchange is not None:
            return
        if ok:
            self.status.setText(f"Log in with your {self.broker_name} user id and password.")
        elif not refused:  # a load we refused ends "not ok": that is no error of its own
            self.status.setText("The page did not load: check the connection, then Start over.")

    def _on_navigation_refused(self, url: str) -> None:
        self._refused = True
        origin = origin_of(url)
        log.warning("%s login: refused to open %s", self.broker_name, origin)
        self._show_banner(
            f"Blocked {origin}: this login window only opens {self.broker_name}'s own pages "
            f"({self.policy.describe()}).",
            "warning",
        )
        self.navigation_refused.emit(origin)

    def _on_render_process_terminated(self, *_args: object) -> None:
        if self._exchange is None:
            self._show_banner("The login page crashed. Start over to load it again.", "error")

    # ----------------------------------------------------------------- the redirect and the exchange

    @async_slot(str)
    async def _on_redirect_reached(self, url: str) -> None:
        """The broker sent the trader back: check its answer, trade it for a token, say how it went."""
        if self._exchange is not None:
            return  # already exchanging this login's token
        self._refused = True
        try:
            login_params = self._login_params(LoginPolicy.params(url))
        except ValueError as exc:
            self._fail(str(exc))
            return
        self._exchange = asyncio.current_task()
        self.view.stop()
        self.status.setText("Completing the login…")
        self.hide()  # closes itself; the exchange finishes in the background
        self.exchange_started.emit(self.account_id)
        try:
            # Blocking HTTP: on a worker thread, never on the GUI thread.
            info = await asyncio.to_thread(self.session.complete_login, login_params)
        except BrokerError as exc:
            failure: str | None = exc.message or type(exc).__name__
        except Exception as exc:
            failure = redact(f"{type(exc).__name__}: {exc}")
            log.error("login exchange failed: %s", failure)
        else:
            failure = None
        finally:
            self._exchange = None
        if not shiboken6.isValid(self):
            return  # the application quit while the broker answered
        if failure is not None:
            self._fail(f"The login did not complete: {failure}")
            return
        self.user_id = info.user_id or ""
        self.status.setText("Logged in.")
        self.view.setUrl(QUrl("about:blank"))  # drop the broker's page (and what it holds) from memory
        self.logged_in.emit(self.account_id)
        self.accept()

    def _login_params(self, params: dict[str, str]) -> dict[str, str]:
        """What ``complete_login`` needs, after the checks the redirect must pass. ValueError: refused."""
        if self.session.account.broker == "kite":
            if params.get("status", "success") != "success":
                raise ValueError("Zerodha did not complete the login. Start over to try again.")
            token = params.get("request_token", "")
            if not token:
                raise ValueError("The redirect from Zerodha carried no request token. Start over.")
            return {"request_token": token}
        if params.get("error"):
            raise ValueError("Upstox refused the login. Start over to try again.")
        if params.get("state") != self._state:
            raise ValueError(
                "The answer from Upstox does not belong to this login (its state differs), so it was "
                "not used. Start over."
            )
        code = params.get("code", "")
        if not code:
            raise ValueError("The redirect from Upstox carried no code. Start over.")
        return {"code": code, "state": self._state}

    def _fail(self, message: str) -> None:
        log.warning("%s login failed: %s", self.broker_name, redact(message))
        self.status.setText("Login failed.")
        self._show_banner(message, "error")
        self.show()  # back in front of the trader, with the reason and Start over
        self.raise_()
        self.login_failed.emit(self.account_id, message)

    # ----------------------------------------------------------------- helpers

    def _show_banner(self, text: str, kind: str) -> None:
        self.banner.setStyleSheet(f"QLabel {{ {_BANNER_STYLE[kind]} border-radius:4px; }}")
        self.banner.setText(text)
        self.banner.show()

    def _hide_banner(self) -> None:
        self.banner.hide()
        self.banner.clear()

    @property
    def exchanging(self) -> bool:
        return self._exchange is not None

    def _on_finished(self, _result: int) -> None:
        if LoginDialog._open.get(self.account_id) is self:
            del LoginDialog._open[self.account_id]
        if self._exchange is None:
            self.deleteLater()  # each login gets a fresh dialog; a finished one holds nothing worth keeping


class ReloginPrompter(QObject):
    """Connect to ``service.session_state_changed``: a token expired -> one non-modal "login needed" prompt.

    Once per expiry: an account is prompted again only after it has been logged in (or connecting) since.
    """

    login_dialog_opened = Signal(object)  # the LoginDialog

    def __init__(self, service: ProtectionService, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.service = service
        self._parent_widget = parent
        self._prompted: set[int] = set()
        self.prompts: dict[int, QMessageBox] = {}
        service.session_state_changed.connect(self._on_session_state_changed)

    def _on_session_state_changed(self, account_id: int, state: str) -> None:
        if state == SessionState.LOGIN_NEEDED.value:
            if account_id not in self._prompted:
                self._prompted.add(account_id)
                self._prompt(account_id)
        elif state != SessionState.LOGGED_OUT.value:
            # Logged in again (connecting, live, ...): the next expiry gets a prompt of its own.
            self._prompted.discard(account_id)
            box = self.prompts.pop(account_id, None)
            if box is not None and shiboken6.isValid(box):
                box.close()

    def _prompt(self, account_id: int) -> None:
        session = self.service.sessions.get(account_id)
        if session is None:
            return
        title = account_title(session.account)
        live = len(self.service.store.live(account_id))
        watched = (
            f"Its {live} live protection{'s are' if live != 1 else ' is'} not watched until you log in."
            if live
            else "Log in to protect this account's positions again."
        )
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Login needed",
            f"{title}: login needed",
            QMessageBox.StandardButton.NoButton,
            self._parent_widget,
        )
        box.setInformativeText(f"The broker's session has ended (tokens expire every morning). {watched}")
        log_in = box.addButton("Log in", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Later", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(log_in)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.buttonClicked.connect(
            lambda button: (
                self.open_login(account_id)
                if box.buttonRole(button) is QMessageBox.ButtonRole.AcceptRole
                else None
            )
        )
        box.finished.connect(lambda _r: self.prompts.pop(account_id, None))
        self.prompts[account_id] = box
        box.show()

    def open_login(self, account_id: int) -> LoginDialog | None:
        session = self.service.sessions.get(account_id)
        if session is None:
            return None
        dialog = LoginDialog.open_for(session, self._parent_widget)
        self.login_dialog_opened.emit(dialog)
        return dialog
