"""SIGTERM/SIGINT handlers: they end the event loop and record the signal; they never write a log line.

Found by the chaos run: a SIGTERM arrived while the main thread was flushing the log file; the handler's
own log call then hit the same buffered file ("RuntimeError: reentrant call inside BufferedWriter").
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator

import pytest

from trailstop_gui.app import _install_signal_handlers, _log_signals


@pytest.fixture
def restore_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.usefixtures("restore_handlers")
def test_the_handler_quits_and_records_without_logging(caplog: pytest.LogCaptureFixture) -> None:
    quits: list[bool] = []
    received = _install_signal_handlers(lambda: quits.append(True))
    with caplog.at_level(logging.DEBUG):
        os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler at the next bytecode
        assert quits == [True] and received == [signal.SIGTERM]
        assert caplog.records == []
        _log_signals(received)  # later, from the main loop's end
    assert [r.getMessage() for r in caplog.records] == [f"signal {int(signal.SIGTERM)}: shutting down"]
