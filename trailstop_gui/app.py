"""Composition root: command line, logging, the services, and the window or the headless loop."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from trailstop_gui import __version__
from trailstop_gui.models.domain import TrailRule
from trailstop_gui.settings import APP_NAME

log = logging.getLogger("trailstop")


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
    parser.add_argument("--sim", metavar="URL", help="connect to a running trailstop-sim at URL")
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
        "--paper",
        action="store_true",
        help="with --sim/--demo: paper trading (live prices, orders filled locally, nothing sent)",
    )
    parser.add_argument("--version", action="version", version=f"TrailStop {__version__}")
    return parser


def _brokers(choice: str) -> tuple[str, ...]:
    return ("kite", "upstox") if choice == "both" else (choice,)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.headless:
        return run_headless(args)
    return run_window(args)


def _install_signal_handlers(quit_app: object) -> None:
    def handler(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        quit_app()  # type: ignore[operator]

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run_headless(args: argparse.Namespace) -> int:
    from PySide6.QtCore import QCoreApplication, QTimer

    from trailstop_gui.runtime import build_runtime

    app = QCoreApplication(sys.argv[:1])
    app.setApplicationName(APP_NAME)
    runtime = build_runtime(
        data_directory=args.data_dir,
        sim_url=args.sim,
        brokers=_brokers(args.broker),
        demo=args.demo,
        auto_protect=args.auto_protect,
        paper=args.paper,
        to_stdout=True,
    )
    _install_signal_handlers(app.quit)
    # Python runs signal handlers only when it holds the interpreter: wake it regularly.
    wake = QTimer()
    wake.start(200)
    wake.timeout.connect(lambda: None)
    log.info("TrailStop %s headless; data in %s", __version__, runtime.directory)
    try:
        runtime.login_simulator_accounts()
        runtime.service.start()
        return app.exec()
    finally:
        runtime.close()
        log.info("stopped; open protections stay armed for the next start")


def run_window(args: argparse.Namespace) -> int:
    from PySide6.QtWidgets import QApplication

    from trailstop_gui.runtime import build_runtime
    from trailstop_gui.views.main_window import MainWindow

    app = QApplication(sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setApplicationVersion(__version__)
    runtime = build_runtime(
        data_directory=args.data_dir,
        sim_url=args.sim,
        brokers=_brokers(args.broker),
        demo=args.demo,
        auto_protect=args.auto_protect,
    )
    _install_signal_handlers(app.quit)
    try:
        runtime.login_simulator_accounts()
        runtime.service.start()
        window = MainWindow(runtime.store.live(), str(runtime.directory))
        window.show()
        log.info("TrailStop %s started; data in %s", __version__, runtime.directory)
        return app.exec()
    finally:
        runtime.close()
