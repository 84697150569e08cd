"""Screenshots for the README: `python tools/screenshots.py [OUT_DIR] [--order-entry [--dark]]`.

Starts its own Xvfb (1400x900) unless `--display` is given (then it draws on the current display), runs
the window against an in-process simulator with a few live protections whose prices move for real (the
stops trail, one fires and closes, one is paused, one broker position is left unprotected), and writes:

  first-run.png            the window with no account yet
  main-window.png          live positions with the total P&L line, the selected one's chart and journal
  main-window-dark.png     the same in the dark scheme
  order-entry-preview.png  the order form: a limit far from the market, flagged beside the price
  paused.png               a paused protection: its price stays live, "Paused: stop crossed"
  detail-rule.png          the detail pane with the whole rule (activation, breakeven, target)
  journal.png              the journal window, with realised P&L on the closing rows
  not-watched.png          the account needs a login: every armed row red, "Not watched", in the status bar
  order-entry-attach.png   the order form attaching a basket, a timed exit and a stop on NIFTY 50 to a call
  basket.png               the Baskets dock: a basket's MTM charted with its trailing lock, exited at the lock

OUT_DIR defaults to docs/screenshots. Takes about a minute: the prices move in real time.

`--order-entry` shoots the order form and the settings dialog instead, each state on its own (in the dark
scheme with `--dark`), into OUT_DIR (default /tmp/trailstop-shots): order_entry_empty.png,
order_entry_completion.png, order_entry_preview.png, order_entry_sell_options.png, order_entry_errors.png,
order_entry_confirm.png, settings_dialog.png, settings_dialog_errors.png.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "screenshots"
ORDER_ENTRY_OUT = Path(tempfile.gettempdir()) / "trailstop-shots"
SCREEN = (1400, 900)
WALK_STEPS = 400
WALK_INTERVAL_MS = 100

# symbol, side, product, quantity, rule, (drift per step, noise per step), role
BOOK: list[tuple[str, str, str, int, tuple[str, float, dict[str, float]], tuple[float, float], str]] = [
    ("NSE:INFY", "BUY", "MIS", 25, ("percent", 1.0, {}), (0.00022, 0.0007), "selected"),
    ("NSE:TCS", "SELL", "MIS", 10, ("points", 15.0, {}), (-0.00012, 0.0004), ""),
    (
        "NSE:SBIN",
        "BUY",
        "CNC",
        100,
        ("percent", 2.0, {"activation": 0.5, "breakeven": 1.0, "target": 8.0}),
        (0.0001, 0.0005),
        "rule",
    ),
    ("NSE:HDFCBANK", "BUY", "CNC", 30, ("percent", 1.5, {}), (0.00005, 0.0004), "paused"),
    ("NSE:ICICIBANK", "SELL", "MIS", 40, ("percent", 0.8, {}), (-0.00006, 0.0003), ""),
    ("NSE:RELIANCE", "BUY", "MIS", 50, ("percent", 0.5, {}), (0.0, 0.0003), "stopped"),
]
UNPROTECTED = ("NSE:ITC", 100)


# ----------------------------------------------------------------- outer: a private X server


def free_display() -> int:
    for n in range(99, 160):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise RuntimeError("no free X display number between :99 and :159")


def run_under_xvfb(out: Path, flags: list[str]) -> int:
    n = free_display()
    xvfb = subprocess.Popen(
        ["Xvfb", f":{n}", "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{n}").exists():
            if xvfb.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Xvfb did not start")
            time.sleep(0.05)
        env = dict(os.environ, DISPLAY=f":{n}", QT_QPA_PLATFORM="xcb", PYTHONPATH=str(ROOT))
        command = [sys.executable, __file__, "--display", *flags, str(out)]
        return subprocess.call(command, env=env, cwd=ROOT)
    finally:
        xvfb.terminate()
        try:
            xvfb.wait(5)
        except subprocess.TimeoutExpired:
            xvfb.kill()


# ----------------------------------------------------------------- inner: the window, for real


def settle(seconds: float = 0.4) -> None:
    """Let Qt draw (and the simulator's ticks arrive) for ``seconds``."""
    from PySide6.QtCore import QCoreApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QCoreApplication.processEvents()
        time.sleep(0.01)


def wait(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    from PySide6.QtCore import QCoreApplication

    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        QCoreApplication.processEvents()
        time.sleep(0.02)


def save(widget: Any, path: Path) -> None:
    widget.grab().save(str(path))
    print(path)


def simulator_session(sim: Any, store: Any) -> tuple[Any, Any]:
    """The simulator's kite demo user as a new account of ``store``, logged in through the real login
    form; returns the account and its session."""
    from trailstop_gui.services.secrets import SecretStore
    from trailstop_gui.services.session import AccountSession, Endpoints

    section = sim.info["kite"]
    account = store.add_account(
        "kite",
        "Zerodha (simulator)",
        user_id=section["user_id"],
        api_key=section["api_key"],
        redirect_url=section["redirect_url"],
        api_root=sim.url,
    )
    secrets = SecretStore()
    secrets.set(account.id, "api_secret", section["api_secret"])
    session = AccountSession(account, secrets, Endpoints.for_simulator(sim.info, "kite"))
    session.login_with_password(section["user_id"], section["password"])
    return account, session


def shoot(out: Path) -> None:
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("TrailStop")
    from trailstop_gui.models.domain import Product, RuleKind, Side, Status, TrailRule
    from trailstop_gui.models.store import ProtectionStore
    from trailstop_gui.services.brokers.base import OrderRequest, OrderType
    from trailstop_gui.services.notifier import Notifier
    from trailstop_gui.services.protection_service import EntryRequest, ProtectionService
    from trailstop_gui.settings import load_settings
    from trailstop_gui.simulator.runner import start_simulator
    from trailstop_gui.views import theme
    from trailstop_gui.views.main_window import MainWindow
    from trailstop_gui.views.tray import TrayController

    theme.apply_theme(app, "light")
    app.setWindowIcon(theme.app_icon())
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="trailstop-shots-"))

    def window_for(service: ProtectionService, store: ProtectionStore, notifier: Notifier) -> MainWindow:
        w = MainWindow(
            service,
            store,
            notifier,
            str(tmp),
            settings=QSettings(str(tmp / "ui.ini"), QSettings.Format.IniFormat),
            tray=TrayController(notifier, available=False),
        )
        w.move(0, 0)
        w.resize(*SCREEN)
        return w

    # First run: no account, nothing protected.
    first_store = ProtectionStore(tmp / "first.db")
    first_notifier = Notifier()
    first = window_for(ProtectionService(first_store, first_notifier), first_store, first_notifier)
    first.show()
    settle(0.8)
    save(first, out / "first-run.png")
    first.prepare_quit()
    first.stop()
    first.hide()
    first_store.close()

    # A live session against the simulator.
    sim = start_simulator(seed=7, auto=False, fill_delay=0.0)
    store = ProtectionStore(tmp / "live.db")
    account, session = simulator_session(sim, store)
    notifier = Notifier()
    service = ProtectionService(store, notifier)
    service.add_session(session)
    window = window_for(service, store, notifier)
    panel = order_panel(service, store, load_settings(store))
    if panel is not None:
        window.set_order_entry(panel)
    service.start()
    window.show()
    wait(lambda: window.account_bar.state(account.id) == "live", "the feed to be live")
    if panel is not None:
        panel.instruments.ensure(session)  # the instrument master, as the app loads it after a login
        panel.refresh_accounts()

    instruments = {i.symbol: i for i in sim.sim.instruments}  # read-only: immutable records
    rng = random.Random(11)
    prices: dict[str, float] = {}

    def set_price(symbol: str, ltp: float) -> None:
        tick = instruments[symbol].tick_size
        ltp = round(round(ltp / tick) * tick, 2)
        prices[symbol] = ltp
        sim.set_price(symbol, ltp, bid=round(ltp - tick, 2), ask=round(ltp + tick, 2))

    pids: dict[str, int] = {}
    for symbol, side, product, quantity, (kind, value, options), _walk, _role in BOOK:
        inst = instruments[symbol]
        set_price(symbol, inst.base_price)
        p = service.place_entry(
            EntryRequest(
                account_id=account.id,
                instrument=inst.kite_token,
                symbol=inst.tradingsymbol,
                exchange=inst.exchange,
                side=Side(side),
                quantity=quantity,
                product=Product(product),
                tick_size=inst.tick_size,
                rule=TrailRule(RuleKind(kind), value, **options),
            )
        )
        pids[symbol] = p.id
    wait(lambda: all(store.get(pid).status is Status.OPEN for pid in pids.values()), "the entries to fill")
    itc = instruments[UNPROTECTED[0]]
    set_price(itc.symbol, itc.base_price)
    session.broker.place_order(
        OrderRequest(
            symbol=itc.tradingsymbol,
            exchange=itc.exchange,
            instrument=itc.kite_token,
            side=Side.BUY,
            quantity=UNPROTECTED[1],
            product=Product.CNC,
            order_type=OrderType.MARKET,
        )
    )
    for symbol, *_rest, role in BOOK:
        if role == "paused":
            service.pause(pids[symbol])
    window.positions.select_pid(pids[BOOK[0][0]])

    steps = [0]

    def walk() -> None:
        steps[0] += 1
        for symbol, _side, _product, _qty, _rule, (drift, noise), role in BOOK:
            if role == "stopped" and steps[0] > WALK_STEPS * 0.55:
                drift = -0.0004  # a slide that takes out a tight stop
            set_price(symbol, prices[symbol] * (1 + rng.gauss(drift, noise)))
        set_price(itc.symbol, prices[itc.symbol] * (1 + rng.gauss(0.00005, 0.0004)))

    timer = QTimer()
    timer.timeout.connect(walk)
    timer.start(WALK_INTERVAL_MS)
    wait(
        lambda: steps[0] >= WALK_STEPS,
        "the prices to move",
        timeout=WALK_STEPS * WALK_INTERVAL_MS / 1000 + 30,
    )
    timer.stop()
    window.positions.fetch_unprotected_now()
    wait(lambda: window.positions.unprotected_model.rowCount() > 0, "the unprotected position")
    stopped = [pids[s] for s, *_r, role in BOOK if role == "stopped"]
    wait(lambda: all(store.get(pid).status is Status.CLOSED for pid in stopped), "the stop to fire", 10)
    window.statusBar().clearMessage()
    window.banner.hide()  # the no-tray alert banner (Xvfb has no tray): dismissed, as a trader would
    window.detail.refresh_now()
    settle(1.0)
    save(window, out / "main-window.png")

    if panel is not None:
        # A limit typed far from the market is flagged beside the price (and always confirmed).
        wait(lambda: panel.instruments.resolve(panel.master(), "NSE:HDFCBANK") is not None, "the instruments")
        panel.instrument.setText("NSE:HDFCBANK")
        panel.instrument.editingFinished.emit()
        panel.order_type.setCurrentIndex(panel.order_type.findData(OrderType.LIMIT.value))
        wait(lambda: panel.price.value() > 0, "the limit to start from the last price")
        panel.price.setValue(round(panel.price.value() * 0.47, 1))
        panel.quantity.setValue(10)
        settle(0.4)
        save(panel, out / "order-entry-preview.png")
        panel.clear()

    # Paused: the price stays live; through the stop, resuming would exit at once.
    paused = next(pids[s] for s, *_r, role in BOOK if role == "paused")
    paused_stop = store.get(paused).stop or 0.0
    paused_symbol = next(s for s, *_r, role in BOOK if role == "paused")
    set_price(paused_symbol, paused_stop * 0.995)
    wait(lambda: (window.model.row_for(paused) or window.model.rows()[0]).stop_crossed(), "the paused price")
    window.positions.select_pid(paused)
    window.detail.refresh_now()
    settle(0.8)
    save(window, out / "paused.png")

    ruled = next(pids[s] for s, *_r, role in BOOK if role == "rule")
    window.positions.select_pid(ruled)
    window.detail.refresh_now()
    settle(0.8)
    save(window.detail, out / "detail-rule.png")
    window.positions.select_pid(pids[BOOK[0][0]])

    theme.apply_theme(app, "dark")
    settle(0.6)
    window.detail.refresh_now()
    settle(0.4)
    save(window, out / "main-window-dark.png")
    theme.apply_theme(app, "light")
    settle(0.4)

    journal = window.open_journal()
    journal.move(0, 0)
    journal.resize(1200, 640)
    settle(0.8)
    save(journal, out / "journal.png")
    journal.hide()

    # The token expires: nothing watches the protections any more, and the window says so in red.
    session.mark_login_needed("the access token expired")
    wait(lambda: window.account_bar.state(account.id) == "login needed", "login needed")
    window.banner.hide()
    window.detail.refresh_now()
    settle(0.8)
    save(window, out / "not-watched.png")

    window.prepare_quit()
    window.stop()
    window.hide()
    service.shutdown()
    store.close()
    sim.stop()

    shoot_baskets(tmp, out, window_for)


