"""A trailing rule, edited: percent or points, the distance, and the optional activation, ladder, breakeven
and target. Used by the order form, and by any dialog that changes a protection's rule.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from trailstop_gui.models.domain import RuleKind, TrailRule
from trailstop_gui.views.number_field import StrictDoubleSpinBox

FIELD_TRAIL = "Trailing stop"
FIELD_ACTIVATION = "Start trailing"
FIELD_LADDER = "Ladder"
FIELD_BREAKEVEN = "Breakeven"
FIELD_TARGET = "Target"

MAX_VALUE = 1_000_000.0


def describe_in_full(rule: TrailRule) -> str:
    """Every part of a rule in words: "2 % trail · starts after 1 % · breakeven after 0.75 % · target 5 %"."""
    unit = " %" if rule.kind is RuleKind.PERCENT else " pts"

    def v(x: float) -> str:
        return f"{x:g}{unit}"

    parts = [f"{v(rule.value)} trail"]
    if rule.activation is not None:
        parts.append(f"starts after a {v(rule.activation)} move")
    if rule.ladder_step is not None and rule.ladder_raise is not None:
        parts.append(f"in steps: every {v(rule.ladder_step)} raises it {v(rule.ladder_raise)}")
    if rule.breakeven is not None:
        parts.append(f"breakeven after {v(rule.breakeven)}")
    if rule.target is not None:
        parts.append(f"target {v(rule.target)}")
    return " · ".join(parts)


def _spin(tooltip: str) -> StrictDoubleSpinBox:
    spin = StrictDoubleSpinBox()
    spin.setDecimals(2)
    spin.setRange(0.0, MAX_VALUE)
    spin.setSingleStep(0.25)
    spin.setAccelerated(True)
    spin.setKeyboardTracking(True)
    spin.setToolTip(tooltip)
    spin.setAlignment(Qt.AlignmentFlag.AlignRight)
    spin.setMinimumWidth(92)
    return spin


class RuleEditor(QWidget):
    """Edits a ``TrailRule``. ``rule_changed`` fires on every edit; ``errors()`` names each bad field."""

    rule_changed = Signal()

    def __init__(self, rule: TrailRule | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.kind = QComboBox()
        self.kind.addItem("Percent (%)", RuleKind.PERCENT.value)
        self.kind.addItem("Points (₹)", RuleKind.POINTS.value)
        self.kind.setToolTip(
            "Percent: the stop stays this percentage away from the price.\n"
            "Points: the stop stays this many rupees away from the price."
        )
        self.kind.setAccessibleName("Trailing rule kind")
        self.value = _spin("How far the stop trails the price")
        self.value.setAccessibleName("Trailing distance")

        self.more = QToolButton()
        self.more.setText("More options")
        self.more.setCheckable(True)
        self.more.setArrowType(Qt.ArrowType.RightArrow)
        self.more.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.more.setAutoRaise(True)
        self.more.setToolTip("Start trailing later, trail in steps, move to breakeven, take a target")

        # Said when Percent and Points are switched: the numbers were converted, or cleared to be re-entered.
        self.unit_note = QLabel("")
        self.unit_note.setObjectName("hint")
        self.unit_note.setWordWrap(True)
        self.unit_note.setVisible(False)
        self._reference_price: float | None = None

        self.activation_on = QCheckBox("Start trailing after")
        self.activation = _spin(
            "Until the price has moved this much in your favour, the stop stays where it started"
        )
        self.ladder_on = QCheckBox("Trail in steps of")
        self.ladder_step = _spin("Each time the price moves this much in your favour…")
        self.ladder_raise = _spin("…the stop moves this much towards the price")
        self.breakeven_on = QCheckBox("Breakeven after")
        self.breakeven = _spin(
            "Once the price has moved this much in your favour, the stop moves to your entry price"
        )
        self.target_on = QCheckBox("Take profit after")
        self.target = _spin("Exit with a profit once the price has moved this much in your favour")

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.kind, 1)
        top.addWidget(self.value, 1)

        self.options = QWidget()
        grid = QGridLayout(self.options)
        grid.setContentsMargins(12, 0, 0, 0)
        grid.setHorizontalSpacing(6)
        self._raise_label = QLabel("raising the stop by")
        grid.addWidget(self.activation_on, 0, 0)
        grid.addWidget(self.activation, 0, 1)
        grid.addWidget(self.ladder_on, 1, 0)
        grid.addWidget(self.ladder_step, 1, 1)
        grid.addWidget(self._raise_label, 2, 0, Qt.AlignmentFlag.AlignRight)
        grid.addWidget(self.ladder_raise, 2, 1)
        grid.addWidget(self.breakeven_on, 3, 0)
        grid.addWidget(self.breakeven, 3, 1)
        grid.addWidget(self.target_on, 4, 0)
        grid.addWidget(self.target, 4, 1)
        grid.setColumnStretch(0, 1)
        self.options.setVisible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(top)
        layout.addWidget(self.unit_note)
        layout.addWidget(self.more, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.options)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

        self._pairs = (
            (self.activation_on, (self.activation,)),
            (self.ladder_on, (self.ladder_step, self.ladder_raise)),
            (self.breakeven_on, (self.breakeven,)),
            (self.target_on, (self.target,)),
        )
        for box, spins in self._pairs:
            # Never narrower than its words: "Start trailing afte" says nothing.
            box.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
            box.setToolTip(spins[0].toolTip())
            box.toggled.connect(self._on_option_toggled)
            for spin in spins:
                spin.setEnabled(False)
                spin.valueChanged.connect(self._on_edited)
        self._kind_shown = RuleKind(self.kind.currentData())
        self.kind.currentIndexChanged.connect(self._on_kind_changed)
        self.value.valueChanged.connect(self._on_edited)
        for spin in self._spins():
            # What was typed counts, even before it is a number (errors() names what is wrong with it).
            spin.lineEdit().textEdited.connect(self._on_edited)
        self.more.toggled.connect(self._on_more_toggled)
        self.set_rule(rule or TrailRule.percent(2.0))
        QWidget.setTabOrder(self.kind, self.value)
        QWidget.setTabOrder(self.value, self.more)
        previous: QWidget = self.more
        for box, spins in self._pairs:
            QWidget.setTabOrder(previous, box)
            previous = box
            for spin in spins:
                QWidget.setTabOrder(previous, spin)
                previous = spin

    # ----------------------------------------------------------------- reading and writing the rule

    def set_rule(self, rule: TrailRule) -> None:
        """Show ``rule``; the optional features it uses open the "More options" section."""
        widgets = [self.kind, self.value] + [w for box, spins in self._pairs for w in (box, *spins)]
        for w in widgets:
            w.blockSignals(True)
        try:
            self.kind.setCurrentIndex(self.kind.findData(rule.kind.value))
            self.value.setValue(rule.value)
            values = {
                self.activation_on: (rule.activation,),
                self.ladder_on: (rule.ladder_step, rule.ladder_raise),
                self.breakeven_on: (rule.breakeven,),
                self.target_on: (rule.target,),
            }
            for box, spins in self._pairs:
                given = values[box]
                on = given[0] is not None
                box.setChecked(on)
                for spin, v in zip(spins, given, strict=True):
                    spin.setEnabled(on)
                    if v is not None:
                        spin.setValue(v)
        finally:
            for w in widgets:
                w.blockSignals(False)
        self._kind_shown = rule.kind
        _show(self.unit_note, "")
        self._apply_units()
        uses_options = any(box.isChecked() for box, _ in self._pairs)
        self.more.setChecked(uses_options or self.more.isChecked())
        self._update_more_text()
        self.rule_changed.emit()

    def current_kind(self) -> RuleKind:
        return RuleKind(self.kind.currentData())

    def errors(self) -> list[tuple[str, str]]:
        """Every problem, as (field, message); empty when ``rule()`` will succeed."""
        percent = self.current_kind() is RuleKind.PERCENT
        out: list[tuple[str, str]] = []
        typed = [(FIELD_TRAIL, self.value)] + [
            (field, spin) for field, box, spins in self._named_options() if box.isChecked() for spin in spins
        ]
        for field, spin in typed:
            problem = spin.problem()
            if problem is not None and all(f != field for f, _ in out):
                out.append((field, problem))
        if out:
            return out
        value = self.value.value()
        if value <= 0:
            out.append((FIELD_TRAIL, "must be greater than 0"))
        elif percent and value >= 100:
            out.append((FIELD_TRAIL, "a percentage must be below 100"))
        if self.activation_on.isChecked() and self.activation.value() <= 0:
            out.append((FIELD_ACTIVATION, "the move must be greater than 0"))
        if self.ladder_on.isChecked():
            step, lift = self.ladder_step.value(), self.ladder_raise.value()
            if step <= 0 or lift <= 0:
                out.append((FIELD_LADDER, "give both the step and the raise, greater than 0"))
            elif lift > step:
                out.append((FIELD_LADDER, "the raise must not be larger than the step"))
            elif percent and lift >= 100:
                out.append((FIELD_LADDER, "a percentage raise must be below 100"))
        if self.breakeven_on.isChecked() and self.breakeven.value() <= 0:
            out.append((FIELD_BREAKEVEN, "the move must be greater than 0"))
        if self.target_on.isChecked():
            target = self.target.value()
            if target <= 0:
                out.append((FIELD_TARGET, "must be greater than 0"))
            elif percent and target >= 1000:
                out.append((FIELD_TARGET, "a percentage must be below 1000"))
        if not out:
            try:
                self._build()
            except ValueError as exc:  # anything the domain refuses that the checks above missed
                out.append((FIELD_TRAIL, str(exc)))
        return out

    def rule(self) -> TrailRule:
        """The rule shown; raises ValueError naming the first bad field."""
        problems = self.errors()
        if problems:
            field, message = problems[0]
            raise ValueError(f"{field}: {message}")
        return self._build()

    def rule_or_none(self) -> TrailRule | None:
        return None if self.errors() else self._build()

    def field_widget(self, field: str) -> QWidget:
        """The widget to focus for an error in ``field``."""
        return {
            FIELD_ACTIVATION: self.activation,
            FIELD_LADDER: self.ladder_step,
            FIELD_BREAKEVEN: self.breakeven,
            FIELD_TARGET: self.target,
        }.get(field, self.value)

    def _build(self) -> TrailRule:
        def opt(box: QCheckBox, spin: QDoubleSpinBox) -> float | None:
            return spin.value() if box.isChecked() else None

        return TrailRule(
            self.current_kind(),
            self.value.value(),
            activation=opt(self.activation_on, self.activation),
            ladder_step=opt(self.ladder_on, self.ladder_step),
            ladder_raise=opt(self.ladder_on, self.ladder_raise),
            breakeven=opt(self.breakeven_on, self.breakeven),
            target=opt(self.target_on, self.target),
        )

    # ----------------------------------------------------------------- slots

    def set_reference_price(self, price: float | None) -> None:
        """The price a switch between Percent and Points converts at (None: unknown, values are cleared)."""
        self._reference_price = price if price is not None and price > 0 else None

    def _named_options(self) -> tuple[tuple[str, QCheckBox, tuple[StrictDoubleSpinBox, ...]], ...]:
        return (
            (FIELD_ACTIVATION, self.activation_on, (self.activation,)),
            (FIELD_LADDER, self.ladder_on, (self.ladder_step, self.ladder_raise)),
            (FIELD_BREAKEVEN, self.breakeven_on, (self.breakeven,)),
            (FIELD_TARGET, self.target_on, (self.target,)),
        )

    def _on_kind_changed(self, _index: int) -> None:
        new = self.current_kind()
        if new is not self._kind_shown:
            self._convert_values(self._kind_shown, new)
            self._kind_shown = new
        self._apply_units()
        self._on_edited()

    def _convert_values(self, _old: RuleKind, new: RuleKind) -> None:
        """10 points must not silently become 10 %: convert each distance at the reference price, or clear."""
        price = self._reference_price
        spins = self._spins()
        for spin in spins:
            spin.blockSignals(True)
        try:
            if price is None:
                for spin in spins:
                    spin.setValue(0.0)
                _show(
                    self.unit_note,
                    f"Switched to {'percent' if new is RuleKind.PERCENT else 'points'} with no price to"
                    " convert at: enter the distances again.",
                )
                return
            for spin in spins:
                v = spin.value()
                if v <= 0:
                    continue
                converted = v / price * 100.0 if new is RuleKind.PERCENT else v * price / 100.0
                spin.setValue(round(converted, spin.decimals()))
            unit = "%" if new is RuleKind.PERCENT else "points"
            _show(self.unit_note, f"Converted to {unit} at the price {price:,.2f}; check the numbers.")
        finally:
            for spin in spins:
                spin.blockSignals(False)

    def _on_option_toggled(self, _on: bool) -> None:
        for box, spins in self._pairs:
            for spin in spins:
                spin.setEnabled(box.isChecked())
        self._update_more_text()
        self._on_edited()

    def _on_more_toggled(self, on: bool) -> None:
        self.options.setVisible(on)
        self.more.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    def _on_edited(self, *_args: object) -> None:
        if self.sender() is not self.kind:
            _show(self.unit_note, "")
        self._update_more_text()
        self.rule_changed.emit()

    def _apply_units(self) -> None:
        percent = self.current_kind() is RuleKind.PERCENT
        suffix = " %" if percent else " pts"
        for spin in self._spins():
            spin.setSuffix(suffix)
        self.value.setSingleStep(0.25 if percent else 1.0)

    def _spins(self) -> tuple[StrictDoubleSpinBox, ...]:
        return (self.value, self.activation, self.ladder_step, self.ladder_raise, self.breakeven, self.target)

    def _update_more_text(self) -> None:
        on = [box for box, _ in self._pairs if box.isChecked()]
        names = {
            self.activation_on: "delayed start",
            self.ladder_on: "steps",
            self.breakeven_on: "breakeven",
            self.target_on: "target",
        }
        self.more.setText("More options" + (f" ({', '.join(names[b] for b in on)})" if on else ""))


def _show(label: QLabel, text: str) -> None:
    label.setText(text)
    label.setVisible(bool(text))
