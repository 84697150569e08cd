"""PositionsView: the actions reach the service (after a confirmation where it matters), the rule dialog
names the field at fault, and broker positions are fetched off the GUI thread and can be protected."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from PySide6.QtCore import QObject, Qt, Signal
from pytestqt.qtbot import QtBot

from tests import factories
from trailstop_gui.models.domain import Product, Protection, RuleKind, Side, Status, TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.base import Position
from trailstop_gui.views.positions_model import Column, RowState
from trailstop_gui.views.positions_view import PositionsView, RuleDialog, parse_rule


class FakeService(QObject):
    """The ProtectionService surface the view uses; records every call."""

    protection_changed = Signal(int)
    snapshot_ready = Signal(object)
    action_failed = Signal(str, str)
    session_state_changed = Signal(int, str)

    def __init__(self, store: ProtectionStore) -> None:
        super().__init__()
        self.store = store
        self.calls: list[tuple[Any, ...]] = []
        self.sessions: dict[int, Any] = {}
        self.positions: list[Position] = []
        self.fetch_threads: list[threading.Thread] = []
        self.fail_with: Exception | None = None
        self.tick = 0.05  # what the instrument master says

    def tick_size_for(self, account_id: int, position: Position) -> float:
        return self.tick

    def _record(self, *call: Any) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.calls.append(call)

    def modify_rule(self, pid: int, rule: TrailRule) -> None:
        self._record("modify_rule", pid, rule)

    def pause(self, pid: int) -> None:
        self._record("pause", pid)
        self.store.update(pid, kind="paused", paused=True)
        self.protection_changed.emit(pid)

    def resume(self, pid: int) -> None:
        self._record("resume", pid)
        self.store.update(pid, kind="resumed", paused=False)
        self.protection_changed.emit(pid)

    def exit_now(self, pid: int) -> None:
        self._record("exit_now", pid)

    def remove(self, pid: int) -> None:
        self._record("remove", pid)

    def retry_exit(self, pid: int) -> None:
        self._record("retry_exit", pid)

    def adopt(
        self, account_id: int, position: Position, rule: TrailRule, tick_size: float | None = None
    ) -> None:
        self._record("adopt", account_id, position.symbol, rule, tick_size)

    def unprotected_positions(self, account_id: int) -> list[Position]:
        self.fetch_threads.append(threading.current_thread())
        return list(self.positions)


def protect(store: ProtectionStore, symbol: str = "INFY", instrument: int = 408065) -> Protection:
    account = (store.accounts() or [store.add_account("kite", "Zerodha", user_id="AB1234")])[0]
    return factories.protection(store, account.id, quantity=10, symbol=symbol, instrument=instrument)


def loaded(service: FakeService, p: Protection) -> None:
    """The protection's account has a session this run (offline for positions: nothing fetched)."""
    account = service.store.account(p.account_id)
    service.sessions[account.id] = SimpleNamespace(
        account=account, account_id=account.id, broker_if_ready=lambda: None
    )


@pytest.fixture
def service(store: ProtectionStore) -> FakeService:
    return FakeService(store)


@pytest.fixture
def view(qtbot: QtBot, service: FakeService, store: ProtectionStore) -> Iterator[PositionsView]:
    v = PositionsView(service, store)  # type: ignore[arg-type]
    qtbot.addWidget(v)
    v.resize(1000, 500)
    v.show()
    yield v
    v.stop()


class Answers:
    """Stands in for the modal dialogs: records the questions, gives the prepared answers."""

    def __init__(self, confirm: bool = True, rule: TrailRule | None = None) -> None:
        self.confirm_answer = confirm
        self.rule = rule
        self.questions: list[tuple[str, str, str]] = []
        self.rule_requests: list[dict[str, Any]] = []

    def confirm(self, title: str, text: str, accept: str) -> bool:
        self.questions.append((title, text, accept))
        return self.confirm_answer

    def ask_rule(self, **kw: Any) -> TrailRule | None:
        self.rule_requests.append(kw)
        return self.rule


