"""Many stops on one tick while the broker is slow to fill: how long until every exit is at the broker?

Eight protections on one instrument fire on the same tick; the simulator (another process, as a broker
would be) fills each exit only after 3 s. Measured on the simulator's own clock: from the tick's
``pushed_at`` to the ``received_at`` of the last exit order. Beside it, in the same run, the baseline of
the executor before issue 13 item 7: each sending job waited for its own exit's fill, holding its pool
thread and (one exit job per position at a time) its position, so the eight exits of one position went
out one fill after another (the same executor with each send held until its watch ends).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests

from bench.tick_to_exit import start_sim

STOPS = 8
FILL_DELAY = 3.0
SYMBOL = "NSE:INFY"


def main() -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QCoreApplication

    from trailstop_gui.models.domain import Product, Side, Status, TrailRule
    from trailstop_gui.models.store import ProtectionStore
    from trailstop_gui.services.brokers.base import OrderRequest
    from trailstop_gui.services.brokers.kite import KiteBroker
    from trailstop_gui.services.exit_executor import ExitExecutor
    from trailstop_gui.services.protection_service import ProtectionService
    from trailstop_gui.services.secrets import SecretStore
    from trailstop_gui.services.session import AccountSession, Endpoints

    app = QCoreApplication.instance() or QCoreApplication([])
    proc, info = start_sim()
    folder = tempfile.TemporaryDirectory()
    http = requests.Session()

    def control(path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{info['http']}/_sim/{path}"
        r = http.post(url, json=body, timeout=5) if body is not None else http.get(url, timeout=5)
        r.raise_for_status()
        return r.json()

    def pump(until: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark step timed out")
            app.processEvents()
            time.sleep(0.005)

    def senders_wait_for_fills(executor: ExitExecutor) -> None:
        """The old shape: a sending thread keeps its exit until the fill is seen."""
        finished: dict[int, threading.Event] = {}
        hand_over, job_done = executor._hand_to_watcher, executor._job_done

        def hand_and_wait(p: Any, *args: Any, **kwargs: Any) -> bool:
            done = finished.setdefault(p.id, threading.Event())
            if hand_over(p, *args, **kwargs):
                done.wait(executor.policy.fill_timeout + 5)
            return True  # the watch already reported the job done

        def done_and_release(protection_id: int) -> None:
            job_done(protection_id)
            event = finished.pop(protection_id, None)
            if event is not None:
                event.set()

        executor._hand_to_watcher = hand_and_wait  # type: ignore[method-assign]
        executor._job_done = done_and_release  # type: ignore[method-assign]
        # Nor had that executor the twins' settling rule (a twin whose exit filled less than the positions
        # lag ago is waited for: positions.settling_exits), which came later with its own reason; with it,
        # each of these one-after-another exits would also wait out the lag, 5 s, after the last one's fill.
        executor.policy = replace(executor.policy, positions_lag=0.0)

    def burst(serial: bool) -> float:
        store = ProtectionStore(Path(folder.name) / f"burst-{serial}.db")
        kite = info["kite"]
        account = store.add_account(
            "kite", "bench", user_id=kite["user_id"], api_key=kite["api_key"], api_root=info["http"]
        )
        secrets = SecretStore()
        secrets.set(account.id, "api_secret", kite["api_secret"])
        session = AccountSession(account, secrets, Endpoints.for_simulator(info, "kite"))
        session.login_with_password(kite["user_id"], kite["password"])
        service = ProtectionService(store)
        if serial:
            senders_wait_for_fills(service.executor)
        service.add_session(session)
        service.start()
        feed = session.feed
        assert feed is not None
        try:
            control("fault", {"fault": "clear"})
            control("price", {"symbol": SYMBOL, "ltp": 1500.0, "bid": 1499.95, "ask": 1500.05})
            trader = KiteBroker(kite["api_key"], access_token=session.token(), root=info["http"])
            trader.place_order(
                OrderRequest(
                    symbol="INFY", exchange="NSE", side=Side.BUY, quantity=STOPS, product=Product.MIS
                )
            )
            pump(lambda: any(p.symbol == "INFY" and p.quantity >= STOPS for p in trader.positions()))
            position = next(p for p in trader.positions() if p.symbol == "INFY" and p.quantity > 0)
            pids = []
            for _ in range(STOPS):
                p = store.create_protection(
                    account_id=account.id,
                    broker="kite",
                    instrument=position.instrument,
                    symbol=position.symbol,
                    exchange=position.exchange,
                    side=Side.BUY,
                    product=Product.MIS,
                    quantity=1,
                    filled_quantity=1,
                    tick_size=0.05,
                    rule=TrailRule.percent(5.0),
                    entry_price=1500.0,
                    status=Status.OPEN,
                )
                pids.append(p.id)
            feed.arm(store.protections([Status.OPEN], account.id))
            pump(lambda: all(feed.engine.is_armed(str(pid)) for pid in pids))
            control("fault", {"fault": "fill_delay", "seconds": FILL_DELAY})
            tags = {store.get(pid).exit_tag for pid in pids}
            pushed_at = control("price", {"symbol": SYMBOL, "ltp": 1400.0, "bid": 1399.95, "ask": 1400.05})[
                "pushed_at"
            ]
            pump(lambda: len([o for o in control("orders") if o.get("tag") in tags]) == STOPS)
            received = [float(o["received_at"]) for o in control("orders") if o.get("tag") in tags]
            pump(lambda: all(store.get(pid).status is Status.CLOSED for pid in pids), timeout=60)
            return (max(received) - float(pushed_at)) * 1000
        finally:
            service.shutdown()
            store.close()

    try:
        fast = burst(serial=False)
        control("reset", {})
        slow = burst(serial=True)
        print(
            f"exit burst: {STOPS} stops on one tick, fills after {FILL_DELAY:.0f} s: all exits at the broker "
            f"within {fast:.0f} ms (senders that wait for fills, 4 threads: {slow:.0f} ms)",
            flush=True,
        )
    finally:
        proc.terminate()
        proc.wait(10)
        folder.cleanup()
    # As in bench.tick_to_exit: leave without PySide6's teardown once the figure is printed.
    os._exit(0)


if __name__ == "__main__":
    main()
