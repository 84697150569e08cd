"""Building the services from the command line: store, secrets, accounts, sessions, simulator, logging.

Shared by the window and by ``--headless``, so both run exactly the same protection code.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trailstop_gui.models.domain import TrailRule
from trailstop_gui.models.store import AccountRecord, ProtectionStore
from trailstop_gui.services.basket_file import BasketSpec, RulesFile, apply_baskets
from trailstop_gui.services.baskets import BasketService
from trailstop_gui.services.brokers.errors import redact
from trailstop_gui.services.exit_send_log import ExitSendLog
from trailstop_gui.services.notifier import Notifier
from trailstop_gui.services.protection_service import ProtectionService
from trailstop_gui.services.route_monitor import RouteMonitor
from trailstop_gui.services.secrets import SecretStore
from trailstop_gui.services.session import AccountSession, Endpoints
from trailstop_gui.services.square_off import SquareOffService
from trailstop_gui.services.underlying import UnderlyingService
from trailstop_gui.settings import data_dir, database_path, load_settings, log_dir

log = logging.getLogger("trailstop")


# Token-like without a name beside it: a long run of letters and digits with both in it (Kite's access
# tokens, the simulator's), or a JWT (Upstox's). Order ids (digits only), tags, symbols and ISINs are shorter
# or all digits, and stay readable.
_TOKEN_LIKE = re.compile(
    r"(?<![A-Za-z0-9])(?=[A-Za-z0-9]*[A-Za-z])(?=[A-Za-z0-9]*[0-9])[A-Za-z0-9]{24,}(?![A-Za-z0-9])"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
)
_TRACEBACKS = logging.Formatter()


def redact_log_text(text: str) -> str:
    """``redact`` (named secrets, key=value pairs, auth headers), then anything else token-like."""
    return _TOKEN_LIKE.sub("***", redact(text))


class RedactingFilter(logging.Filter):
    """Masks anything token-like in every log record, whatever logger it comes from: the message, and the
    traceback and stack printed with it (an exception's text can carry a URL with a token in it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_log_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters print exc_text when it is set, instead of formatting the exception again.
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_log_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_log_text(record.stack_info)
        return True


class OwnerOnlyRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are all owner-only, the new one each rotation starts included."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(self.baseFilename, 0o600)  # also a file an earlier version made with other permissions
        return super()._open()


def configure_logging(directory: Path, *, to_stdout: bool) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    logfile = log_dir(directory) / "trailstop.log"
    file_handler = OwnerOnlyRotatingFileHandler(logfile, maxBytes=5_000_000, backupCount=3)
    handlers: list[logging.Handler] = [file_handler]
    if to_stdout:
        import sys

        handlers.append(logging.StreamHandler(sys.stdout))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)


SIM_TOKEN_ENV = "TRAILSTOP_SIM_TOKEN"
"""The running simulator's control token (``control_token`` of its JSON line), for ``--sim URL``. From the
environment, not the command line, where every user of the machine could read it."""


def install_crash_logging() -> None:
    """Uncaught exceptions (main thread and any other) and Qt's own messages go to the log, so through
    its RedactingFilter: a traceback's text can carry a URL with a token in it, and the default hooks would
    print it to stderr unmasked."""
    import sys
    import threading

    from PySide6.QtCore import QtMsgType, qInstallMessageHandler

    crash = logging.getLogger("trailstop.crash")

    def excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        crash.critical("uncaught %s", kind.__name__, exc_info=(kind, value, tb))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        crash.critical(
            "uncaught %s in thread %s",
            args.exc_type.__name__,
            name,
            exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
        )

    qt = logging.getLogger("trailstop.qt")
    levels = {
        QtMsgType.QtDebugMsg: logging.DEBUG,
        QtMsgType.QtInfoMsg: logging.INFO,
        QtMsgType.QtWarningMsg: logging.WARNING,
        QtMsgType.QtCriticalMsg: logging.ERROR,
        QtMsgType.QtFatalMsg: logging.CRITICAL,
    }

    def qt_messages(kind: QtMsgType, _context: object, message: str) -> None:
        qt.log(levels.get(kind, logging.WARNING), "%s", message)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
    qInstallMessageHandler(qt_messages)


