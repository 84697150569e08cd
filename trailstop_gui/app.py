"""Composition root: command line, logging, the services, and the window or the headless loop."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from trailstop_gui import __version__
from trailstop_gui.models.db import DatabaseError
from trailstop_gui.models.domain import TrailRule
from trailstop_gui.settings import APP_NAME

if TYPE_CHECKING:
    from PySide6.QtWidgets import QApplication

    from trailstop_gui.runtime import Runtime
    from trailstop_gui.services.basket_file import RulesFile
    from trailstop_gui.settings import Settings
    from trailstop_gui.single_instance import SingleInstance
    from trailstop_gui.views.main_window import MainWindow

log = logging.getLogger("trailstop")

# Exit code when the database cannot be used (damaged and moved aside, locked, or from a newer version).
DATABASE_UNUSABLE = 2


def _rule(text: str) -> TrailRule:
    try:
        return TrailRule.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trailstop-gui", description="Trailing stop-loss protection.")
    parser.add_argument("--data-dir", help="where the database and logs live (default: the user-data folder)")
    parser.add_argument("--headless", action="store_true", help="run the protection services with no window")
    parser.add_argument("--demo", action="store_true", help="start the built-in simulator and connect to it")
    parser.add_argument(
        "--sim",
        metavar="URL",
        help="connect to a running trailstop-sim at URL (its control_token in TRAILSTOP_SIM_TOKEN)",
    )
    parser.add_argument(
        "--broker",
        choices=("kite", "upstox", "both"),
        default="kite",
        help="which protocol to use with --sim/--demo (default kite)",
    )
    parser.add_argument(
        "--auto-protect",
        metavar="RULE",
        type=_rule,
        help="protect every open position without a protection, e.g. percent:2 or points:5",
    )
    parser.add_argument(
        "--auto-protect-holdings",
        action="store_true",
        default=None,
        help="with --auto-protect: also protect delivery holdings (default: the setting, off)",
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="with --sim/--demo: paper trading (live prices, orders filled locally, nothing sent)",
    )
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="check this installation: run the demo flow offscreen in a temporary folder, exit 0 if it works",
    )
    parser.add_argument(
        "--safety-stop",
        action="store_true",
        help="new protections also get a broker-held safety stop, a buffer behind the trailed stop",
    )
    parser.add_argument(
        "--baskets",
        metavar="FILE",
        help="with --headless: basket protections, timed exits and stops on the underlying from a JSON file"
        " (format in the README)",
    )
    parser.add_argument("--version", action="version", version=f"TrailStop {__version__}")
    return parser


def _brokers(choice: str) -> tuple[str, ...]:
    return ("kite", "upstox") if choice == "both" else (choice,)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.paper and not (args.demo or args.sim):
        # Paper mode is only defined against a simulator; alone it would run the real accounts live.
        parser.error("--paper needs --sim URL or --demo")
    if args.auto_protect_holdings and args.auto_protect is None:
        parser.error("--auto-protect-holdings needs --auto-protect RULE")
    baskets = None
    if args.baskets is not None:
        if not args.headless:
            parser.error("--baskets needs --headless (the window creates baskets in the positions view)")
        from trailstop_gui.services.basket_file import read_rules_file

        try:
            baskets = read_rules_file(args.baskets)
        except ValueError as exc:
            parser.error(f"--baskets: {exc}")
    if args.self_test:
        from trailstop_gui.selftest import run_self_test

        return run_self_test()
    from trailstop_gui.settings import data_dir
    from trailstop_gui.single_instance import SingleInstance

    # One instance per data folder: two would watch the same protections and could both fire an exit.
    instance = SingleInstance(data_dir(args.data_dir), headless=args.headless)
    if not instance.claim():
        print(instance.hand_over_message(), file=sys.stderr)
        return instance.exit_code()
    try:
        if args.headless:
            return run_headless(args, instance, baskets)
        return run_window(args, instance)
    except DatabaseError as exc:
        return database_unusable(exc, window=not args.headless)
    finally:
        instance.release()


def database_unusable(exc: DatabaseError, *, window: bool) -> int:
    """Say plainly why TrailStop cannot start: a damaged file (moved aside: the message names the backup),
    a file another program holds, or one from a newer version. Returns the exit code."""
    log.error("%s", exc)
    if window:
        from PySide6.QtWidgets import QApplication, QMessageBox

        _app = QApplication.instance() or QApplication(sys.argv[:1])
        QMessageBox.critical(None, "TrailStop cannot open its database", str(exc))
    else:
        print(f"TrailStop: {exc}", file=sys.stderr)
    return DATABASE_UNUSABLE


def _install_signal_handlers(quit_app: Callable[[], None]) -> list[int]:
    """SIGINT/SIGTERM end the event loop. Returns the list the signals received are added to.

    The handler does not log: Python runs it between any two bytecodes of the main thread, perhaps in
    the middle of a write to the log file, and a second write from there fails ("reentrant call").
    """
    received: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)
        quit_app()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return received


def _quit_when_running_if_signalled(received: list[int], quit_app: Callable[[], None]) -> None:
    """A SIGTERM that arrived while starting up (logging in, before the event loop ran) asked a loop that
    was not running yet to quit, which does nothing: the app then ran on and had to be killed. The
    first thing the loop does is look again."""
    from PySide6.QtCore import QTimer

    QTimer.singleShot(0, lambda: quit_app() if received else None)


def _log_signals(received: list[int]) -> None:
    if received:
        log.info("signal %d: shutting down", received[0])


def settle_heap() -> None:
    """Put what start-up built out of the cyclic collector's reach, just before ticks start to flow.

    Modules, Qt wrappers, the window and the services live as long as the app, yet every full collection
    walked them all: with 10,000 ticks a second one came every few seconds and held the interpreter for
    about 50 ms, on whichever thread it fell (bench/gui.py: the window's worst stall; a feed thread waits
    for the same interpreter). Frozen, they are never walked again; garbage left by start-up is collected
    first, so freezing keeps nothing alive that was already unreachable.
    """
    gc.collect()
    gc.freeze()


def release_heap() -> None:
    """Undo :func:`settle_heap` at shutdown: what start-up froze (SQLite connections of threads that
    ended, held in reference cycles) is collected again, so every connection is closed before the
    process ends and the last one folds the WAL back into the database file, as it did before the heap
    was frozen (tests/reliability/test_database_damage.py saw the file left different)."""
    gc.unfreeze()
    gc.collect()


def run_headless(
    args: argparse.Namespace, instance: SingleInstance | None = None, baskets: RulesFile | None = None
) -> int:
    from PySide6.QtCore import QCoreApplication, QTimer

    from trailstop_gui.event_loop import close_event_loop, install_event_loop, run_event_loop
    from trailstop_gui.runtime import build_runtime, install_crash_logging

    app = QCoreApplication(sys.argv[:1])
    app.setApplicationName(APP_NAME)
    # The order-route checks are coroutines on it (and would be in the window too).
    loop = install_event_loop(app)
    if instance is not None:
        instance.listen()
    runtime = build_runtime(
        data_directory=args.data_dir,
        sim_url=args.sim,
        brokers=_brokers(args.broker),
        demo=args.demo,
        auto_protect=args.auto_protect,
        auto_protect_holdings=getattr(args, "auto_protect_holdings", None),
        paper=args.paper,
        to_stdout=True,
    )
    install_crash_logging()  # after configure_logging: through its redacting filter
    if getattr(args, "safety_stop", False):
        runtime.service.set_safety_defaults(replace(runtime.service.safety_defaults, enabled=True))
    signals = _install_signal_handlers(app.quit)
    # Python runs signal handlers only when it holds the interpreter: wake it regularly.
    wake = QTimer()
    wake.start(200)
    wake.timeout.connect(lambda: None)
    log.info("TrailStop %s headless; data in %s", __version__, runtime.directory)
    try:
        runtime.login_simulator_accounts()
        runtime.service.start()
        if baskets is not None:
            try:
                runtime.load_rules(baskets)
            except ValueError as exc:
                log.error("--baskets: %s", exc)
                print(f"TrailStop: --baskets: {exc}", file=sys.stderr)
                return 2
        runtime.start_rules()
        settle_heap()
        _quit_when_running_if_signalled(signals, app.quit)
        return run_event_loop(loop)
    finally:
        _log_signals(signals)
        runtime.close()
        close_event_loop(loop)
        release_heap()
        log.info("stopped; open protections stay armed for the next start")


def _prepare_web_engine() -> None:
    """QtWebEngine (the broker login view) must be loaded before the QApplication exists.

    Chromium refuses to start its sandbox as root; only then is the sandbox switched off.
    """
    import os

    if hasattr(os, "geteuid") and os.geteuid() == 0:
        os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
        flags = os.environ.get("QTWEBENGINE_CHROMIUM_FLAGS", "")
        if "--no-sandbox" not in flags:
            os.environ["QTWEBENGINE_CHROMIUM_FLAGS"] = f"{flags} --no-sandbox".strip()
    import trailstop_gui.views.login_view  # noqa: F401  (loads QtWebEngineWidgets)


def _offer_demo() -> str | None:
    """First run, no broker account: the demo market ("demo"), a broker's add-account form, or None."""
    from trailstop_gui.views.first_run import FirstRunDialog

    box = FirstRunDialog()
    box.exec()
    return box.choice()