def shoot_baskets(tmp: Path, out: Path, window_for: Callable[..., Any]) -> None:
    """A long INFY and a short TCS in one basket (max loss ₹3,000; at ₹1,500 lock ₹600; every ₹300 more
    raise the lock ₹150): the order form attaching rules to a NIFTY call, then the prices walk up, the lock
    trails, and they fall back to it: the basket exits both."""
    from trailstop_gui.models.basket import BasketRules
    from trailstop_gui.models.basket_store import BasketStatus
    from trailstop_gui.models.domain import Product, Side, Status, TrailRule
    from trailstop_gui.models.store import ProtectionStore
    from trailstop_gui.services.baskets import BasketService
    from trailstop_gui.services.instruments import InstrumentService
    from trailstop_gui.services.notifier import Notifier
    from trailstop_gui.services.protection_service import EntryRequest, ProtectionService
    from trailstop_gui.services.square_off import SquareOffService
    from trailstop_gui.services.underlying import UnderlyingService
    from trailstop_gui.settings import load_settings
    from trailstop_gui.simulator.runner import start_simulator
    from trailstop_gui.views.basket_panel import add_basket_dock
    from trailstop_gui.views.order_entry import OrderEntryPanel

    sim = start_simulator(seed=4, auto=False, fill_delay=0.0)
    store = ProtectionStore(tmp / "baskets.db")
    account, session = simulator_session(sim, store)
    notifier = Notifier()
    service = ProtectionService(store, notifier)
    service.add_session(session)
    baskets = BasketService(service, step_seconds=0.02, refresh_seconds=0.2)
    square_off = SquareOffService(service)
    underlying = UnderlyingService(service)
    window = window_for(service, store, notifier)
    instruments = InstrumentService(store)
    panel = OrderEntryPanel(
        service,
        store,
        load_settings(store),
        instruments,
        baskets=baskets,
        square_off=square_off,
        underlying=underlying,
    )
    window.set_order_entry(panel)
    dock_panel = add_basket_dock(window, baskets, square_off, underlying)
    service.start()
    baskets.start()
    window.show()
    wait(lambda: window.account_bar.state(account.id) == "live", "the feed to be live")
    instruments.ensure(session)
    panel.refresh_accounts()

    prices = {"NSE:INFY": 1500.0, "NSE:TCS": 3000.0}
    for symbol, price in prices.items():
        sim.set_price(symbol, price, bid=price - 0.05, ask=price + 0.05)
    members = []
    for symbol, side in (("NSE:INFY", Side.BUY), ("NSE:TCS", Side.SELL)):
        inst = next(i for i in sim.sim.instruments if i.symbol == symbol)
        p = service.place_entry(
            EntryRequest(
                account.id,
                inst.kite_token,
                inst.tradingsymbol,
                "NSE",
                side,
                40,
                Product.MIS,
                0.05,
                TrailRule.percent(5.0),
            )
        )
        wait(lambda pid=p.id: store.get(pid).status is Status.OPEN, f"{symbol} to fill")
        members.append(p.id)
    rules = BasketRules(max_loss=3000, lock_at=1500, lock_profit=600, trail_every=300, trail_by=150)
    basket = baskets.create(account.id, "INFY long / TCS short", rules, members)
    dock = dock_panel.parentWidget()
    # Floated (as a trader can), so that the chart gets the height the docked one shares with the window.
    dock.setFloating(True)
    dock.move(0, 0)
    dock.resize(1100, 560)
    dock_panel.table.selectRow(0)

    # The order form: a NIFTY call joining the basket, squared off at 15:15, its stop on NIFTY 50.
    call = next(i for i in sim.sim.instruments if i.name == "NIFTY" and i.instrument_type == "CE")
    wait(
        lambda: instruments.resolve(panel.master(), f"NFO:{call.tradingsymbol}") is not None,
        "the instruments",
    )
    record = instruments.resolve(panel.master(), f"NFO:{call.tradingsymbol}")
    panel.select_instrument(record)
    panel.rule_editor.set_rule(TrailRule.points(60.0))
    attach = panel.attachments
    attach.basket.setCurrentIndex(attach.basket.findData(basket.id))
    attach.exit_at.setChecked(True)
    attach.on_underlying.setChecked(True)
    attach.underlying_symbol.setText("NSE:NIFTY 50")
    attach.underlying_symbol.editingFinished.emit()
    wait(lambda: "MTM" in panel.basket_value.text(), "the basket's MTM in the preview")
    wait(lambda: panel.underlying_value.text() != "—", "the stop on NIFTY 50 in the preview")
    settle(0.6)
    save(panel.content, out / "order-entry-attach.png")  # the whole form, also the part scrolled out of view
    panel.clear()

    path = [8, 14, 22, 30, 38, 46, 52, 58, 50, 44, 40, 47, 55, 62, 57, 49, 41, 33, 27]
    for step in path:
        sim.set_price("NSE:INFY", 1500 + step, bid=1500 + step - 0.05, ask=1500 + step + 0.05)
        sim.set_price("NSE:TCS", 3000 - step / 2, bid=3000 - step / 2 - 0.05, ask=3000 - step / 2 + 0.05)
        settle(0.7)
    wait(lambda: baskets.baskets.get(basket.id).status is not BasketStatus.ACTIVE, "the basket to exit", 10)
    wait(lambda: baskets.baskets.get(basket.id).status is BasketStatus.EXITED, "the basket's exits", 10)
    settle(1.5)
    dock_panel.refresh()
    settle(0.4)
    save(dock, out / "basket.png")
    window.prepare_quit()
    window.stop()
    baskets.shutdown()
    square_off.shutdown()
    service.shutdown()
    store.close()
    sim.stop()