def fetch_sim_info(url: str, timeout: float = 5.0, token: str | None = None) -> dict[str, Any]:
    token = token if token is not None else os.environ.get(SIM_TOKEN_ENV, "")
    request = urllib.request.Request(url.rstrip("/") + "/_sim/info", headers={"X-Sim-Token": token})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        info: dict[str, Any] = json.loads(response.read())
    return info


@dataclass
class Runtime:
    directory: Path
    store: ProtectionStore
    secrets: SecretStore
    notifier: Notifier
    service: ProtectionService
    routes: RouteMonitor
    simulator: Any = None  # SimulatorHandle in --demo
    square_off: SquareOffService | None = None  # timed square-off (built with the service)
    baskets: BasketService | None = None  # basket protections (built with the service)
    underlying: UnderlyingService | None = None  # stops on the underlying (before any feed arms)
    file_rules: Any = None  # FileRules: the --baskets file's timed exits and stops on the underlying
    sim_logins: list[tuple[AccountSession, str, str]] = field(default_factory=list)

    def login_simulator_accounts(self) -> None:
        """Log the simulator's demo users in through the real login flow (form, then token exchange)."""
        for session, user_id, password in self.sim_logins:
            if session.has_token():
                continue
            try:
                session.login_with_password(user_id, password)
            except Exception as exc:
                log.error("%s: simulator login failed: %s", session.account.label, exc)

    def start_rules(self) -> None:
        """Start the timed square-off and the baskets (after the service: they act through it)."""
        if self.baskets is not None:
            self.baskets.start()
        if self.square_off is not None:
            self.square_off.start()
        if self.file_rules is not None:
            self.file_rules.start()

    def load_baskets(self, specs: list[BasketSpec]) -> None:
        """``--baskets FILE``: create or update its baskets; ValueError names what is wrong, before any
        write."""
        if self.baskets is None:
            raise ValueError("baskets: the basket service is not running")
        accounts = [session.account for session in self.service.sessions.values()]
        apply_baskets(specs, self.baskets, accounts)

    def load_rules(self, rules: RulesFile) -> None:
        """``--baskets FILE`` with its timed exits and stops on the underlying: every account named is
        checked before anything is written (ValueError); the baskets are applied now, the rest by FileRules
        (started with ``start_rules``), to matching protections as they appear."""
        from trailstop_gui.services.file_rules import FileRules

        file_rules = None
        if rules.timed_exits or rules.underlying_rules:
            file_rules = FileRules(
                self.service, rules, square_off=self.square_off, underlying=self.underlying
            )
            file_rules.check_accounts()
        if rules.baskets:
            self.load_baskets(rules.baskets)
        self.file_rules = file_rules

    def close(self) -> None:
        if self.file_rules is not None:
            self.file_rules.shutdown()
        if self.square_off is not None:
            self.square_off.shutdown()
        if self.baskets is not None:
            self.baskets.shutdown()
        self.routes.shutdown()
        self.service.shutdown()
        if self.service.executor.send_log is not None:
            self.service.executor.send_log.close()
        self.store.close()
        if self.simulator is not None:
            self.simulator.stop()


def _is_demo_root(api_root: str) -> bool:
    return api_root.startswith(("http://127.0.0.1:", "http://localhost:"))


def _sim_account(
    store: ProtectionStore, info: dict[str, Any], broker: str, mode: str, *, demo: bool = False
) -> AccountRecord:
    section = info[broker]
    api_key = section["api_key"] if broker == "kite" else section["client_id"]
    redirect = section["redirect_url"] if broker == "kite" else section["redirect_uri"]
    for account in store.accounts():
        if (account.broker, account.api_root, account.api_key, account.mode) == (
            broker,
            info["http"],
            api_key,
            mode,
        ):
            return account
    if demo:
        # The in-process demo simulator gets a new port and new keys on every start: the demo account of an
        # earlier start is the same demo user, pointed at today's simulator (a new account each start left
        # the earlier demo protections stranded under an offline one). The reconciler then aligns them
        # with what this simulator holds.
        for account in store.accounts():
            if (account.broker, account.mode, account.user_id) == (
                broker,
                mode,
                section["user_id"],
            ) and _is_demo_root(account.api_root):
                return store.update_account(
                    account.id, api_root=info["http"], api_key=api_key, redirect_url=redirect
                )
    label = ("Zerodha" if broker == "kite" else "Upstox") + (" paper" if mode == "paper" else " simulator")
    return store.add_account(
        broker,
        label,
        user_id=section["user_id"],
        api_key=api_key,
        redirect_url=redirect,
        api_root=info["http"],
        mode=mode,
    )