def open_window(app: QApplication, runtime: Runtime, settings: Settings, first_run: str | None) -> MainWindow:
    """The window and its dialogs wired to the services, the services started and the window shown; after a
    first-run "Add my account" (``first_run`` "kite" or "upstox"), the Accounts window with that broker's
    add-account form open in it."""
    from trailstop_gui.views.main_window import MainWindow

    window = MainWindow(runtime.service, runtime.store, runtime.notifier, str(runtime.directory))
    try:
        _wire_window(app, runtime, settings, first_run, window)
    except BaseException:
        window.stop()  # its timers and background fetches, before the services shut down
        raise
    return window


def _wire_window(
    app: QApplication, runtime: Runtime, settings: Settings, first_run: str | None, main: MainWindow
) -> None:
    import threading

    from trailstop_gui.services.instruments import InstrumentService
    from trailstop_gui.settings import load_settings
    from trailstop_gui.views import theme
    from trailstop_gui.views.accounts_dialog import AccountsDialog
    from trailstop_gui.views.basket_panel import add_basket_dock
    from trailstop_gui.views.login_view import LoginDialog, ReloginPrompter
    from trailstop_gui.views.order_entry import OrderEntryPanel
    from trailstop_gui.views.settings_dialog import SettingsDialog

    service, store = runtime.service, runtime.store
    window = main
    instruments = InstrumentService(store)
    panel = OrderEntryPanel(
        service,
        store,
        settings,
        instruments,
        baskets=runtime.baskets,
        square_off=runtime.square_off,
        underlying=runtime.underlying,
    )
    window.set_order_entry(panel)
    window.quit_requested.connect(app.quit)
    runtime.routes.route_checked.connect(
        lambda account_id, check: main.account_bar.set_route(account_id, check.state.value, check.message)
    )
    runtime.routes.route_checked.connect(
        lambda account_id, check: main.positions.set_route_state(account_id, check.state.value)
    )
    prompter = ReloginPrompter(service, main)
    if runtime.baskets is not None:
        add_basket_dock(main, runtime.baskets, runtime.square_off, runtime.underlying)
        main.positions.set_basket_tools(runtime.baskets, runtime.square_off, runtime.underlying)
    if runtime.underlying is not None:
        # A stop on the underlying is a price of the underlying: the table measures it there.
        main.positions.model.set_underlying_rules(runtime.underlying.rule)

    def on_logged_in(account_id: int) -> None:
        session = service.sessions.get(account_id)
        if session is not None:
            instruments.ensure(session)  # the instrument master, at most once a day, in the background
        panel.refresh_accounts()
        main.refresh_accounts()

    for session in service.sessions.values():
        session.logged_in.connect(on_logged_in)
        if session.has_token():
            instruments.ensure(session)

    def accounts_changed(_account_id: int) -> None:
        panel.refresh_accounts()
        main.refresh_accounts()

    def open_accounts(add: str | None = None) -> AccountsDialog:
        dialog = AccountsDialog(store, runtime.secrets, service, main, routes=runtime.routes)
        for changed in (dialog.account_added, dialog.account_changed, dialog.account_removed):
            changed.connect(accounts_changed)
        dialog.logged_in.connect(on_logged_in)
        dialog.open()
        if add is not None:
            dialog.add_account(add)  # "Add my account" on the first-run question: the form itself
        return dialog

    def open_settings() -> None:
        dialog = SettingsDialog(store, load_settings(store), str(runtime.directory), main)
        dialog.settings_saved.connect(panel.apply_settings)
        dialog.settings_saved.connect(service.apply_settings)
        square_off = runtime.square_off
        if square_off is not None:
            dialog.settings_saved.connect(lambda saved: square_off.set_mis_default(saved.mis_square_off))
        dialog.settings_saved.connect(main.tray.apply_settings)
        dialog.settings_saved.connect(lambda saved: theme.apply_theme(app, saved.theme))
        dialog.open()

    window.accounts_requested.connect(lambda: open_accounts())
    window.settings_requested.connect(open_settings)
    window.login_requested.connect(
        lambda account_id: LoginDialog.open_for(service.sessions[account_id], main)
    )
    pending = {s.account_id for s, _, _ in runtime.sim_logins}
    service.start(pending_logins=pending)
    runtime.start_rules()
    # Simulator logins talk to the network: never on the GUI thread. Each login's logged_in signal
    # starts that account's feed on the GUI side.
    threading.Thread(target=runtime.login_simulator_accounts, name="sim-login", daemon=True).start()
    window.show()
    if first_run in ("kite", "upstox"):
        open_accounts(add=first_run)
    del prompter  # kept alive by its parent, the window


