"""Where tick-to-exit's milliseconds go: bench.tick_to_exit with a timestamp at every stage of each exit.

A bench-only probe: it wraps the app's classes from outside (nothing in the app's code path knows of it)
and takes ``time.perf_counter_ns()`` (CLOCK_MONOTONIC, the same clock in every process of the machine) at:

    push        the simulator sends the price through the stop (its ``pushed_at``)
    rx          the socket data carrying that tick reaches the feed thread's WebSocket (data_received)
    decode      the feed loop starts decoding that message
    fired       the engine fired: ProtectionService._on_triggers starts
    submitted   the exit job is handed to the pool (submit_gated returns)
    commit      TRIGGERED's transaction begins (store.transition_many / commit_transitions is called)
    opened      gate.open() on the feed thread: the commit (its fsync included) has returned
    job         the pool thread starts the job; sized / prepared: the book read and the order worked out
    passed      the pool thread is past gate.wait()
    placing     KiteBroker.place_order is called
    sent        the request's bytes are written to the socket (http.client send; a new TCP connect counted)
    received    the simulator's order handler has it (its ``received_at``)

Usage: ``python -m bench.tick_to_exit_stages`` prints bench.tick_to_exit's lines, then per phase (loopback,
latency with a positions read, latency from the book) the median / p90 / max of each step in ms.
"""

from __future__ import annotations

import functools
import http.client
import os
import statistics
import sys
import threading
import time
from collections import defaultdict
from typing import Any

import peewee

# The steps reported, each from one stage to the next (both must have been seen in the round).
STEPS = (
    ("push", "rx"),
    ("rx", "decode"),
    ("decode", "fired"),
    ("fired", "commit"),
    ("commit", "opened"),
    ("fired", "submitted"),
    ("submitted", "job"),
    ("job", "sized"),
    ("sized", "prepared"),
    ("opened", "passed"),
    ("passed", "placing"),
    ("placing", "sent"),
    ("sent", "received"),
    ("fired", "sent"),
    ("push", "received"),
)