def install(view: PositionsView, answers: Answers) -> Answers:
    view.confirm = answers.confirm
    view.ask_rule = answers.ask_rule
    return answers


def test_actions_follow_the_selected_state(view: PositionsView, store: ProtectionStore) -> None:
    p = protect(store)
    failed = protect(store, "SBIN", 779521)
    for status in (Status.TRIGGERED, Status.EXITING, Status.EXIT_FAILED):
        store.transition(failed.id, status)
    view.reload_all()
    assert not view.act_exit.isEnabled()  # nothing selected
    assert view.select_pid(p.id)
    assert view.act_exit.isEnabled() and view.act_modify.isEnabled() and not view.act_retry.isEnabled()
    assert view.select_pid(failed.id)
    assert view.act_retry.isEnabled() and not view.act_exit.isEnabled() and not view.act_pause.isEnabled()
    assert view.title.text() == "Protected positions (2)"


def test_selection_survives_sorting_and_price_updates(
    view: PositionsView, store: ProtectionStore, qtbot: QtBot
) -> None:
    first = protect(store)
    second = protect(store, "TCS", 2953217)
    view.reload_all()
    view.select_pid(second.id)
    view.table.sortByColumn(0, Qt.SortOrder.DescendingOrder)  # by symbol: TCS, INFY
    assert view.proxy.index(0, 0).data() == "TCS"
    view.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    assert view.proxy.index(0, 0).data() == "INFY"
    assert view.selected_pid() == second.id
    assert view.model.row_for(first.id) is not None


def test_exit_now_asks_first(view: PositionsView, service: FakeService, store: ProtectionStore) -> None:
    p = protect(store)
    view.reload_all()
    view.select_pid(p.id)
    answers = install(view, Answers(confirm=False))
    view.act_exit.trigger()
    assert service.calls == []
    assert "INFY Long 10 MIS" in answers.questions[0][1] and "MARKET" in answers.questions[0][1]
    answers.confirm_answer = True
    view.act_exit.trigger()
    assert service.calls == [("exit_now", p.id)]


def test_remove_asks_and_says_the_position_stays_open(
    view: PositionsView, service: FakeService, store: ProtectionStore
) -> None:
    p = protect(store)
    view.reload_all()
    view.select_pid(p.id)
    answers = install(view, Answers(confirm=True))
    view.act_remove.trigger()
    assert service.calls == [("remove", p.id)]
    assert "stays open" in answers.questions[0][1]


def test_modify_rule_uses_the_dialogs_rule(
    view: PositionsView, service: FakeService, store: ProtectionStore
) -> None:
    p = protect(store)
    view.reload_all()
    view.select_pid(p.id)
    answers = install(view, Answers(rule=TrailRule.points(15)))
    view.act_modify.trigger()
    assert service.calls == [("modify_rule", p.id, TrailRule.points(15))]
    assert answers.rule_requests[0]["rule"] == TrailRule.percent(2.0)
    answers.rule = None  # cancelled
    view.act_modify.trigger()
    assert len(service.calls) == 1


def test_pause_then_resume(view: PositionsView, service: FakeService, store: ProtectionStore) -> None:
    p = protect(store)
    loaded(service, p)
    view.reload_all()
    view.select_pid(p.id)
    answers = install(view, Answers(confirm=True))
    view.act_pause.trigger()
    assert view.model.row_for(p.id).state is RowState.PAUSED  # type: ignore[union-attr]
    assert view.act_pause.text() == "Res&ume…"
    view.act_pause.trigger()
    assert [c[0] for c in service.calls] == ["pause", "resume"]
    assert [q[0] for q in answers.questions] == ["Pause protection", "Resume protection"]
    assert view.model.row_for(p.id).state is RowState.ARMED  # type: ignore[union-attr]


