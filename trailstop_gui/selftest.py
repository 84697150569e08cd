"""``trailstop-gui --self-test``: prove that this build of TrailStop works, on this machine, in seconds.

Made for the frozen app (where a missing module, plugin or data file shows only at run time) and just as
valid from source. It starts Qt offscreen, checks what the bundle must carry (the Upstox feed schema,
certifi's CA bundle, keyring's backends, QtCharts, QtWebEngine and its helper process), then runs the demo
flow in-process in a temporary data folder: simulator, login through the login form, feed, entry order,
trail, trigger, exit, exit filled; on both the Zerodha and the Upstox protocol. It prints each step as it
goes and exits 0 only when every step passed, the exit fills included; otherwise it says what failed and
keeps the data folder (with its log) for a look.

Nothing here touches the trader's own data or OS keyring: the flow keeps its secrets in memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from trailstop_gui import __version__

# Set by a CI job (or anyone) to also get the report in a file: a windowed build may have no stdout.
REPORT_ENV = "TRAILSTOP_SELFTEST_REPORT"
SYMBOL = "NSE:INFY"
BROKERS = ("kite", "upstox")
BROKER_NAMES = {"kite": "Zerodha", "upstox": "Upstox"}


class StepFailed(Exception):
    """A step did not see what it waited for; the message says what was seen instead."""


class Report:
    """Numbered step lines with the time since the start, to stdout and, if asked, to a file."""

    def __init__(self, streams: list[IO[str]]) -> None:
        self.streams = streams
        self.start = time.monotonic()
        self.passed = 0
        self.failed: list[str] = []

    def line(self, text: str) -> None:
        for stream in self.streams:
            with contextlib.suppress(OSError, ValueError):
                stream.write(text + "\n")
                stream.flush()

    def _step(self, status: str, what: str, detail: str) -> None:
        elapsed = time.monotonic() - self.start
        self.line(f"{elapsed:7.2f} s  {status:<6}  {what}: {detail}")

    def ok(self, what: str, detail: str) -> None:
        self.passed += 1
        self._step("ok", what, detail)

    def fail(self, what: str, why: str) -> None:
        self.failed.append(what)
        self._step("FAILED", what, why)


def _output_streams() -> tuple[list[IO[str]], IO[str] | None]:
    streams: list[IO[str]] = []
    stdout = sys.stdout
    if stdout is None and sys.platform == "win32":
        stdout = _attach_parent_console()
    if stdout is not None:
        streams.append(stdout)
    report_file = None
    if os.environ.get(REPORT_ENV):
        report_file = open(os.environ[REPORT_ENV], "w", encoding="utf-8")  # noqa: SIM115 (closed by run)
        streams.append(report_file)
    return streams, report_file


def _attach_parent_console() -> IO[str] | None:
    # A windowed .exe has no stdout; started from a console, it can still write to that console.
    try:
        import ctypes

        if not ctypes.windll.kernel32.AttachConsole(-1):  # type: ignore[attr-defined]  # ATTACH_PARENT_PROCESS
            return None
        return open("CONOUT$", "w", encoding="utf-8")  # lives as long as the process
    except Exception:
        return None


def run_self_test() -> int:
    """Run every check; 0 only when all passed, including the exit fills of the demo flow."""
    # Before anything imports Qt: no screen needed, and no Chromium sandbox for a page we wrote ourselves
    # (it needs kernel features that containers and CI machines often lack; the real app keeps it).
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
    flags = os.environ.get("QTWEBENGINE_CHROMIUM_FLAGS", "")
    os.environ["QTWEBENGINE_CHROMIUM_FLAGS"] = f"{flags} --no-sandbox --disable-gpu".strip()
    streams, report_file = _output_streams()
    report = Report(streams)
    frozen = "frozen" if getattr(sys, "frozen", False) else "from source"
    report.line(
        f"TrailStop {__version__} self-test ({frozen}; {platform.system()} {platform.machine()}; "
        f"Python {platform.python_version()})"
    )
    try:
        return _run(report)
    finally:
        if report_file is not None:
            report_file.close()


def _run(report: Report) -> int:
    try:
        app = _start_qt(report)
    except Exception as exc:
        report.fail("Qt", _why(exc))
        report.line("self-test FAILED: Qt could not start, nothing else can run")
        return 1
    from trailstop_gui.event_loop import caller_driven_event_loop

    # The flows the window awaits (order-route checks after login) run on the app's qasync loop; the
    # self-test spins Qt itself (wait_until), so the loop counts as running while it does.
    with caller_driven_event_loop(app):
        return _run_steps(report, app)


def _run_steps(report: Report, app: Any) -> int:
    for what, check in (
        ("bundle", _check_bundle),
        ("keyring", _check_keyring),
        ("charts", _check_charts),
        ("web engine", _check_web_engine),
    ):
        try:
            report.ok(what, check())
        except Exception as exc:
            report.fail(what, _why(exc))
    directory = Path(tempfile.mkdtemp(prefix="trailstop-selftest-"))
    try:
        DemoFlow(report, directory).run()
    except Exception as exc:
        report.fail("demo flow", _why(exc))
    total = time.monotonic() - report.start
    del app
    if report.failed:
        report.line(
            f"self-test FAILED: {len(report.failed)} step(s) failed ({', '.join(report.failed)}); "
            f"{report.passed} passed. Data folder and log kept in {directory}"
        )
        return 1
    shutil.rmtree(directory, ignore_errors=True)
    report.line(f"self-test passed: {report.passed} steps in {total:.1f} s")
    return 0


def _why(exc: BaseException) -> str:
    if isinstance(exc, StepFailed):
        return str(exc)
    lines = traceback.format_exception(exc)
    return f"{type(exc).__name__}: {exc}\n" + "".join("          " + line for line in lines[-6:])


# ----------------------------------------------------------------- checks that need no simulator


def _start_qt(report: Report) -> Any:
    # QtWebEngine must be loaded before the application object exists (it shares OpenGL contexts).
    import PySide6
    from PySide6 import QtWebEngineWidgets  # noqa: F401
    from PySide6.QtCore import qVersion
    from PySide6.QtWidgets import QApplication

    from trailstop_gui.settings import APP_NAME

    app = QApplication.instance() or QApplication([sys.argv[0], "-platform", "offscreen"])
    app.setApplicationName(APP_NAME)
    report.ok("Qt", f"offscreen application up (Qt {qVersion()}, PySide6 {PySide6.__version__})")
    return app


def _check_bundle() -> str:
    import ssl

    import certifi
    import requests.utils
    import upstox_client  # noqa: F401
    from kiteconnect.__version__ import __version__ as kite_version
    from upstox_client.feeder.proto import MarketDataFeedV3_pb2

    import trailstop_gui.views.main_window  # noqa: F401  (every view module comes with it)
    from trailstop_gui.services.brokers import upstox_feed

    schema = MarketDataFeedV3_pb2.DESCRIPTOR.name
    message = MarketDataFeedV3_pb2.FeedResponse()
    message.type = 2  # market_info: a frame the decoder must accept and turn into no ticks
    if upstox_feed.decode_message(message.SerializeToString()) != []:
        raise StepFailed("the Upstox decoder returned ticks for a frame that carries none")
    cafile = certifi.where()
    if not Path(cafile).is_file():
        raise StepFailed(f"certifi's CA bundle is missing: {cafile}")
    context = ssl.create_default_context(cafile=cafile)
    authorities = len(context.get_ca_certs())
    if authorities < 50:
        raise StepFailed(f"certifi's CA bundle holds only {authorities} authorities")
    if Path(requests.utils.DEFAULT_CA_BUNDLE_PATH) != Path(cafile):
        raise StepFailed(f"requests uses {requests.utils.DEFAULT_CA_BUNDLE_PATH}, not certifi's bundle")
    return (
        f"Upstox feed schema {schema}, certifi CA bundle ({authorities} authorities), "
        f"kiteconnect {kite_version}, upstox_client, every view module"
    )


def keyring_summary() -> tuple[list[str], str]:
    """The keyring backends this build can find, and the one in use (also used by the build tests)."""
    import importlib.metadata

    import keyring

    found = sorted(ep.name for ep in importlib.metadata.entry_points(group="keyring.backends"))
    active = keyring.get_keyring()
    return found, f"{type(active).__module__}.{type(active).__qualname__}"


def _check_keyring() -> str:
    from keyring.backend import get_all_keyring
    from keyring.backends import chainer, fail

    from trailstop_gui.services.secrets import SecretStore

    found, active = keyring_summary()
    if not found:
        raise StepFailed("no keyring backend is registered: keyring's metadata is missing from the bundle")
    usable = [
        f"{type(b).__module__}.{type(b).__qualname__}"
        for b in get_all_keyring()
        if not isinstance(b, fail.Keyring | chainer.ChainerBackend)
    ]
    if active == "keyring.backends.fail.Keyring":
        if usable:
            raise StepFailed(f"the fail backend is in use although {', '.join(usable)} is usable")
        # What a machine without an OS keyring gets: the app must carry on with secrets in memory.
        store = SecretStore(service="trailstop-selftest")
        store.set(0, "api_secret", "self-test")
        if store.get(0, "api_secret") != "self-test" or store.persistent:
            raise StepFailed("with no OS keyring, secrets were not kept in memory")
        return (
            f"backends found: {', '.join(found)}; none usable here, so secrets stay in memory "
            "(NoKeyringError handled)"
        )
    return f"backends found: {', '.join(found)}; in use: {active}"


def _check_charts() -> str:
    from PySide6.QtCharts import QChart, QChartView, QLineSeries
    from PySide6.QtGui import QColor

    series = QLineSeries()
    for x, price in enumerate((1500.0, 1512.5, 1508.0, 1531.0, 1528.0, 1560.0)):
        series.append(x, price)
    series.setColor(QColor("#2eaa5c"))
    chart = QChart()
    chart.addSeries(series)
    chart.createDefaultAxes()
    chart.legend().hide()
    view = QChartView(chart)
    view.resize(320, 200)
    image = view.grab().toImage()
    green = sum(
        1
        for y in range(0, image.height(), 2)
        for x in range(0, image.width(), 2)
        if image.pixelColor(x, y).green() > 150 and image.pixelColor(x, y).red() < 120
    )
    if green == 0:
        raise StepFailed("the chart drew no line")
    return f"QtCharts drew a price line ({image.width()}x{image.height()})"


def _check_web_engine(timeout: float = 30.0) -> str:
    import shiboken6
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWebEngineCore import QWebEnginePage, QWebEngineProfile
    from PySide6.QtWebEngineWidgets import QWebEngineView

    profile = QWebEngineProfile()  # off the record: nothing written to the trader's profile
    view = QWebEngineView()
    page = QWebEnginePage(profile, view)
    view.setPage(page)
    view.resize(480, 320)
    result: dict[str, Any] = {}
    loop = QEventLoop()

    def loaded(ok: bool) -> None:
        result["loaded"] = ok
        if not ok:
            loop.quit()
            return
        page.runJavaScript("document.title + ' ' + (6 * 7)", 0, answered)

    def answered(value: object) -> None:
        result["script"] = value
        loop.quit()

    page.loadFinished.connect(loaded)
    page.setHtml("<html><head><title>TrailStop</title></head><body>self-test</body></html>")
    view.show()
    QTimer.singleShot(int(timeout * 1000), loop.quit)
    loop.exec()
    view.close()
    shiboken6.delete(view)  # the page with it, now: a page must not outlive its profile
    if result.get("script") != "TrailStop 42":
        seen = "nothing" if not result else json.dumps(result)
        raise StepFailed(
            f"QtWebEngine did not render a page and run its script within {timeout:.0f} s (saw {seen}); "
            "QtWebEngineProcess or its resources may be missing"
        )
    return "QtWebEngineProcess rendered a page and ran its script"


# ----------------------------------------------------------------- the demo flow


@contextlib.contextmanager
def memory_keyring() -> Iterator[None]:
    """The flow's secrets go to memory, never into the trader's OS keyring."""
    import keyring
    import keyring.backend
    import keyring.errors

    class MemoryKeyring(keyring.backend.KeyringBackend):
        priority = 1

        def __init__(self) -> None:
            super().__init__()  # type: ignore[no-untyped-call]
            self.values: dict[tuple[str, str], str] = {}

        def get_password(self, service: str, username: str) -> str | None:
            return self.values.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.values[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            if self.values.pop((service, username), None) is None:
                raise keyring.errors.PasswordDeleteError(username)

    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    try:
        yield
    finally:
        keyring.set_keyring(previous)


def wait_until(predicate: Callable[[], Any], timeout: float, failure: Callable[[], str]) -> Any:
    """Process Qt events until ``predicate()`` is truthy; StepFailed(failure()) after ``timeout``."""
    from PySide6.QtCore import QCoreApplication, QEventLoop

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StepFailed(f"{failure()} (waited {timeout:.0f} s)")
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
        time.sleep(0.01)


class DemoFlow:
    """``--demo`` in-process: the same runtime the app builds, driven step by step."""

    def __init__(self, report: Report, directory: Path) -> None:
        self.report = report
        self.directory = directory
        self.store: Any = None
        self.sim_token = ""

    def run(self) -> None:
        from trailstop_gui.runtime import build_runtime

        with memory_keyring():
            runtime = build_runtime(data_directory=str(self.directory), demo=True, brokers=BROKERS)
            try:
                self._flow(runtime)
            finally:
                runtime.close()

    def _control(self, url: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        token = self.sim_token
        request = urllib.request.Request(
            f"{url}/_sim/{path}",
            data=data,
            headers={"Content-Type": "application/json", "X-Sim-Token": token},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def _flow(self, runtime: Any) -> None:
        from trailstop_gui.models.domain import Product, Side, Status, TrailRule
        from trailstop_gui.services.protection_service import EntryRequest
        from trailstop_gui.services.session import SessionState

        report, store, service = self.report, runtime.store, runtime.service
        self.store = store
        sim = runtime.simulator
        self.sim_token = sim.control_headers["X-Sim-Token"]
        # The demo's random walk is stopped: the self-test moves the price itself, as a test would.
        self._control(sim.url, "auto", {"on": False})
        sim.set_price(SYMBOL, 1500.0, bid=1499.95, ask=1500.05)
        report.ok("simulator", f"running in-process at {sim.url}; data in {self.directory}")

        sessions = {s.account.broker: s for s in service.sessions.values()}
        if set(sessions) != set(BROKERS):
            raise StepFailed(f"expected a Zerodha and an Upstox demo account, got {sorted(sessions)}")
        runtime.login_simulator_accounts()
        missing = [b for b, s in sessions.items() if not s.has_token()]
        if missing:
            raise StepFailed(f"login through the login form failed for {', '.join(missing)} (see the log)")
        report.ok("login", ", ".join(f"{BROKER_NAMES[b]} logged in through the login form" for b in BROKERS))

        service.start()
        wait_until(
            lambda: all(s.state is SessionState.LIVE for s in sessions.values()),
            20,
            lambda: "feeds not live: " + ", ".join(f"{b} {s.state.value}" for b, s in sessions.items()),
        )
        report.ok("feed", ", ".join(f"{b} live" for b in BROKERS))

        instrument = next(i for i in self._control(sim.url, "instruments") if i["symbol"] == SYMBOL)
        rule = TrailRule.percent(2.0)
        pids: dict[str, int] = {}
        for broker, session in sessions.items():
            key = instrument["kite_token"] if broker == "kite" else instrument["upstox_key"]
            p = service.place_entry(
                EntryRequest(
                    account_id=session.account_id,
                    instrument=key,
                    symbol=instrument["tradingsymbol"],
                    exchange="NSE",
                    side=Side.BUY,
                    quantity=3,
                    product=Product.MIS,
                    tick_size=instrument["tick_size"],
                    rule=rule,
                )
            )
            pids[broker] = p.id
        for broker, pid in pids.items():
            # Both brokers push order updates (Kite's ticker, Upstox's portfolio stream) and the entry is
            # polled; 45 s also covers a lost update, found by the next reconcile (every 30 s at most).
            p = self._wait_status(pid, {Status.OPEN}, 45, f"{broker} entry to fill")
            report.ok(
                "entry",
                f"{broker}: BUY 3 {p.symbol} MIS filled at {p.entry_price:.2f}; "
                f"stop {p.stop:.2f} ({rule.value:g} %)",
            )

        # Kite's ticker sends quote-mode packets (no bid) until the "full" mode asked for after the subscribe
        # arrives; a price moved before that trails on the LTP (found on a loaded machine: 1528.80, not
        # 1528.75). A trader's feed settles in a moment; the check waits for it, as the engine's rule is.
        for broker, pid in pids.items():
            self._wait_bid(broker, sessions[broker], store.get(pid).engine_instrument)
        first_stops = {broker: store.get(pid).stop for broker, pid in pids.items()}
        sim.set_price(SYMBOL, 1560.0, bid=1559.95, ask=1560.05)
        expected = 1528.75  # MIS long trails the bid: 1559.95 - 2 % = 1528.751, down to the tick
        for broker, pid in pids.items():
            self._wait_stop(broker, pid, expected)
            report.ok(
                "trail", f"{broker}: bid 1559.95 raised the stop {first_stops[broker]:.2f} -> {expected:.2f}"
            )

        sim.set_price(SYMBOL, 1520.0, bid=1519.95, ask=1520.05)
        for broker, pid in pids.items():
            p = self._wait_status(pid, {Status.CLOSED, Status.EXIT_FAILED}, 20, f"{broker} exit to fill")
            if p.status is not Status.CLOSED:
                raise StepFailed(f"{broker}: the exit failed ({p.reason})")
            transitions = [(e.old, e.new) for e in store.events(protection_id=pid, kinds=["transition"])]
            expected_path = [
                ("PENDING", "OPEN"),
                ("OPEN", "TRIGGERED"),
                ("TRIGGERED", "EXITING"),
                ("EXITING", "CLOSED"),
            ]
            if transitions != expected_path:
                raise StepFailed(f"{broker}: unexpected lifecycle {transitions}")
            report.ok("trigger", f"{broker}: LTP 1520.00 crossed the stop {p.stop:.2f} -> TRIGGERED")
            exits = [o for o in self._control(sim.url, "orders") if o.get("tag") == p.exit_tag]
            if len(exits) != 1 or exits[0]["transaction_type"] != "SELL" or exits[0]["quantity"] != 3:
                raise StepFailed(f"{broker}: expected exactly one SELL 3 exit at the broker, saw {exits}")
            report.ok("exit", f"{broker}: one market SELL 3 sent with tag {p.exit_tag} -> EXITING")
            if exits[0]["status"] != "COMPLETE" or p.exit_price is None:
                raise StepFailed(f"{broker}: exit order {exits[0]['status']}, exit price {p.exit_price}")
            report.ok("exit filled", f"{broker}: filled at {p.exit_price:.2f} -> CLOSED")

    @staticmethod
    def _wait_bid(broker: str, session: Any, instrument: Any, timeout: float = 10.0) -> None:
        def has_bid() -> bool:
            feed = session.feed
            quote = feed.latest_quote(instrument) if feed is not None else None
            return quote is not None and quote.bid is not None

        wait_until(has_bid, timeout, lambda: f"{broker}: no quote with a bid from the feed")

    def _wait_stop(self, broker: str, pid: int, expected: float, timeout: float = 10.0) -> None:
        wait_until(
            lambda: abs((self.store.get(pid).stop or 0) - expected) < 1e-6,
            timeout,
            lambda: f"{broker}: the stop is at {self.store.get(pid).stop}, expected {expected}",
        )

    def _wait_status(self, pid: int, statuses: set[Any], timeout: float, what: str) -> Any:
        def reached() -> Any:
            p = self.store.get(pid)
            return p if p.status in statuses else None

        def seen() -> str:
            p = self.store.get(pid)
            return f"waiting for the {what}: protection is {p.status.value} ({p.reason or 'no reason given'})"

        return wait_until(reached, timeout, seen)