def build_runtime(
    *,
    data_directory: str | None,
    sim_url: str | None = None,
    brokers: tuple[str, ...] = ("kite",),
    demo: bool = False,
    auto_protect: TrailRule | None = None,
    auto_protect_holdings: bool | None = None,
    paper: bool = False,
    to_stdout: bool = False,
    watchdog: float = 5.0,
) -> Runtime:
    """The services for one run. A run against a simulator (``demo`` or ``sim_url``) loads only the
    simulator's accounts: never a real one, so nothing is protected, auto-protected or sent for it.
    ``paper`` needs a simulator: paper accounts fill locally and never send."""
    if paper and not (demo or sim_url):
        raise ValueError("--paper needs --sim URL or --demo: paper trading never sends for a real account")
    directory = data_dir(data_directory)
    configure_logging(directory, to_stdout=to_stdout)
    store = ProtectionStore(database_path(directory))
    secrets = SecretStore()
    notifier = Notifier()
    service = ProtectionService(store, notifier)
    # Before anything is sent: the previous process's record is read, then this one's begins.
    service.executor.send_log = ExitSendLog(
        directory / "exit-sends", run=store.next_run(), first_event_id=store.last_event_id()
    )
    routes = RouteMonitor(store, secrets, notifier)
    routes.watch(service.protection_changed)
    routes.route_restored.connect(service.reconcile)  # the held-back exits go out now, not in 30 s
    runtime = Runtime(directory, store, secrets, notifier, service, routes)
    runtime.underlying = UnderlyingService(service)
    runtime.baskets = BasketService(service)
    runtime.square_off = SquareOffService(service)
    runtime.square_off.baskets = runtime.baskets
    info: dict[str, Any] | None = None
    if demo:
        from trailstop_gui.simulator.runner import start_simulator

        runtime.simulator = start_simulator(seed=7, require_token=True)
        info = runtime.simulator.info
        log.info("demo: simulator running at %s", runtime.simulator.url)
    elif sim_url:
        info = fetch_sim_info(sim_url)
    if auto_protect_holdings is None:
        auto_protect_holdings = load_settings(store).auto_protect_holdings
    sim_accounts: dict[int, str] = {}
    if info is not None:
        for broker in brokers:
            account = _sim_account(store, info, broker, "paper" if paper else "live", demo=demo)
            secret = info[broker]["api_secret"] if broker == "kite" else info[broker]["client_secret"]
            secrets.set(account.id, "api_secret", secret)
            sim_accounts[account.id] = broker
    skipped_real = 0
    for account in store.accounts():
        if info is not None and account.id not in sim_accounts:
            # A run against a simulator never loads a real account (nor a paper or live simulator account
            # of another run): --auto-protect would protect its positions and orders would go to the broker.
            skipped_real += 0 if account.api_root else 1
            continue
        if account.api_root and account.id not in sim_accounts:
            continue  # a simulator account from an earlier run: its simulator is gone
        if account.id in sim_accounts:
            assert info is not None
            endpoints = Endpoints.for_simulator(info, account.broker)
        else:
            endpoints = Endpoints()
        session = AccountSession(account, secrets, endpoints, watchdog=watchdog)
        service.add_session(session)
        routes.attach(session)  # the same stored route for the window and --headless
        if account.id in sim_accounts:
            assert info is not None
            section = info[account.broker]
            runtime.sim_logins.append((session, section["user_id"], section["password"]))
        if auto_protect is not None:
            service.set_auto_protect(account.id, auto_protect, holdings=auto_protect_holdings)
    if skipped_real:
        log.info("simulator run: %d real account(s) of this data folder not loaded", skipped_real)
    return runtime