def shoot_order_entry(out: Path, dark: bool) -> None:
    """The order form on its own, state by state (empty, completing, a preview, a short's options, errors,
    the confirmation), then the settings dialog and its errors."""
    from PySide6.QtCore import QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication, QMessageBox

    from trailstop_gui.models.domain import TrailRule
    from trailstop_gui.models.store import ProtectionStore
    from trailstop_gui.services.instruments import InstrumentService
    from trailstop_gui.services.protection_service import ProtectionService
    from trailstop_gui.settings import Settings
    from trailstop_gui.simulator.runner import start_simulator
    from trailstop_gui.views import theme
    from trailstop_gui.views.order_entry import OrderEntryPanel
    from trailstop_gui.views.settings_dialog import SettingsDialog

    app = QApplication.instance() or QApplication([sys.argv[0]])
    theme.apply_theme(app, "dark" if dark else "light")
    out.mkdir(parents=True, exist_ok=True)
    sim = start_simulator(seed=3, auto=False, fill_delay=0.0)
    tmp = tempfile.TemporaryDirectory()
    store = ProtectionStore(Path(tmp.name) / "shots.db")
    _account, session = simulator_session(sim, store)
    service = ProtectionService(store)
    service.add_session(session)
    service.start()
    instruments = InstrumentService(store)
    try:
        sim.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
        panel = OrderEntryPanel(service, store, Settings(), instruments)
        panel.setWindowTitle("TrailStop: new order")
        panel.resize(400, 640)
        panel.show()
        panel.activateWindow()
        wait(lambda: store.instrument_count("kite@sim") > 0, "the instruments")
        settle(0.3)
        save(panel, out / "order_entry_empty.png")

        panel.instrument.setFocus()
        for ch in "tata":
            QTest.keyClicks(panel.instrument, ch)
            settle(0.05)
        popup = panel.completer.popup()
        wait(lambda: popup is not None and popup.isVisible(), "the completion list")
        settle(0.3)
        # The popup is a separate window: capture the screen area under the form.
        geometry = panel.frameGeometry()
        completion = out / "order_entry_completion.png"
        app.primaryScreen().grabWindow(
            0, geometry.x(), geometry.y(), geometry.width(), geometry.height()
        ).save(str(completion))
        print(completion)
        if popup is not None:
            popup.hide()

        panel.instrument.clear()
        QTest.keyClicks(panel.instrument, "INFY")
        panel.instrument.editingFinished.emit()
        panel.quantity.setValue(10)
        wait(lambda: panel.preview() is not None, "the preview")
        settle(0.3)
        save(panel, out / "order_entry_preview.png")

        panel.rule_editor.set_rule(TrailRule.percent(1.5, breakeven=1.0, target=4.0))
        panel.sell.click()
        settle(0.3)
        save(panel, out / "order_entry_sell_options.png")

        panel.clear()
        QTest.keyClicks(panel.instrument, "NIFTY")
        settle(0.2)
        record = instruments.search("kite@sim", "NIFTY")[0]
        if popup is not None:
            popup.hide()
        panel.select_instrument(record)
        panel.quantity.setValue(60)
        panel.order_type.setCurrentIndex(1)
        panel.price.setValue(24500.03)
        panel.submit()
        settle(0.3)
        save(panel, out / "order_entry_errors.png")

        panel.clear()
        panel.select_instrument(instruments.search("kite@sim", "INFY")[0])
        panel.quantity.setValue(10)
        wait(lambda: panel.preview() is not None, "the preview")

        def capture_confirmation() -> None:
            box = panel.confirm_box
            if box is None or not box.isVisible():
                QTimer.singleShot(20, capture_confirmation)
                return
            settle(0.3)
            save(box, out / "order_entry_confirm.png")
            next(b for b in box.buttons() if box.buttonRole(b) == QMessageBox.ButtonRole.RejectRole).click()

        QTimer.singleShot(0, capture_confirmation)
        panel.submit()

        dialog = SettingsDialog(store, Settings(), tmp.name)
        dialog.show()
        settle(0.3)
        save(dialog, out / "settings_dialog.png")
        dialog.rule_value.setValue(0)
        dialog.accept()
        settle(0.3)
        save(dialog, out / "settings_dialog_errors.png")
        dialog.close()
    finally:
        service.shutdown()
        instruments.wait_for_done()
        store.close()
        sim.stop()
        tmp.cleanup()