def test_retry_a_failed_exit(view: PositionsView, service: FakeService, store: ProtectionStore) -> None:
    p = protect(store)
    for status in (Status.TRIGGERED, Status.EXITING, Status.EXIT_FAILED):
        store.transition(p.id, status)
    view.reload_all()
    view.select_pid(p.id)
    view.act_retry.trigger()
    assert service.calls == [("retry_exit", p.id)]


def test_a_refused_action_is_reported(
    view: PositionsView, service: FakeService, store: ProtectionStore, qtbot: QtBot
) -> None:
    p = protect(store)
    view.reload_all()
    view.select_pid(p.id)
    install(view, Answers(confirm=True))
    service.fail_with = ValueError("protection 1: is CLOSED, expected OPEN")
    with qtbot.waitSignal(view.action_failed) as blocker:
        view.act_exit.trigger()
    assert blocker.args == ["Exit now", "protection 1: is CLOSED, expected OPEN"]


def test_keyboard_shortcut_reaches_the_selected_row(
    view: PositionsView, service: FakeService, store: ProtectionStore, qtbot: QtBot
) -> None:
    p = protect(store)
    view.reload_all()
    view.select_pid(p.id)
    install(view, Answers(rule=TrailRule.percent(3)))
    view.activateWindow()
    view.table.setFocus()
    qtbot.waitUntil(view.table.hasFocus, timeout=2000)
    qtbot.keyClick(view.table, Qt.Key.Key_M, Qt.KeyboardModifier.ControlModifier)
    assert service.calls == [("modify_rule", p.id, TrailRule.percent(3))]


def test_unprotected_positions_are_fetched_off_the_gui_thread_and_protected(
    view: PositionsView, service: FakeService, store: ProtectionStore, qtbot: QtBot
) -> None:
    account = store.add_account("kite", "Zerodha", user_id="AB1234")
    service.sessions = {
        account.id: SimpleNamespace(account=account, broker_if_ready=lambda: object(), account_id=account.id)
    }
    service.positions = [
        Position("ITC", "NSE", 424961, "NSE_EQ|ITC", 100, 418.2, Product.CNC, "CNC", 420.0, 180.0)
    ]
    view.fetch_unprotected_now()
    qtbot.waitUntil(lambda: view.unprotected_model.rowCount() == 1, timeout=3000)
    assert service.fetch_threads and service.fetch_threads[0] is not threading.main_thread()
    model = view.unprotected_model
    assert [model.index(0, c).data() for c in range(4)] == ["Zerodha", "ITC", "Long", "100"]
    view.unprotected_table.selectRow(0)
    assert view.act_protect.isEnabled()
    answers = install(view, Answers(rule=TrailRule.percent(1.5)))
    service.tick = 0.01  # the instrument master's tick, not a fixed 0.05 (issue 13 item 14)
    view.act_protect.trigger()
    assert view.wait_for_flows()  # the Protect flow, on the qasync loop
    assert service.calls == [("adopt", account.id, "ITC", TrailRule.percent(1.5), 0.01)]
    assert answers.rule_requests[0]["reference_price"] == 418.2
    assert answers.rule_requests[0]["tick_size"] == 0.01
    assert view.unprotected_title.text() == "Broker positions without protection (1)"


def test_protect_asks_the_broker_again_and_the_position_leaves_the_list(
    view: PositionsView, service: FakeService, store: ProtectionStore, qtbot: QtBot
) -> None:
    account = store.add_account("kite", "Zerodha", user_id="AB1234")
    service.sessions = {
        account.id: SimpleNamespace(account=account, broker_if_ready=lambda: object(), account_id=account.id)
    }
    service.positions = [
        Position("ITC", "NSE", 424961, "NSE_EQ|ITC", 100, 418.2, Product.CNC, "CNC", 420.0, 180.0)
    ]
    view.fetch_unprotected_now()
    qtbot.waitUntil(lambda: view.unprotected_model.rowCount() == 1, timeout=3000)
    asked_before = len(service.fetch_threads)
    view.unprotected_table.selectRow(0)
    install(view, Answers(rule=TrailRule.percent(2)))
    service.positions = []  # once protected, the broker's position is no longer "without protection"
    view.act_protect.trigger()
    assert view.wait_for_flows()
    assert service.calls == [("adopt", account.id, "ITC", TrailRule.percent(2), 0.05)]
    assert len(service.fetch_threads) == asked_before + 1  # asked again at once, not on the next timer
    assert service.fetch_threads[-1] is not threading.main_thread()
    assert view.unprotected_model.rowCount() == 0
    assert view.unprotected_title.text() == "Broker positions without protection"


