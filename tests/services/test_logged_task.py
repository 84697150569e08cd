"""LoggedTask: the services' pool work never dies silently."""

from __future__ import annotations

import logging

import pytest
from PySide6.QtCore import QThreadPool

from trailstop_gui.services.logged_task import LoggedTask


def test_what_the_work_raises_is_logged_with_what_it_was(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("odd reply")

    log = logging.getLogger("trailstop.test")
    pool = QThreadPool()
    with caplog.at_level(logging.ERROR, logger="trailstop.test"):
        pool.start(LoggedTask(broken, "reconcile 7", log))
        assert pool.waitForDone(5_000)
    [record] = caplog.records
    assert record.getMessage() == "reconcile 7 failed" and record.exc_info is not None
    assert "odd reply" in str(record.exc_info[1])


def test_work_that_succeeds_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    done: list[int] = []
    pool = QThreadPool()
    with caplog.at_level(logging.DEBUG, logger="trailstop.test"):
        pool.start(LoggedTask(lambda: done.append(1), "nothing", logging.getLogger("trailstop.test")))
        assert pool.waitForDone(5_000)
    assert done == [1] and caplog.records == []
