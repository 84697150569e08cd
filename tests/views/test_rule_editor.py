"""The rule editor: round trips every rule feature, names each bad field, follows the unit."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from trailstop_gui.models.domain import RuleKind, TrailRule
from trailstop_gui.views.rule_editor import RuleEditor


@pytest.fixture
def editor(qtbot: QtBot) -> RuleEditor:
    widget = RuleEditor()
    qtbot.addWidget(widget)
    widget.show()
    return widget


@pytest.mark.parametrize(
    "rule",
    [
        TrailRule.percent(2.0),
        TrailRule.points(12.5),
        TrailRule.percent(1.5, activation=1.0, breakeven=0.75, target=5.0),
        TrailRule.points(10.0, ladder_step=20.0, ladder_raise=10.0, target=60.0),
    ],
)
def test_round_trip(editor: RuleEditor, rule: TrailRule) -> None:
    editor.set_rule(rule)
    assert editor.rule() == rule
    uses_options = any(
        getattr(rule, name) is not None for name in ("activation", "ladder_step", "breakeven", "target")
    )
    assert editor.options.isVisible() is uses_options
    assert ("target" in editor.more.text()) is (rule.target is not None)


def test_default_is_two_percent_with_options_folded(editor: RuleEditor) -> None:
    assert editor.rule() == TrailRule.percent(2.0)
    assert not editor.options.isVisible() and not editor.activation.isEnabled()
    editor.more.click()
    assert editor.options.isVisible()


def test_unit_follows_the_kind_and_edits_emit(qtbot: QtBot, editor: RuleEditor) -> None:
    assert editor.value.suffix() == " %"
    with qtbot.waitSignal(editor.rule_changed, timeout=500):
        editor.kind.setCurrentIndex(editor.kind.findData(RuleKind.POINTS.value))
    assert editor.value.suffix() == " pts" and editor.target.suffix() == " pts"
    with qtbot.waitSignal(editor.rule_changed, timeout=500):
        editor.value.setValue(5)
    assert editor.rule() == TrailRule.points(5.0)


@pytest.mark.parametrize(
    ("setup", "field", "words"),
    [
        (lambda e: e.value.setValue(0), "Trailing stop", "greater than 0"),
        (lambda e: e.value.setValue(100), "Trailing stop", "below 100"),
        (lambda e: (e.activation_on.setChecked(True), e.activation.setValue(0)), "Start trailing", "greater"),
        (lambda e: (e.ladder_on.setChecked(True), e.ladder_step.setValue(1)), "Ladder", "both"),
        (
            lambda e: (e.ladder_on.setChecked(True), e.ladder_step.setValue(1), e.ladder_raise.setValue(2)),
            "Ladder",
            "larger than the step",
        ),
        (lambda e: e.breakeven_on.setChecked(True), "Breakeven", "greater than 0"),
        (lambda e: (e.target_on.setChecked(True), e.target.setValue(1000)), "Target", "below 1000"),
    ],
)
def test_errors_name_the_field(editor: RuleEditor, setup, field: str, words: str) -> None:  # type: ignore[no-untyped-def]
    setup(editor)
    problems = editor.errors()
    assert problems and problems[0][0] == field and words in problems[0][1]
    assert editor.rule_or_none() is None
    with pytest.raises(ValueError, match=f"^{field}: "):
        editor.rule()
    assert editor.field_widget(field).isEnabled()


def test_an_option_turned_off_is_not_part_of_the_rule(editor: RuleEditor) -> None:
    editor.set_rule(TrailRule.percent(2.0, target=4.0))
    editor.target_on.setChecked(False)
    assert editor.rule() == TrailRule.percent(2.0)
    assert not editor.target.isEnabled()