def test_a_broker_answer_after_the_view_stopped_is_dropped(
    view: PositionsView, service: FakeService, store: ProtectionStore, qtbot: QtBot
) -> None:
    account = store.add_account("kite", "Zerodha", user_id="AB1234")
    service.sessions = {
        account.id: SimpleNamespace(account=account, broker_if_ready=lambda: object(), account_id=account.id)
    }
    service.positions = [
        Position("ITC", "NSE", 424961, "NSE_EQ|ITC", 100, 418.2, Product.CNC, "CNC", 420.0, 180.0)
    ]
    asked, answer, answered = threading.Event(), threading.Event(), threading.Event()
    ask_broker = service.unprotected_positions

    def slow_broker(account_id: int) -> list[Position]:
        asked.set()
        answer.wait(5)
        try:
            return ask_broker(account_id)
        finally:
            answered.set()

    service.unprotected_positions = slow_broker  # type: ignore[method-assign]
    view.fetch_unprotected_now()
    qtbot.waitUntil(asked.is_set, timeout=3000)
    view.stop()
    answer.set()
    assert answered.wait(5)
    assert view.wait_for_flows()
    assert view.unprotected_model.rowCount() == 0


@pytest.mark.parametrize(
    ("value", "target", "message"),
    [
        ("", "", "Trail value: enter"),
        ("abc", "", "Trail value: 'abc' is not a number"),
        ("0", "", "Trail value: must be greater than 0"),
        ("150", "", "Trail value: a percent must be below 100"),
        ("2", "x", "Target: 'x' is not a number"),
        ("2", "-1", "Target: must be greater than 0"),
        ("2", "1000", "Target: a percent must be below 1000"),
    ],
    ids=[
        "empty",
        "letters",
        "zero",
        "percent-too-big",
        "target-letters",
        "target-negative",
        "target-too-big",
    ],
)
def test_parse_rule_names_the_field(value: str, target: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        parse_rule("percent", value, target)


def test_parse_rule_keeps_options_of_the_same_unit() -> None:
    base = TrailRule.percent(2, activation=1, breakeven=1.5)
    assert parse_rule("percent", "3", "", base) == TrailRule.percent(3, activation=1, breakeven=1.5)
    assert parse_rule("points", "10", "40", base) == TrailRule.points(10, target=40)


def test_rule_dialog_validates_inline_and_previews_the_stop(qtbot: QtBot) -> None:
    dialog = RuleDialog(
        None,
        title="Protect",
        subject="INFY Long 10",
        side=Side.BUY,
        quantity=10,
        reference_price=1500.0,
        rule=TrailRule.percent(2),
    )
    qtbot.addWidget(dialog)
    assert dialog.ok.isEnabled()
    assert "1,470.00" in dialog.preview.text() and "₹300.00" in dialog.preview.text()
    dialog.value.lineEdit().selectAll()
    qtbot.keyClicks(dialog.value.lineEdit(), "0")
    assert not dialog.ok.isEnabled()
    assert dialog.error.text().startswith("Trailing stop")
    dialog.kind.setCurrentIndex(1)  # points
    dialog.value.lineEdit().selectAll()
    qtbot.keyClicks(dialog.value.lineEdit(), "25")
    assert dialog.ok.isEnabled()
    rule = dialog.rule()
    assert rule is not None and rule.kind is RuleKind.POINTS and rule.value == 25
    assert "1,475.00" in dialog.preview.text()


def test_the_safety_column_sits_beside_the_stop(view: PositionsView, store: ProtectionStore) -> None:
    protect(store)
    view.reload_all()
    header = view.table.horizontalHeader()
    shown = [
        view.proxy.headerData(header.logicalIndex(n), Qt.Orientation.Horizontal)
        for n in range(header.count())
    ]
    assert shown[shown.index("Stop") + 1] == "Safety"
    assert view.proxy.index(0, Column.SAFETY).data() == "—"  # a protection without a safety stop


def test_a_paused_row_shows_the_live_price_and_resume_says_it_will_exit(
    view: PositionsView, service: FakeService, store: ProtectionStore
) -> None:
    p = protect(store)
    loaded(service, p)
    store.update(p.id, kind="stop_moved", stop=1470.0)
    view.reload_all()
    view.select_pid(p.id)
    answers = install(view, Answers(confirm=False))
    view.act_pause.trigger()  # pausing asks first: a paused stop does not fire
    assert service.calls == [] and answers.questions[0][0] == "Pause protection"
    assert "sends NO exit" in answers.questions[0][1]
    answers.confirm_answer = True
    view.act_pause.trigger()
    assert service.calls == [("pause", p.id)]
    view.model.apply_snapshot({"account_id": p.account_id, "quotes": {408065: SimpleNamespace(ltp=1460.0)}})
    view.model.flush()
    row = view.model.row_for(p.id)
    assert row is not None and row.ltp == 1460.0
    assert row.status_text == "Paused: stop crossed"
    answers.confirm_answer = False
    view.act_pause.trigger()  # Resume…
    title, text, accept = answers.questions[-1]
    assert title == "Resume protection" and accept == "Resume and exit now"
    assert "already through the stop (1,470.00)" in text and "MARKET exit at once" in text
    assert service.calls == [("pause", p.id)]  # the trader said no: nothing resumed
    view.model.apply_snapshot({"account_id": p.account_id, "quotes": {408065: SimpleNamespace(ltp=1490.0)}})
    view.act_pause.trigger()
    assert "arms again at 1,470.00" in answers.questions[-1][1]


def test_modify_rule_shows_the_whole_rule_and_a_profit_locked_in(qtbot: QtBot) -> None:
    rule = TrailRule.percent(2.0, activation=1.0, breakeven=0.5, target=5.0)
    dialog = RuleDialog(
        None,
        title="Modify trailing rule",
        subject="INFY Long 10",
        side=Side.BUY,
        quantity=10,
        reference_price=1600.0,  # the price rose from the 1,500 entry
        rule=rule,
        current_stop=1568.0,
        entry_price=1500.0,
    )
    qtbot.addWidget(dialog)
    dialog.show()
    editor = dialog.editor
    assert editor.options.isVisible() and editor.activation.value() == 1.0 and editor.breakeven.value() == 0.5
    assert editor.target.value() == 5.0 and dialog.rule() == rule
    text = dialog.preview.text()
    assert "1,568.00" in text and "locks in ₹680.00 of profit" in text and "at risk" not in text
    assert "starts after a 1 % move" in text and "breakeven after 0.5 %" in text and "target 5 %" in text


def test_a_total_pnl_line_sums_open_and_closed_today(view: PositionsView, store: ProtectionStore) -> None:
    held = protect(store)  # long 10 from 1,500
    done = protect(store, "TCS", 2953217)
    for status in (Status.TRIGGERED, Status.EXITING):
        store.transition(done.id, status)
    store.transition(done.id, Status.CLOSED, exit_price=1480.0, exit_quantity=10)
    view.reload_all()
    quote = SimpleNamespace(ltp=1512.5)
    view.model.apply_snapshot({"account_id": held.account_id, "quotes": {408065: quote}})
    view.model.flush()
    assert "Total P&amp;L" in view.total_pnl.text() and "−₹75.00" in view.total_pnl.text()  # +125 - 200
    assert "Unrealised +₹125.00 on 1 open" in view.total_pnl.toolTip()
    assert "realised −₹200.00 on 1 closed" in view.total_pnl.toolTip()


def header_width(view: PositionsView) -> int:
    header = view.table.horizontalHeader()
    return sum(header.sectionSize(n) for n in range(header.count()))


def test_the_status_is_in_view_without_scrolling_sideways(
    qtbot: QtBot, view: PositionsView, store: ProtectionStore
) -> None:
    protect(store)
    view.reload_all()
    view.resize(560, 400)  # the positions area of a small window, beside the order form
    qtbot.waitUntil(lambda: view.table.viewport().width() < 1000, timeout=2000)
    assert header_width(view) > view.table.viewport().width()  # the columns do not all fit
    header = view.table.horizontalHeader()
    assert header.visualIndex(Column.STATUS) == 1  # right after the symbol
    left = header.sectionViewportPosition(Column.STATUS)
    assert left >= 0 and left + header.sectionSize(Column.STATUS) <= view.table.viewport().width()
    text = view.proxy.index(0, Column.STATUS).data()
    assert header.sectionSize(Column.STATUS) >= view.table.fontMetrics().horizontalAdvance(text)


def test_a_failing_order_route_shows_on_the_rows_an_exit_would_fail(
    view: PositionsView, service: FakeService, store: ProtectionStore
) -> None:
    p = protect(store)
    loaded(service, p)
    view.reload_all()
    view.set_route_state(p.account_id, "refused")  # the route monitor's check: the IP is not registered
    row = view.model.row_for(p.id)
    assert row is not None and row.state is RowState.NOT_WATCHED
    assert row.status_text == "Exit would fail: orders refused (IP not registered)"
    view.set_route_state(p.account_id, "ok")
    row = view.model.row_for(p.id)
    assert row is not None and row.state is RowState.ARMED
    view.service.session_state_changed.emit(p.account_id, "login needed")  # the deeper trouble wins
    view.set_route_state(p.account_id, "unreachable")
    row = view.model.row_for(p.id)
    assert row is not None and row.status_text == "Not watched: login needed"


def test_a_basket_takes_one_accounts_rows(view: PositionsView, store: ProtectionStore, qtbot: QtBot) -> None:
    """Rows of two accounts cannot share a basket (its MTM is one account's money): refused, with a word."""
    from PySide6.QtCore import QItemSelectionModel

    first = protect(store)
    upstox = store.add_account("upstox", "Upstox", user_id="U1")
    other = factories.protection(store, upstox.id, symbol="TCS", instrument=2953217, broker="upstox")
    view.reload_all()
    view.set_basket_tools(SimpleNamespace(), None, None)  # type: ignore[arg-type]  # never reached
    assert view.act_basket.isVisible() and not view.act_protection_rules.isVisible()
    flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
    for pid in (first.id, other.id):
        row = view.model.row_number(pid)
        assert row is not None
        view.table.selectionModel().select(view.proxy.mapFromSource(view.model.index(row, 0)), flags)
    assert sorted(view.selected_pids()) == [first.id, other.id] and view.selected_pid() is None
    assert not view.act_basket.isEnabled() and not view.act_modify.isEnabled()
    with qtbot.waitSignal(view.message_posted) as said:
        assert view.basket_selected() is None
    assert said.args == ["A basket holds one account's positions: select rows of one account"]


def test_exit_now_on_an_account_not_loaded_says_when_it_can_go_out(
    view: PositionsView, service: FakeService, store: ProtectionStore
) -> None:
    p = protect(store)  # its account has no session this run
    view.reload_all()
    row = view.model.row_for(p.id)
    assert row is not None and row.status_text == "Not watched: account not loaded this run"
    view.select_pid(p.id)
    install(view, Answers(confirm=True))
    messages: list[str] = []
    view.message_posted.connect(messages.append)
    view.act_exit.trigger()
    assert service.calls == [("exit_now", p.id)]
    assert messages == [
        "INFY: exit NOT sent yet (account not loaded this run); it goes out once a run of TrailStop loads"
        " the account"
    ]
