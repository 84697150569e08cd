"""FeedWorker: one QThread per account running an asyncio loop with that account's feed and engine.

The tick path stays in this thread from socket to exit decision: decode -> engine -> store (write-behind for
stop moves, a committed transition for a trigger) -> the exit callback. The GUI only ever receives
coalesced snapshots, at most ``snapshot_hz`` times a second, through queued signals.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from PySide6.QtCore import QThread, Signal

from trailstop_gui.models.domain import InstrumentId, Protection, Status, Tick
from trailstop_gui.models.engine import StopMoved, StopTriggered, TrailingEngine
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.services.brokers.feed_loop import (
    Backoff,
    Depth,
    FeedBatch,
    FeedLoop,
    FeedProtocol,
    FeedState,
    OrderUpdate,
)

log = logging.getLogger("trailstop.feed")


@dataclass(frozen=True, slots=True)
class Quote:
    """The latest prices of one instrument, as the GUI shows them."""

    instrument: InstrumentId
    ltp: float
    bid: float | None
    ask: float | None
    at: float


def _as_it_is(p: Protection) -> Protection:
    return p


# The feed thread calls this for a fired stop; it must record TRIGGERED durably and hand over the exit.
TriggerHandler = Callable[[int, StopTriggered], None]
# Or, when given, this once per tick with every stop that tick fired: one commit for all of them.
TriggersHandler = Callable[[list[tuple[int, StopTriggered]]], None]


class FeedWorker(QThread):
    """Runs an account's feed and engine. Public methods may be called from any thread."""

    state_changed = Signal(str, str)  # FeedState value, why
    reconnected = Signal()  # after every reconnect (not the first connect): reconcile now
    connected = Signal(bool)  # True when it was a reconnect
    snapshot_ready = Signal(object)  # {"quotes": {instrument: Quote}, "stops": {protection id: stop}}
    order_updated = Signal(object)  # OrderUpdate
    stop_moved = Signal(int, float, float)  # protection id, old, new (coalesced like snapshots)
    ticks_seen = Signal(int)  # total ticks processed, with each snapshot

    def __init__(
        self,
        protocol: FeedProtocol,
        store: ProtectionStore,
        on_trigger: TriggerHandler,
        *,
        on_order_update: Callable[[OrderUpdate], None] | None = None,
        on_triggers: TriggersHandler | None = None,
        on_tick: Callable[[Tick], object] | None = None,
        order_protocol: FeedProtocol | None = None,
        watchdog: float = 5.0,
        backoff: Backoff | None = None,
        snapshot_hz: float = 10.0,
        name: str = "feed",
    ) -> None:
        super().__init__()
        self.setObjectName(name)
        _WORKERS.add(self)
        self.store = store
        self.engine = TrailingEngine()
        self._on_trigger = on_trigger
        self._on_triggers = on_triggers
        self._on_order_update = on_order_update
        self._tick_listener = on_tick  # a paper broker fills its resting orders on the live ticks
        self._snapshot_interval = 1.0 / snapshot_hz
        self._protections: dict[int, Protection] = {}
        # What the engine watches for a protection: itself, or (a stop on the underlying) the same protection
        # seen on another instrument's prices (ProtectionService.engine_view). Applied to every arm.
        self.engine_view: Callable[[Protection], Protection] = _as_it_is
        # What is armed, readable from any thread (replaced, never changed in place): the reconciler's check.
        self._armed_ids: frozenset[int] = frozenset()
        # Arms asked for and not yet done by the feed thread (id -> how many): they count as armed, or a
        # reconcile looking right after an adoption arms it a second time from a staler snapshot.
        self._arming: dict[int, int] = {}
        self._arming_lock = threading.Lock()
        # Paused protections: their prices keep coming (the trader sees where the market is) but the
        # engine does not hold them, so nothing trails or fires.
        self._watched: dict[int, Protection] = {}
        # Instruments whose prices someone needs though no protection is watched on them here (a basket's
        # member armed on its underlying: the basket's MTM needs the option's own price), per who asked.
        self._watched_instruments: dict[str, frozenset[InstrumentId]] = {}
        # An armed protection watched on another instrument (a stop on the underlying) -> its own instrument:
        # its row's price and P&L (and a basket's MTM) are the option's, so that stays subscribed too.
        self._own_instruments: dict[int, InstrumentId] = {}
        self._quotes: dict[InstrumentId, Quote] = {}
        self._dirty_quotes: set[InstrumentId] = set()
        self._dirty_stops: dict[int, tuple[float, float]] = {}
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self.ticks = 0
        # Who hears whether the order-update stream is up (the account's position book), and its guard.
        self._order_stream_listener: Callable[[bool], None] | None = None
        self._order_stream_lock = threading.Lock()
        self.loop = FeedLoop(
            protocol,
            on_batch=self._on_batch,
            on_state=self._on_feed_state if order_protocol is None else self._on_price_feed_state,
            on_connected=self._on_connected,
            watchdog=watchdog,
            backoff=backoff,
        )
        # A broker whose order updates come on a stream of their own (Upstox's portfolio feed) gets a second
        # loop in this thread; its updates take the same path as those of a combined feed (Kite's ticker).
        self.order_loop = (
            FeedLoop(
                order_protocol,
                on_batch=self._on_batch,
                on_state=lambda state, _why: self._order_stream_state(state),
                watchdog=watchdog,
                backoff=Backoff(),
            )
            if order_protocol is not None
            else None
        )

    # ----------------------------------------------------------------- any thread

    def listen_order_stream(self, listener: Callable[[bool], None]) -> None:
        """Tell ``listener`` now and at every change whether the stream carrying order updates is up."""
        with self._order_stream_lock:
            self._order_stream_listener = listener
            carrier = self.order_loop or self.loop
            listener(carrier.state is FeedState.LIVE)

    def _order_stream_state(self, state: FeedState) -> None:
        with self._order_stream_lock:
            if self._order_stream_listener is not None:
                self._order_stream_listener(state is FeedState.LIVE)

    def _on_price_feed_state(self, state: FeedState, why: str) -> None:
        self.state_changed.emit(state.value, why)

    def _on_feed_state(self, state: FeedState, why: str) -> None:
        """The one stream carries prices and order updates (Kite's ticker)."""
        self._order_stream_state(state)
        self.state_changed.emit(state.value, why)

    def arm(self, protections: Iterable[Protection]) -> None:
        """Arm (or re-arm) protections in the engine and subscribe to their instruments."""
        items = list(protections)
        with self._arming_lock:
            for p in items:
                self._arming[p.id] = self._arming.get(p.id, 0) + 1
        self._call(lambda: self._arm(items))

    def disarm(self, protection_id: int) -> None:
        self._call(lambda: self._disarm(protection_id))

    def armed_ids(self) -> frozenset[int]:
        """The protections armed in the engine and subscribed to, as of the feed thread's last change, and
        those whose arm is on its way to it (chaos seed 31031: a reconcile 40 ms after an adoption found
        the adopted one "OPEN but not armed", its arm still queued, and armed it again)."""
        with self._arming_lock:
            return self._armed_ids | self._arming.keys()

    def watch(self, protections: Iterable[Protection]) -> None:
        """Keep the prices of (paused) protections coming without arming them."""
        items = list(protections)
        self._call(lambda: self._watch(items))

    def watch_instruments(self, instruments: Iterable[InstrumentId], owner: str = "baskets") -> None:
        """Keep these instruments' prices coming (quotes only, nothing armed); replaces what ``owner`` asked
        for before (an empty set lets them go)."""
        wanted = frozenset(instruments)
        self._call(lambda: self._watch_instruments(owner, wanted))

    def latest_quote(self, instrument: InstrumentId) -> Quote | None:
        return self._quotes.get(instrument)

    def stop_feed(self, timeout_ms: int = 5000, *, abort: bool = False) -> None:
        """Close the socket(s), end the thread and wait for it; ``abort``: drop the sockets (at exit)."""
        self.loop.stop(abort=abort)
        if self.order_loop is not None:
            self.order_loop.stop(abort=abort)
        aloop = self._aloop
        if aloop is not None:
            # Wake the thread's loop: a stop asked before the feed loop ran is only a flag it reads.
            aloop.call_soon_threadsafe(lambda: None)
        if not self._wait_finished(timeout_ms / 1000):
            # A blocking call inside the loop (a REST timeout) can outlast the wait: the thread ends by
            # itself soon after, and _stop_workers_left_running waits for it before the process exits.
            log.warning("%s: still stopping after %d ms", self.objectName(), timeout_ms)

    def _wait_finished(self, timeout: float) -> bool:
        """QThread.wait, with the GIL free meanwhile: PySide's wait keeps holding it, and the feed thread
        needs it to finish. Seen at interpreter exit: the feed thread, its first step still queued, sat in
        select waiting for the GIL while the main thread waited for it for 15 s; Qt then aborted the
        process ("QThread: Destroyed while thread is still running")."""
        deadline = time.monotonic() + timeout
        while not self.wait(0):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def wait_ready(self, timeout: float = 5.0) -> bool:
        return self._ready.wait(timeout)

    def _call(self, fn: Callable[[], None]) -> None:
        loop = self._aloop
        if loop is None:
            fn()  # not started yet: nothing else touches the engine
        else:
            loop.call_soon_threadsafe(fn)

    # ----------------------------------------------------------------- feed thread

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._aloop = loop
        self._ready.set()
        try:
            loop.run_until_complete(self._main())
        except Exception:
            log.exception("%s: feed thread failed", self.objectName())
        finally:
            self._aloop = None
            loop.close()
            self.store.flush()

    async def _main(self) -> None:
        publisher = asyncio.ensure_future(self._publish_snapshots())
        orders = asyncio.ensure_future(self.order_loop.run()) if self.order_loop is not None else None
        try:
            await self.loop.run()
        finally:
            if orders is not None and self.order_loop is not None:
                self.order_loop.stop()
                await asyncio.wait({orders}, timeout=5)
            publisher.cancel()
            self._publish()

    def _on_connected(self, reconnect: bool) -> None:
        self.connected.emit(reconnect)
        if reconnect:
            self.reconnected.emit()

    def _arm(self, protections: list[Protection]) -> None:
        try:
            for stored in protections:
                if not self._still_open(stored.id):
                    continue
                try:
                    p = self.engine_view(stored)
                except Exception as exc:
                    log.error("protection %s: cannot be armed: %s", stored.id, exc)
                    continue
                if p.entry_price is None:
                    continue
                try:
                    self.engine.arm_protection(self._no_looser_than_armed(p))
                except Exception as exc:
                    # One bad protection (a stored stop <= 0) must not leave the rest of the batch unarmed.
                    log.error("protection %s: cannot be armed: %s", p.id, exc)
                    continue
                self._protections[p.id] = p
                self._watched.pop(p.id, None)
                if p.engine_instrument != stored.engine_instrument:
                    self._own_instruments[p.id] = stored.engine_instrument
                else:
                    self._own_instruments.pop(p.id, None)
        finally:
            self._resubscribe()
            with self._arming_lock:
                for stored in protections:
                    left = self._arming.get(stored.id, 0) - 1
                    if left > 0:
                        self._arming[stored.id] = left
                    else:
                        self._arming.pop(stored.id, None)

    def _no_looser_than_armed(self, p: Protection) -> Protection:
        """A re-arm from a snapshot read before the engine trailed on (the write-behind store lags it by up
        to a flush) must not take the stop back: it keeps the engine's stop and peak where they are better."""
        key, armed = str(p.id), self._protections.get(p.id)
        if p.stop is None or armed is None or not self.engine.is_armed(key):
            return p
        if (armed.engine_instrument, armed.side) != (p.engine_instrument, p.side):
            return p  # another view of it (a stop on the underlying): its prices are not comparable
        armed_stop, armed_peak = self.engine.stop(key), self.engine.peak(key)
        better = max if p.side.is_long else min
        peak = None if p.peak is None else better(p.peak, armed_peak)
        return p.with_changes(stop=better(p.stop, armed_stop), peak=peak)

    def _still_open(self, protection_id: int) -> bool:
        """An arm asked for on another thread can arrive after the stop fired (or an exit started): this
        thread commits its own triggers, so the store tells. Armed again, it would fire a second time."""
        try:
            status = self.store.get(protection_id).status
        except KeyError:
            return False
        except Exception as exc:
            # Unread, it is armed as asked: a second fire is refused by the trigger's compare-and-set,
            # a protection left unwatched is not.
            log.warning("protection %s: its state could not be read (%s); armed as asked", protection_id, exc)
            return True
        if status is not Status.OPEN:
            log.info("protection %s: not armed: it is %s now", protection_id, status.value)
            return False
        return True

    def _watch(self, protections: list[Protection]) -> None:
        for p in protections:
            self.engine.disarm(str(p.id))
            self._protections.pop(p.id, None)
            self._own_instruments.pop(p.id, None)
            self._watched[p.id] = p
        self._resubscribe()

    def _watch_instruments(self, owner: str, instruments: frozenset[InstrumentId]) -> None:
        if instruments != self._watched_instruments.get(owner, frozenset()):  # asked every second: no churn
            if instruments:
                self._watched_instruments[owner] = instruments
            else:
                self._watched_instruments.pop(owner, None)
            self._resubscribe()

    def _disarm(self, protection_id: int) -> None:
        self.engine.disarm(str(protection_id))
        self._protections.pop(protection_id, None)
        self._own_instruments.pop(protection_id, None)
        self._watched.pop(protection_id, None)
        self._resubscribe()

    def _rearm_after_failed_trigger(self, protection_id: int) -> None:
        """The trigger could not be committed: the protection is still OPEN, so it is watched again."""
        try:
            p = self.store.get(protection_id)
        except Exception:
            log.exception("protection %s: cannot be read to arm it again; the reconciler will", protection_id)
            return
        if p.status is Status.OPEN and not p.paused:
            log.warning("protection %s: armed again after its trigger failed", protection_id)
            self._arm([p])

    def _resubscribe(self) -> None:
        self._armed_ids = frozenset(self._protections)
        wanted: dict[InstrumentId, Depth] = {}
        for p in [*self._protections.values(), *self._watched.values()]:
            depth = Depth.DEPTH if p.product.trails_on_quote else Depth.LTP
            if wanted.get(p.engine_instrument) is not Depth.DEPTH:
                wanted[p.engine_instrument] = depth
        for pid in [pid for pid in self._own_instruments if pid not in self._protections]:
            del self._own_instruments[pid]  # fired since: let go at this change
        for instrument in self._own_instruments.values():
            wanted.setdefault(instrument, Depth.LTP)
        for instruments in self._watched_instruments.values():
            for instrument in instruments:
                wanted.setdefault(instrument, Depth.LTP)
        self.loop.set_instruments(wanted)

    def _on_batch(self, batch: FeedBatch) -> None:
        for tick in batch.ticks:
            self._on_tick(tick)
        for update in batch.orders:
            if self._on_order_update is not None:
                self._on_order_update(update)
            self.order_updated.emit(update)

    def _on_tick(self, tick: Tick) -> None:
        self.ticks += 1
        self._quotes[tick.instrument] = Quote(tick.instrument, tick.ltp, tick.bid, tick.ask, time.time())
        self._dirty_quotes.add(tick.instrument)
        if self._tick_listener is not None:
            try:
                self._tick_listener(tick)
            except Exception:
                log.exception("tick listener failed")
        fired: list[tuple[int, StopTriggered]] = []
        for event in self.engine.on_tick(tick):
            pid = int(event.key)
            if isinstance(event, StopTriggered):
                # Still counted in armed_ids (the reconciler's "OPEN but not armed" look) until its handler
                # has committed TRIGGERED: in between it is OPEN in the store and gone from the engine, and a
                # reconcile looking then armed it again (chaos seed 31001: re-armed mid-commit, it fired a
                # second time after its exit had closed it).
                self._protections.pop(pid, None)
                if self._on_triggers is not None:
                    fired.append((pid, event))
                    continue
                try:
                    self._on_trigger(pid, event)
                except Exception:
                    # The trigger handler persists and submits; a failure there must not kill the feed, nor
                    # leave the protection OPEN and unwatched (the engine already let go of it).
                    log.exception("protection %s: handling the trigger failed", pid)
                    self._rearm_after_failed_trigger(pid)
                self._armed_ids = frozenset(self._protections)
            elif isinstance(event, StopMoved):
                self.store.record_stop(pid, event.new, self.engine.peak(event.key))
                first_old = self._dirty_stops.get(pid, (event.old, event.new))[0]
                self._dirty_stops[pid] = (first_old, event.new)
        if fired and self._on_triggers is not None:
            try:
                self._on_triggers(fired)
            except Exception:
                # As for one trigger: the feed goes on, and what is still OPEN is watched again.
                log.exception("protections %s: handling the triggers failed", [pid for pid, _ in fired])
                for pid, _event in fired:
                    self._rearm_after_failed_trigger(pid)
            self._armed_ids = frozenset(self._protections)

    async def _publish_snapshots(self) -> None:
        while True:
            await asyncio.sleep(self._snapshot_interval)
            self._publish()

    def _publish(self) -> None:
        if not self._dirty_quotes and not self._dirty_stops:
            return
        quotes = {i: self._quotes[i] for i in self._dirty_quotes}
        stops = {pid: new for pid, (_, new) in self._dirty_stops.items()}
        for pid, (old, new) in self._dirty_stops.items():
            self.stop_moved.emit(pid, old, new)
        self._dirty_quotes = set()
        self._dirty_stops = {}
        self.snapshot_ready.emit({"quotes": quotes, "stops": stops})
        self.ticks_seen.emit(self.ticks)


__all__ = ["FeedState", "FeedWorker", "Quote"]


# Every FeedWorker made in this process. Qt aborts the process when a QThread object is destroyed while its
# thread still runs, as happens at interpreter exit to a feed whose stop outlasted its wait (or that was
# never stopped): so before the interpreter tears down, each one still running is stopped and waited for.
_WORKERS: weakref.WeakSet[FeedWorker] = weakref.WeakSet()


@atexit.register
def _stop_workers_left_running(timeout_ms: int = 15_000) -> None:
    for worker in list(_WORKERS):
        if worker.isRunning():
            worker.stop_feed(timeout_ms, abort=True)