def run_window(args: argparse.Namespace, instance: SingleInstance | None = None) -> int:
    _prepare_web_engine()
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from trailstop_gui.event_loop import close_event_loop, install_event_loop, run_event_loop
    from trailstop_gui.runtime import build_runtime, install_crash_logging
    from trailstop_gui.settings import load_settings
    from trailstop_gui.views import theme

    app = QApplication(sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setApplicationVersion(__version__)
    app.setDesktopFileName("trailstop")
    app.setWindowIcon(theme.app_icon())
    # The window closes to the tray: the application ends on a confirmed Quit, or on a signal.
    app.setQuitOnLastWindowClosed(False)
    # The window's request/response flows (login exchange, refresh, Protect, route check) are coroutines.
    loop = install_event_loop(app)
    if instance is not None:
        instance.listen()

    def build(demo: bool):  # type: ignore[no-untyped-def]
        return build_runtime(
            data_directory=args.data_dir,
            sim_url=args.sim,
            brokers=_brokers(args.broker),
            demo=demo,
            auto_protect=args.auto_protect,
            auto_protect_holdings=getattr(args, "auto_protect_holdings", None),
            paper=args.paper,
        )

    runtime = build(args.demo)
    install_crash_logging()  # after configure_logging: through its redacting filter
    settings = load_settings(runtime.store)
    theme.apply_theme(app, settings.theme)
    first_run = None
    if not runtime.service.sessions and not (args.demo or args.sim):
        first_run = _offer_demo()
    if first_run == "demo":
        runtime.close()
        runtime = build(True)
    if getattr(args, "safety_stop", False):
        runtime.service.set_safety_defaults(replace(runtime.service.safety_defaults, enabled=True))
    window: MainWindow | None = None

    def quit_now() -> None:
        if window is not None:
            window.prepare_quit()  # a signal is not a question: close without asking
        app.quit()

    signals = _install_signal_handlers(quit_now)
    # Python runs signal handlers only when it holds the interpreter: wake it regularly.
    wake = QTimer()
    wake.start(200)
    wake.timeout.connect(lambda: None)
    try:
        window = open_window(app, runtime, settings, first_run)
        log.info("TrailStop %s started; data in %s", __version__, runtime.directory)
        QTimer.singleShot(0, settle_heap)  # once the loop runs: the first paint does not wait for it
        _quit_when_running_if_signalled(signals, quit_now)
        return run_event_loop(loop)
    finally:
        _log_signals(signals)
        if window is not None:
            window.stop()
        runtime.close()
        close_event_loop(loop)
        release_heap()