class StageProbe:
    """The first time each stage is reached after ``begin()``, in perf_counter ns."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = False
        self.stages: dict[str, int] = {}
        self.rows: dict[str, list[dict[str, float]]] = defaultdict(list)
        self.connects: dict[str, int] = defaultdict(int)
        self.db_connects: dict[str, int] = defaultdict(int)  # new SQLite connections on the exit thread
        self.offset = 0  # time.time_ns() - perf_counter_ns()
        self.last_rx = 0
        self.message_rx = 0
        self.message_started = 0
        self.exit_thread = 0
        self.phase = ""
        self.flushing = 0  # flushes of stop moves under way (the store's flusher thread)
        self.behind_flush: dict[str, list[float]] = defaultdict(list)  # commit ms when a flush was under way

    def mark(self, stage: str, at: int | None = None) -> None:
        now = time.perf_counter_ns() if at is None else at
        if self.active and stage not in self.stages:
            self.stages[stage] = now

    def begin(self, phase: str) -> None:
        with self.lock:
            self.phase = phase
            self.stages = {}
            self.exit_thread = 0
            self.offset = time.time_ns() - time.perf_counter_ns()
            self.active = True

    def end(self, phase: str, pushed_at: float, received_at: float) -> None:
        self.active = False
        stages = dict(self.stages)
        stages["push"] = round(pushed_at * 1e9) - self.offset
        stages["received"] = round(received_at * 1e9) - self.offset
        row = {f"{a}>{b}": (stages[b] - stages[a]) / 1e6 for a, b in STEPS if a in stages and b in stages}
        self.rows[phase].append(row)
        if stages.get("behind_flush") and "commit>opened" in row:
            self.behind_flush[phase].append(row["commit>opened"])

    def report(self) -> None:
        for phase, rows in self.rows.items():
            print(f"stages, {phase} ({len(rows)} exits; ms median / p90 / max):", flush=True)
            for a, b in STEPS:
                values = sorted(r[f"{a}>{b}"] for r in rows if f"{a}>{b}" in r)
                if not values:
                    continue
                p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
                print(
                    f"  {a:>9} -> {b:<9} {statistics.median(values):7.2f} {p90:7.2f} {values[-1]:7.2f}"
                    f"  (n={len(values)})",
                    flush=True,
                )
            # The slowest exits step by step: a tail's cause shows in one step, which medians hide.
            slowest = sorted((r for r in rows if "push>received" in r), key=lambda r: -r["push>received"])[:3]
            for r in slowest:
                steps = ", ".join(f"{a}>{b} {r[f'{a}>{b}']:.2f}" for a, b in STEPS[:-2] if f"{a}>{b}" in r)
                print(f"  slow exit, {r['push>received']:.2f} ms: {steps}", flush=True)
            print(f"  new TCP connections from the exit thread: {self.connects[phase]}", flush=True)
            print(f"  new SQLite connections from the exit thread: {self.db_connects[phase]}", flush=True)
            behind = sorted(self.behind_flush[phase])
            if behind:
                print(
                    f"  commits begun during a flush: {len(behind)}, commit ms median "
                    f"{statistics.median(behind):.2f}, max {behind[-1]:.2f}",
                    flush=True,
                )


def _wrap(cls: type, name: str, before: Any = None, after: Any = None) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before(*args, **kwargs)
        result = original(*args, **kwargs)
        if after is not None:
            after(result, *args, **kwargs)
        return result

    setattr(cls, name, wrapper)


def install(probe: StageProbe) -> None:
    from websockets.asyncio.connection import Connection

    from trailstop_gui.models.store import ProtectionStore
    from trailstop_gui.services.brokers.feed_loop import FeedLoop
    from trailstop_gui.services.brokers.kite import KiteBroker
    from trailstop_gui.services.exit_jobs import ExitJobs, TriggerGate
    from trailstop_gui.services.protection_service import ProtectionService

    def on_rx(*_: Any) -> None:
        probe.last_rx = time.perf_counter_ns()

    def on_handle(*_: Any) -> None:
        probe.message_rx, probe.message_started = probe.last_rx, time.perf_counter_ns()

    def on_fired(*_: Any) -> None:
        if probe.active and "fired" not in probe.stages:
            probe.mark("rx", probe.message_rx)
            probe.mark("decode", probe.message_started)
            probe.mark("fired")

    def on_commit(*_: Any, **__: Any) -> None:
        if "fired" in probe.stages:
            probe.mark("commit")
            if probe.flushing and "behind_flush" not in probe.stages:
                probe.stages["behind_flush"] = 1

    def on_flush(*_: Any) -> None:
        probe.flushing += 1

    def flushed(*_: Any) -> None:
        probe.flushing -= 1

    def on_job(*_: Any) -> None:
        if "fired" in probe.stages and "job" not in probe.stages:
            probe.exit_thread = threading.get_ident()
            probe.mark("job")

    def in_exit_thread(stage: str) -> Any:
        def mark(*_: Any, **__: Any) -> None:
            if probe.exit_thread == threading.get_ident():
                probe.mark(stage)

        return mark

    def on_passed(result: bool, *_: Any, **__: Any) -> None:
        if result:
            in_exit_thread("passed")()

    _wrap(Connection, "data_received", before=on_rx)
    _wrap(FeedLoop, "_handle", before=on_handle)
    _wrap(ProtectionService, "_on_triggers", before=on_fired)
    _wrap(ExitJobs, "submit_gated", after=lambda *_: probe.mark("submitted"))
    _wrap(ProtectionStore, "transition_many", before=on_commit)
    if hasattr(ProtectionStore, "commit_transitions"):  # the tick path's commit on later versions
        _wrap(ProtectionStore, "commit_transitions", before=on_commit)
    original_flush = ProtectionStore.flush

    def flush(store: ProtectionStore) -> int:
        on_flush()
        try:
            return original_flush(store)
        finally:
            flushed()

    ProtectionStore.flush = flush  # type: ignore[method-assign,assignment]
    _wrap(TriggerGate, "open", before=lambda *_: probe.mark("opened"))
    _wrap(ExitJobs, "_run_task", before=on_job)
    _wrap(ExitJobs, "_exit_quantity", after=in_exit_thread("sized"))
    _wrap(ExitJobs, "_prepare", after=in_exit_thread("prepared"))
    _wrap(TriggerGate, "wait", after=on_passed)
    _wrap(KiteBroker, "place_order", before=in_exit_thread("placing"))
    _wrap(http.client.HTTPConnection, "send", before=in_exit_thread("sent"))

    def on_connect(*_: Any) -> None:
        if probe.active and probe.exit_thread == threading.get_ident():
            probe.connects[probe.phase] += 1

    _wrap(http.client.HTTPConnection, "connect", before=on_connect)

    def on_db_connect(*_: Any) -> None:
        # A pool thread's connection used to be opened anew for every job (db_base.kept_connection).
        if probe.active and probe.exit_thread == threading.get_ident():
            probe.db_connects[probe.phase] += 1

    _wrap(peewee.SqliteDatabase, "_connect", before=on_db_connect)


def main() -> None:
    from bench import tick_to_exit

    if os.environ.get("SWITCH_MS"):
        sys.setswitchinterval(float(os.environ["SWITCH_MS"]) / 1000)  # an experiment: see the README
    probe = StageProbe()
    install(probe)
    tick_to_exit.main(probe)


if __name__ == "__main__":
    main()
