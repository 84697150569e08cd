"""Uncaught exceptions and Qt's messages go through the log's redacting filter, never to a file unmasked."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import qInstallMessageHandler, qWarning

from trailstop_gui.runtime import configure_logging, install_crash_logging

TOKEN = "Zq7kP2mW9xL4vB8nC3tR6yH1jF5gD0sA"  # token-like: letters and digits, 32 long


@pytest.fixture
def crash_log(tmp_path: Path) -> Iterator[Path]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = (sys.excepthook, threading.excepthook)
    configure_logging(tmp_path, to_stdout=False)
    install_crash_logging()
    yield tmp_path / "logs" / "trailstop.log"
    qInstallMessageHandler(None)
    sys.excepthook, threading.excepthook = hooks
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def read(path: Path) -> str:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return next(path.parent.glob("trailstop.log")).read_text()


def test_an_uncaught_exception_is_logged_masked(crash_log: Path) -> None:
    try:
        raise RuntimeError(f"GET https://api.kite.trade/orders?access_token={TOKEN} failed")
    except RuntimeError:
        sys.excepthook(*sys.exc_info())  # type: ignore[arg-type]
    text = read(crash_log)
    assert "uncaught RuntimeError" in text and "Traceback" in text
    assert TOKEN not in text and "access_token=***" in text


def test_an_uncaught_exception_in_a_thread_is_logged_masked(crash_log: Path) -> None:
    def boom() -> None:
        raise ValueError(f"Authorization: Bearer {TOKEN}")

    worker = threading.Thread(target=boom, name="worker-x")
    worker.start()
    worker.join()
    text = read(crash_log)
    assert "uncaught ValueError in thread worker-x" in text
    assert TOKEN not in text


@pytest.mark.qt
def test_qt_messages_reach_the_log_masked(crash_log: Path) -> None:
    qWarning(f"QNetworkReply: token {TOKEN}")
    text = read(crash_log)
    assert "trailstop.qt" in text and "QNetworkReply" in text
    assert TOKEN not in text
