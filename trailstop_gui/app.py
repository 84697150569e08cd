"""Composition root: command line, logging, the store, the Qt application and its window."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from trailstop_gui import __version__
from trailstop_gui.settings import APP_NAME, data_dir, database_path

log = logging.getLogger("trailstop")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trailstop-gui", description="Trailing stop-loss protection.")
    parser.add_argument("--data-dir", help="where the database and logs live (default: the user-data folder)")
    parser.add_argument("--version", action="version", version=f"TrailStop {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Qt is imported here, not at module level, so `--help` and `--version` stay instant.
    from PySide6.QtWidgets import QApplication

    from trailstop_gui.models.store import ProtectionStore
    from trailstop_gui.views.main_window import MainWindow

    directory = data_dir(args.data_dir)
    app = QApplication(sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setApplicationVersion(__version__)
    store = ProtectionStore(database_path(directory))
    try:
        window = MainWindow(store.live(), str(directory))
        window.show()
        log.info("TrailStop %s started; data in %s", __version__, directory)
        return app.exec()
    finally:
        store.close()