def order_panel(service: Any, store: Any, settings: Any) -> Any:
    """The order form built by its own module, when it is there (it is developed alongside)."""
    try:
        from trailstop_gui.services.instruments import InstrumentService
        from trailstop_gui.views.order_entry import OrderEntryPanel

        return OrderEntryPanel(service, store, settings, InstrumentService(store))
    except Exception as exc:  # not there yet, or its constructor changed: shoot without it
        print(f"(no order panel in the screenshots: {exc})", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    flags = [a for a in args if a.startswith("--") and a != "--display"]
    rest = [a for a in args if not a.startswith("--")]
    order_entry = "--order-entry" in flags
    out = Path(rest[0]) if rest else ORDER_ENTRY_OUT if order_entry else DEFAULT_OUT
    if "--display" not in args:
        return run_under_xvfb(out, flags)
    from PySide6.QtWidgets import QApplication

    from trailstop_gui.event_loop import caller_driven_event_loop

    # The window's broker questions (positions without protection, Protect) are async flows on qasync's
    # loop, as in the app; this tool spins Qt itself (processEvents), which runs them inside this block.
    app = QApplication([sys.argv[0]])
    with caller_driven_event_loop(app):
        if order_entry:
            shoot_order_entry(out, dark="--dark" in flags)
        else:
            shoot(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
