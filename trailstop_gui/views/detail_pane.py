"""The detail pane of the selected protection: a live chart of price, stop and safety stop, and its journal.

Prices are kept per instrument and stops per protection in bounded history buffers fed by every snapshot,
so a protection selected later still shows the last half hour. The chart redraws at most four times a
second and only when the selected protection changed.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from PySide6.QtCharts import QChart, QChartView, QDateTimeAxis, QLineSeries, QScatterSeries, QValueAxis
from PySide6.QtCore import QDateTime, QMargins, QPointF, Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSplitter,
    QStackedWidget,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from trailstop_gui.models.domain import Protection, SafetyState, Status
from trailstop_gui.models.engine import initial_stop
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.views import theme
from trailstop_gui.views.journal_view import JournalModel, JournalProxy, build_rows
from trailstop_gui.views.positions_model import PositionRow, PositionsModel, RowState
from trailstop_gui.views.rule_editor import describe_in_full

PRICE_POINTS = 3600  # per instrument: half an hour at two points a second
STOP_POINTS = 1000  # per protection: stop changes only
PRICE_RESOLUTION = 0.5  # seconds: a later price within the same half second replaces the last point
CHART_REFRESH_MS = 250
JOURNAL_REFRESH_MS = 1000
MIN_SPAN_S = 10.0
# A safety stop in these states is drawn up to now (or the close); otherwise its line ends where it went.
SAFETY_DRAWN = frozenset({SafetyState.PLACED, SafetyState.MOVING, SafetyState.FIRED, SafetyState.EXIT})


class Series:
    """A bounded time series in two flat arrays (8 bytes a number, not a tuple per point)."""

    __slots__ = ("capacity", "t", "v")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.t = array("d")
        self.v = array("d")

    def add(self, t: float, value: float, resolution: float = 0.0) -> None:
        if self.t and t - self.t[-1] < resolution:
            self.v[-1] = value  # the latest price of this slot wins
            return
        if self.t and t < self.t[-1]:
            t = self.t[-1]  # never go back in time (clocks of two feeds)
        self.t.append(t)
        self.v.append(value)
        if len(self.t) > self.capacity + self.capacity // 4:
            excess = len(self.t) - self.capacity
            del self.t[:excess]
            del self.v[:excess]

    def last(self) -> float | None:
        return self.v[-1] if self.v else None

    def __len__(self) -> int:
        return len(self.t)

    def points(self, since: float = 0.0) -> list[tuple[float, float]]:
        return [(t, v) for t, v in zip(self.t, self.v, strict=True) if t >= since]


class ChartHistory:
    """Recent prices per (account, instrument) and stop levels per protection, from snapshots.

    Safety stop levels per protection come from the store (the journal, and the protection as read on
    every change), as the broker-held stop moves only through the store.
    """

    def __init__(self, price_points: int = PRICE_POINTS, stop_points: int = STOP_POINTS) -> None:
        self.price_points = price_points
        self.stop_points = stop_points
        self.prices: dict[tuple[int | None, Hashable], Series] = {}
        self.stops: dict[int, Series] = {}
        self.safety: dict[int, Series] = {}

    def record_snapshot(self, snapshot: Mapping[str, Any], now: float | None = None) -> None:
        now = time.time() if now is None else now
        account_id = snapshot.get("account_id")
        quotes: Mapping[Hashable, Any] = snapshot.get("quotes") or {}
        for instrument, quote in quotes.items():
            ltp = getattr(quote, "ltp", None)
            if ltp is None or not ltp > 0:
                continue
            key = (account_id, instrument)
            series = self.prices.get(key)
            if series is None:
                series = self.prices[key] = Series(self.price_points)
            series.add(getattr(quote, "at", None) or now, float(ltp), PRICE_RESOLUTION)
        stops: Mapping[int, float] = snapshot.get("stops") or {}
        for pid, stop in stops.items():
            self.add_stop(pid, now, stop)

    def add_stop(self, pid: int, t: float, stop: float) -> None:
        series = self.stops.get(pid)
        if series is None:
            series = self.stops[pid] = Series(self.stop_points)
        if series.last() != stop:
            series.add(t, float(stop))

    def seed_stops(self, pid: int, points: Iterable[tuple[float, float]]) -> None:
        """Stops known from the journal: those from before what this run has seen come first (a protection
        seen only from its first move on still shows the stop it started with)."""
        seen = self.stops.get(pid)
        first_seen = seen.t[0] if seen is not None and len(seen) else None
        earlier = sorted(pt for pt in points if first_seen is None or pt[0] < first_seen)
        if not earlier:
            return
        later = seen.points() if seen is not None else []
        self.stops[pid] = Series(self.stop_points)
        for t, stop in [*earlier, *later]:
            self.add_stop(pid, t, stop)

    def add_safety(self, pid: int, t: float, level: float) -> None:
        series = self.safety.get(pid)
        if series is None:
            series = self.safety[pid] = Series(self.stop_points)
        if series.last() != level:
            series.add(t, float(level))

    def seed_safety(self, pid: int, points: Iterable[tuple[float, float]]) -> None:
        """Safety stop levels known from the journal, for a protection not seen in this run."""
        if pid in self.safety and len(self.safety[pid]):
            return
        for t, level in sorted(points):
            self.add_safety(pid, t, level)

    def price_series(self, account_id: int, instrument: Hashable) -> Series | None:
        return self.prices.get((account_id, instrument)) or self.prices.get((None, instrument))

    def forget(self, pid: int) -> None:
        self.stops.pop(pid, None)
        self.safety.pop(pid, None)


def _ms(t: float) -> float:
    return t * 1000.0


def stop_steps(points: list[tuple[float, float]], until: float) -> list[tuple[float, float]]:
    """A stop that holds its level until the next change: (t0,s0),(t1,s0),(t1,s1),...,(until,s_last)."""
    out: list[tuple[float, float]] = []
    for n, (t, s) in enumerate(points):
        if n:
            out.append((t, points[n - 1][1]))
        out.append((t, s))
    if points and until > points[-1][0]:
        out.append((until, points[-1][1]))
    return out


class PriceChart(QChartView):
    """Price line, stop and safety stop as step lines, entry and target lines, a marker where it fired."""

    def __init__(self, parent: QWidget | None = None) -> None:
        chart = QChart()
        super().__init__(chart, parent)
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setMinimumHeight(180)
        chart.setAnimationOptions(QChart.AnimationOption.NoAnimation)
        chart.setMargins(QMargins(4, 4, 4, 4))
        chart.layout().setContentsMargins(0, 0, 0, 0)
        chart.setBackgroundRoundness(0)
        chart.legend().setAlignment(Qt.AlignmentFlag.AlignBottom)
        self.price = QLineSeries()
        self.price.setName("Price")
        self.stop = QLineSeries()
        self.stop.setName("Stop")
        self.safety = QLineSeries()
        self.safety.setName("Safety stop")
        self.safety.setVisible(False)
        self.entry = QLineSeries()
        self.entry.setName("Entry")
        self.target = QLineSeries()
        self.target.setName("Target")
        self.trigger = QScatterSeries()
        self.trigger.setName("Stop fired")
        self.trigger.setMarkerShape(QScatterSeries.MarkerShape.MarkerShapeCircle)
        self.trigger.setMarkerSize(11.0)
        self.x_axis = QDateTimeAxis()
        self.x_axis.setFormat("HH:mm:ss")
        self.x_axis.setTickCount(5)
        self.y_axis = QValueAxis()
        self.y_axis.setLabelFormat("%.2f")
        self.y_axis.setTickCount(6)
        chart.addAxis(self.x_axis, Qt.AlignmentFlag.AlignBottom)
        chart.addAxis(self.y_axis, Qt.AlignmentFlag.AlignRight)
        for series in (self.entry, self.target, self.safety, self.stop, self.price, self.trigger):
            chart.addSeries(series)
            series.attachAxis(self.x_axis)
            series.attachAxis(self.y_axis)
        self.set_colors(theme.colors())

    def set_colors(self, colors: theme.Colors) -> None:
        chart = self.chart()
        palette = self.palette()
        base = palette.base().color()
        text = palette.text().color()
        chart.setBackgroundBrush(QBrush(base))
        chart.setPlotAreaBackgroundVisible(False)
        chart.legend().setLabelColor(text)
        for axis in (self.x_axis, self.y_axis):
            axis.setLabelsColor(text)
            axis.setGridLineColor(colors.chart_grid)
            axis.setLinePenColor(colors.chart_grid)
        self.price.setPen(QPen(colors.chart_price, 2.0))
        stop_pen = QPen(colors.chart_stop, 2.0)
        self.stop.setPen(stop_pen)
        self.safety.setPen(QPen(colors.chart_stop, 1.6, Qt.PenStyle.DashLine))
        self.entry.setPen(QPen(colors.chart_entry, 1.2, Qt.PenStyle.DashLine))
        self.target.setPen(QPen(colors.chart_target, 1.2, Qt.PenStyle.DashLine))
        self.trigger.setColor(colors.chart_trigger)
        self.trigger.setBorderColor(QColor(base))

    def clear(self) -> None:
        for series in (self.price, self.stop, self.safety, self.entry, self.target, self.trigger):
            series.clear()

    def plot(
        self,
        prices: list[tuple[float, float]],
        stops: list[tuple[float, float]],
        *,
        entry: float | None,
        target: float | None,
        trigger: tuple[float, float] | None,
        until: float,
        safety: list[tuple[float, float]] | None = None,
        safety_until: float | None = None,
    ) -> None:
        """Times in epoch seconds; ``until`` is where the stop line ends (now, or the close).

        ``safety``: the broker-held stop's levels, drawn dashed up to ``safety_until`` (default ``until``).
        """
        steps = stop_steps(stops, until)
        safety_steps = stop_steps(safety or [], until if safety_until is None else safety_until)
        times = [t for t, _ in prices] + [t for t, _ in steps] + [t for t, _ in safety_steps]
        if trigger is not None:
            times.append(trigger[0])
        start = min(times) if times else until - MIN_SPAN_S
        end = max([*times, until])
        if end - start < MIN_SPAN_S:
            start = end - MIN_SPAN_S
        self.price.replace([QPointF(_ms(t), v) for t, v in prices])
        self.stop.replace([QPointF(_ms(t), v) for t, v in steps])
        self.safety.replace([QPointF(_ms(t), v) for t, v in safety_steps])
        self.safety.setVisible(bool(safety_steps))
        for series, level in ((self.entry, entry), (self.target, target)):
            if level is None:
                series.clear()
                series.setVisible(False)
            else:
                series.replace([QPointF(_ms(start), level), QPointF(_ms(end), level)])
                series.setVisible(True)
        if trigger is None:
            self.trigger.clear()
            self.trigger.setVisible(False)
        else:
            self.trigger.replace([QPointF(_ms(trigger[0]), trigger[1])])
            self.trigger.setVisible(True)
        values = [v for _, v in prices] + [v for _, v in steps] + [v for _, v in safety_steps]
        values += [v for v in (entry, target) if v is not None]
        if trigger is not None:
            values.append(trigger[1])
        if values:
            low, high = min(values), max(values)
            pad = max((high - low) * 0.08, abs(high) * 0.002, 0.05)
            self.y_axis.setRange(low - pad, high + pad)
            self.y_axis.applyNiceNumbers()
        self.x_axis.setRange(
            QDateTime.fromMSecsSinceEpoch(int(_ms(start))), QDateTime.fromMSecsSinceEpoch(int(_ms(end)))
        )
        span = end - start
        self.x_axis.setFormat("HH:mm" if span > 3 * 3600 else "HH:mm:ss")


class DetailPane(QWidget):
    """The selected protection: headline figures, the live chart and the protection's journal."""

    def __init__(
        self,
        store: ProtectionStore,
        model: PositionsModel,
        history: ChartHistory | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("detailPane")
        self.store = store
        self.model = model
        self.history = history or ChartHistory()
        self.pid: int | None = None
        self._protection: Protection | None = None
        self._trigger: tuple[float, float] | None = None
        self._closed_at: float | None = None
        self._safety_until: float | None = None  # when the safety stop left the broker (None: it is there)
        self._colors = theme.colors()

        self.stack = QStackedWidget(self)
        self.placeholder = QLabel(
            "Select a protected position to follow its price, its stop and everything that happened to it.",
            self,
        )
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setEnabled(False)

        page = QWidget(self)
        self.headline = QLabel(page)
        font = self.headline.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.headline.setFont(font)
        self.status_pill = QLabel(page)
        self.status_pill.setObjectName("statusPill")
        self.rule_label = QLabel(page)
        head = QHBoxLayout()
        head.addWidget(self.headline)
        head.addWidget(self.status_pill)
        head.addSpacing(8)
        head.addWidget(self.rule_label)
        head.addStretch(1)

        self.facts: dict[str, QLabel] = {}
        facts = QGridLayout()
        facts.setHorizontalSpacing(18)
        facts.setVerticalSpacing(0)
        names = ("Entry", "LTP", "Stop", "Safety", "Target", "To stop", "P&L")
        for column, name in enumerate(names):
            caption = QLabel(name, page)
            caption.setEnabled(False)  # the palette's disabled text: a quiet caption in both themes
            value = QLabel("—", page)
            value_font = value.font()
            value_font.setBold(True)
            value.setFont(value_font)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            facts.addWidget(caption, 0, column)
            facts.addWidget(value, 1, column)
            self.facts[name] = value
        facts.setColumnStretch(len(names), 1)

        self.chart = PriceChart(page)
        self.chart.setAccessibleName("Price and stop chart of the selected protection")
        self.journal_model = JournalModel(self, time_format="%H:%M:%S")
        self.journal_proxy = JournalProxy(self)
        self.journal_proxy.setSourceModel(self.journal_model)
        self.journal_proxy.set_filters(stop_moves=False)  # the chart shows the trail; this, what happened
        self.journal = QTableView(page)
        self.journal.setObjectName("protectionJournal")
        self.journal.setAccessibleName("Journal of the selected protection")
        self.journal.setModel(self.journal_proxy)
        # The pane's facts already show the P&L: the journal here keeps its width for the details.
        for column in (JournalModel.ACCOUNT, JournalModel.SYMBOL, JournalModel.PNL):
            self.journal.setColumnHidden(column, True)
        self.journal.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.journal.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.journal.setAlternatingRowColors(True)
        self.journal.setShowGrid(False)
        self.journal.setWordWrap(False)
        self.journal.verticalHeader().setVisible(False)
        self.journal.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        header = self.journal.horizontalHeader()
        header.setHighlightSections(False)
        metrics = self.fontMetrics()
        header.resizeSection(JournalModel.TIME, metrics.horizontalAdvance("00:00:00") + 14)
        header.resizeSection(JournalModel.EVENT, metrics.horizontalAdvance("Quantity changed") + 14)
        header.resizeSection(JournalModel.PRICE, metrics.horizontalAdvance("00,000.00") + 14)
        header.setSectionResizeMode(JournalModel.DETAILS, QHeaderView.ResizeMode.Stretch)
        header.moveSection(header.visualIndex(JournalModel.PRICE), header.visualIndex(JournalModel.DETAILS))

        self.splitter = QSplitter(Qt.Orientation.Horizontal, page)
        self.splitter.setObjectName("detailSplitter")
        self.splitter.addWidget(self.chart)
        journal_box = QWidget(page)
        journal_layout = QVBoxLayout(journal_box)
        journal_layout.setContentsMargins(0, 0, 0, 0)
        journal_title = QLabel("Journal", journal_box)
        title_font = journal_title.font()
        title_font.setBold(True)
        journal_title.setFont(title_font)
        self.stop_moves = QCheckBox("Stop moves", journal_box)
        self.stop_moves.setToolTip("Also list every move of the stop")
        self.stop_moves.toggled.connect(lambda on: self.journal_proxy.set_filters(stop_moves=on))
        journal_head = QHBoxLayout()
        journal_head.addWidget(journal_title)
        journal_head.addStretch(1)
        journal_head.addWidget(self.stop_moves)
        journal_layout.addLayout(journal_head)
        journal_layout.addWidget(self.journal)
        self.splitter.addWidget(journal_box)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setChildrenCollapsible(False)

        page_layout = QVBoxLayout(page)
        page_layout.setContentsMargins(0, 0, 0, 0)
        page_layout.setSpacing(4)
        page_layout.addLayout(head)
        page_layout.addLayout(facts)
        line = QFrame(page)
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        page_layout.addWidget(line)
        page_layout.addWidget(self.splitter, 1)

        self.stack.addWidget(self.placeholder)
        self.stack.addWidget(page)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.stack)

        self._chart_dirty = False
        self._chart_timer = QTimer(self)
        self._chart_timer.setSingleShot(True)
        self._chart_timer.setInterval(CHART_REFRESH_MS)
        self._chart_timer.timeout.connect(self._redraw)
        self._journal_timer = QTimer(self)
        self._journal_timer.setSingleShot(True)
        self._journal_timer.setInterval(JOURNAL_REFRESH_MS)
        self._journal_timer.timeout.connect(self._reload_journal)

    # ----------------------------------------------------------------- inputs

    def show_protection(self, pid: int | None) -> None:
        """Follow another protection (None or -1: nothing selected)."""
        if pid is not None and pid < 0:
            pid = None
        self.pid = pid
        if pid is None:
            self._protection = None
            self.stack.setCurrentIndex(0)
            self.chart.clear()
            self.journal_model.set_rows([])
            return
        self.stack.setCurrentIndex(1)
        self._load_protection()
        self._reload_journal()
        self._redraw()

    def on_snapshot(self, touched: Iterable[int]) -> None:
        """The model took a snapshot that touched these protections."""
        if self.pid is not None and self.pid in touched:
            self._chart_dirty = True
            if not self._chart_timer.isActive():
                self._chart_timer.start()
            if self.stop_moves.isChecked() and not self._journal_timer.isActive():
                self._journal_timer.start()  # the moves shown are written within a fraction of a second

    def on_protection_changed(self, pid: int) -> None:
        if pid != self.pid:
            return
        self._load_protection()
        self._chart_dirty = True
        if not self._chart_timer.isActive():
            self._chart_timer.start()
        if not self._journal_timer.isActive():
            self._journal_timer.start()

    def refresh_now(self) -> None:
        """Redraw and reload at once (tests, screenshots)."""
        if self.pid is not None:
            self._load_protection()
            self._reload_journal()
            self._redraw()

    # ----------------------------------------------------------------- drawing

    def _load_protection(self) -> None:
        assert self.pid is not None
        try:
            self._protection = self.store.get(self.pid)
        except KeyError:
            self._protection = None
            return
        p = self._protection
        self._closed_at = p.closed_at.timestamp() if p.closed_at is not None else None
        self._load_safety(p)
        if p.entry_price is not None:
            events = self.store.events(protection_id=p.id, kinds=["stop_moved", "transition"])
            seeds: list[tuple[float, float]] = []
            armed_at = next(
                (e.ts for e in events if e.kind == "transition" and e.new == "OPEN"), p.created_at
            )
            seeds.append((armed_at.timestamp(), initial_stop(p.side, p.entry_price, p.tick_size, p.rule)))
            for e in events:
                if e.kind == "stop_moved":
                    try:
                        seeds.append((e.ts.timestamp(), float(e.new)))
                    except ValueError:
                        continue
            self.history.seed_stops(p.id, seeds)
            trigger = next((e for e in events if e.kind == "transition" and e.new == "TRIGGERED"), None)
            self._trigger = (
                (trigger.ts.timestamp(), trigger.price)
                if trigger is not None and trigger.price is not None and trigger.message != "manual"
                else None
            )
        else:
            self._trigger = None

    def _load_safety(self, p: Protection) -> None:
        """The safety stop's levels from the journal (each event's price is the level it set)."""
        self._safety_until = None
        if p.safety_state is SafetyState.OFF and not p.safety_enabled:
            return
        events = [e for e in self.store.events(protection_id=p.id) if e.kind.startswith("safety")]
        self.history.seed_safety(
            p.id, [(e.ts.timestamp(), e.price) for e in events if e.price is not None and e.price > 0]
        )
        if p.safety_level is not None and p.safety_state in SAFETY_DRAWN:
            self.history.add_safety(p.id, time.time(), p.safety_level)
        elif events:
            self._safety_until = events[-1].ts.timestamp()  # missing, removed, off: the line ends there

    def _reload_journal(self) -> None:
        if self.pid is None:
            return
        self.journal_model.set_rows(build_rows(self.store, protection_id=self.pid))

    def _redraw(self) -> None:
        self._chart_dirty = False
        row = self.model.row_for(self.pid) if self.pid is not None else None
        p = self._protection
        if row is None or p is None:
            return
        self._update_facts(row)
        series = self.history.price_series(row.account_id, row.instrument)
        since = p.created_at.timestamp() - 120.0
        prices = series.points(since) if series is not None else []
        stop_series = self.history.stops.get(row.pid)
        stops = stop_series.points() if stop_series is not None else []
        if row.stop is not None and row.status is Status.OPEN and (not stops or stops[-1][1] != row.stop):
            self.history.add_stop(row.pid, time.time(), row.stop)
            stop_series = self.history.stops.get(row.pid)
            stops = stop_series.points() if stop_series is not None else stops
        if self._closed_at is not None:
            until = self._closed_at
        elif self._trigger is not None:
            until = self._trigger[0]
        else:
            until = time.time()
        if self._closed_at is not None:
            prices = [pt for pt in prices if pt[0] <= self._closed_at + 5.0]
        safety_series = self.history.safety.get(row.pid)
        safety = safety_series.points() if safety_series is not None else []
        safety_until = until if self._safety_until is None else min(until, self._safety_until)
        self.chart.plot(
            prices,
            stops,
            entry=row.entry,
            target=row.target_price(),
            trigger=self._trigger,
            until=until,
            safety=safety,
            safety_until=safety_until,
        )

    def _update_facts(self, row: PositionRow) -> None:
        c = self._colors
        side = "Long" if row.is_long else "Short"
        self.headline.setText(f"{row.symbol}  {side} {theme.group_indian(row.quantity)} {row.product.value}")
        self.rule_label.setText(describe_in_full(row.rule) + (" · paused" if row.paused else ""))
        self.rule_label.setToolTip(describe_in_full(row.rule))
        color = {
            RowState.NOT_WATCHED: c.failed,
            RowState.ARMED: c.armed,
            RowState.PAUSED: c.paused,
            RowState.PENDING: c.pending,
            RowState.IN_PROGRESS: c.progress,
            RowState.FAILED: c.failed,
            RowState.CLOSED: c.closed,
        }[row.state]
        if row.state is RowState.PAUSED and row.stop_crossed():
            color = c.progress  # resuming would exit at once: a warning, not a calm "paused"
        self.status_pill.setText(f" {row.status_text} ")
        self.status_pill.setStyleSheet(
            f"QLabel#statusPill {{ color: white; background: {color.name()}; border-radius: 4px; "
            "padding: 1px 6px; font-weight: bold; }"
        )
        tick = row.tick_size
        self.facts["Entry"].setText(theme.format_price(row.entry, tick))
        self.facts["LTP"].setText(theme.format_price(row.ltp, tick))
        self.facts["Stop"].setText(theme.format_price(row.stop, tick))
        self.facts["Safety"].setText(row.safety_text())
        self.facts["Safety"].setToolTip(row.safety_tooltip())
        self.facts["Target"].setText(theme.format_price(row.target_price(), tick))
        self.facts["To stop"].setText(theme.format_percent(row.distance_percent()))
        pnl = row.pnl()
        self.facts["P&L"].setText(theme.format_inr(pnl))
        pnl_color = c.profit if pnl and pnl > 0 else c.loss if pnl and pnl < 0 else None
        self.facts["P&L"].setStyleSheet(f"color: {pnl_color.name()};" if pnl_color is not None else "")

    def set_colors(self, colors: theme.Colors) -> None:
        self._colors = colors
        self.chart.set_colors(colors)
        self.journal_model.set_colors(colors)
        if self.pid is not None:
            self._redraw()

    def trigger_point(self) -> tuple[float, float] | None:
        return self._trigger
