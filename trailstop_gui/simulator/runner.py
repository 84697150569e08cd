"""Running the simulator: inside an asyncio loop (the CLI) or on a background thread (demo mode, tests)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from trailstop_gui.simulator.core import Simulator
from trailstop_gui.simulator.exchange import Exchange
from trailstop_gui.simulator.faults import FaultError, parse_fault
from trailstop_gui.simulator.market import Quote
from trailstop_gui.simulator.server import build_app

T = TypeVar("T")


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    if port and sys.platform != "win32":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    return sock


def _url_host(host: str, sock: socket.socket) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if sock.family == socket.AF_INET6 else host


@dataclass
class RunningServer:
    """A simulator serving on a bound port inside the current event loop."""

    sim: Simulator
    runner: web.AppRunner
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_server(host: str = "127.0.0.1", port: int = 0, **sim_options: Any) -> RunningServer:
    """Bind ``host:port`` (0 picks a free port), build the simulator and start serving it."""
    sock = _bind(host, port)
    actual_port = sock.getsockname()[1]
    sim = Simulator(f"http://{_url_host(host, sock)}:{actual_port}", **sim_options)
    runner = web.AppRunner(build_app(sim), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return RunningServer(sim, runner, actual_port)


class SimulatorHandle:
    """A simulator running on a daemon thread. Talk to it over HTTP, or through :meth:`call`."""

    def __init__(
        self, server: RunningServer, loop: asyncio.AbstractEventLoop, thread: threading.Thread
    ) -> None:
        self._server = server
        self._loop = loop
        self._thread = thread
        self.sim = server.sim
        self.info: dict[str, Any] = server.sim.info()
        self.url: str = self.info["http"]
        self.port = server.port
        self.control_headers: dict[str, str] = {"X-Sim-Token": server.sim.control_token}
        """Headers every control API call (``/_sim/``) needs."""

    @property
    def exchange(self) -> Exchange:
        """For reading in tests; change state only through :meth:`call` or the control API."""
        return self.sim.exchange

    def call(self, func: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """Run ``func(*args)`` on the simulator's loop thread and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(func(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def set_price(
        self, symbol: str | int, ltp: float, bid: float | None = None, ask: float | None = None
    ) -> Quote:
        inst = self.sim.instruments.find(symbol)
        if inst is None:
            raise KeyError(f"unknown instrument {symbol!r}")
        return self.call(self.sim.set_price, inst, ltp, bid, ask)

    def fault(self, **spec: Any) -> None:
        """Inject a standing fault, as ``POST /_sim/fault`` does (``fault=kind`` plus its options)."""
        parsed = parse_fault(spec)
        if parsed["fault"] in ("drop_ws", "expire_tokens", "price_gap", "clear"):
            raise FaultError("use the control API (POST /_sim/fault) for one-shot actions")
        self.call(self.sim.faults.add, parsed)

    def clear_faults(self) -> None:
        self.call(self.sim.faults.clear)

    def stop(self, timeout: float = 10.0) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._server.close(), self._loop)
        try:
            future.result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> SimulatorHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int | None = None,
    auto: bool = True,
    *,
    tick_interval: float = 0.5,
    fill_delay: float = 0.1,
    startup_timeout: float = 10.0,
    registered_ips: tuple[str, ...] = (),
    require_token: bool = False,
) -> SimulatorHandle:
    """Start a simulator on a daemon thread and return once it accepts connections."""
    started: concurrent.futures.Future[SimulatorHandle] = concurrent.futures.Future()
    loop = asyncio.new_event_loop()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(
                start_server(
                    host,
                    port,
                    seed=seed,
                    auto=auto,
                    tick_interval=tick_interval,
                    fill_delay=fill_delay,
                    registered_ips=registered_ips,
                    require_token=require_token,
                )
            )
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(SimulatorHandle(server, loop, thread))
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name="trailstop-sim", daemon=True)
    thread.start()
    return started.result(startup_timeout)
