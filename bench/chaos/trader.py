"""The trader's own scripts (`OutsideTrader`): orders placed outside the app with the brokers' official
clients (kiteconnect, upstox_client), as a trader's positions are opened and closed by hand."""

from __future__ import annotations

import threading
import time
from typing import Any

import requests

from bench.chaos.config import BROKERS
from trailstop_gui.simulator.login_flow import kite_request_token
from trailstop_gui.simulator.runner import SimulatorHandle
from trailstop_gui.simulator.upstox_login import upstox_code


def _no_pool(client: Any) -> None:
    """Every ApiClient starts a thread pool for async requests, never used here: close it now, not at exit."""
    client.pool.close()
    client.pool.join()


class OutsideTrader:
    """The trader's own scripts: positions opened (and closed by hand) with the brokers' official clients."""

    def __init__(self, sim: SimulatorHandle, proxy_url: str | None = None) -> None:
        self.info = sim.info
        self.url = sim.url
        self.control_headers = sim.control_headers
        self.proxy_url = proxy_url  # where the trader's own orders leave from, if not this machine
        self._locks = {b: threading.Lock() for b in BROKERS}
        self._kite: Any = None
        self._upstox: Any = None

    def _kite_client(self, fresh: bool) -> Any:
        from kiteconnect import KiteConnect

        if self._kite is None or fresh:
            section = self.info["kite"]
            proxies = {"http": self.proxy_url, "https": self.proxy_url} if self.proxy_url else None
            kite = KiteConnect(section["api_key"], root=section["api_root"], timeout=3, proxies=proxies)
            session = kite.generate_session(kite_request_token(self.info), api_secret=section["api_secret"])
            kite.set_access_token(session["access_token"])
            self._kite = kite
        return self._kite

    def _upstox_orders(self, fresh: bool) -> Any:
        import upstox_client

        if self._upstox is None or fresh:
            section = self.info["upstox"]
            config = upstox_client.Configuration()  # a copy of the first one ever made: set everything
            config.sandbox = False
            config.host = section["api_root"]
            config.order_host = section["order_root"]
            config.access_token = ""
            login = upstox_client.ApiClient(config)
            _no_pool(login)
            token = upstox_client.LoginApi(login).token(
                "2.0",
                code=upstox_code(self.info),
                client_id=section["client_id"],
                client_secret=section["client_secret"],
                redirect_uri=section["redirect_uri"],
                grant_type="authorization_code",
                _request_timeout=(3, 3),
            )
            config.access_token = token.access_token
            client = upstox_client.ApiClient(config)
            _no_pool(client)
            if self.proxy_url:
                from urllib3.contrib.socks import SOCKSProxyManager

                client.rest_client.pool_manager = SOCKSProxyManager(self.proxy_url)
            self._upstox = upstox_client.OrderApi(client)
        return self._upstox

    def _send(self, broker: str, order: dict[str, Any], fresh: bool) -> None:
        if broker == "kite":
            exchange, symbol = order["symbol"].split(":", 1)
            self._kite_client(fresh).place_order(
                variety="regular",
                exchange=exchange,
                tradingsymbol=symbol,
                transaction_type=order["side"],
                quantity=order["quantity"],
                product=order["product"],
                order_type="MARKET",
                market_protection=-1,
                tag=order["tag"],
            )
            return
        import upstox_client

        body = upstox_client.PlaceOrderRequest(
            quantity=order["quantity"],
            product="I" if order["product"] == "MIS" else "D",
            validity="DAY",
            price=0.0,
            tag=order["tag"],
            instrument_token=order["upstox_key"],
            order_type="MARKET",
            transaction_type=order["side"],
            disclosed_quantity=0,
            trigger_price=0.0,
            is_amo=False,
        )
        self._upstox_orders(fresh).place_order(body, "2.0", _request_timeout=(3, 3))

    def order_status(self, tag: str) -> str | None:
        """The status of the order carrying ``tag`` in the simulator's log, if it got there."""
        for order in requests.get(f"{self.url}/_sim/orders", headers=self.control_headers, timeout=10).json():
            if order.get("tag") == tag:
                return str(order["status"])
        return None

    def place(self, broker: str, order: dict[str, Any]) -> str:
        """Place an order; after any error look its tag up before trying again. Returns its final verdict:
        ``placed``, ``rejected`` or ``failed``."""
        with self._locks[broker]:
            fresh = False
            for attempt in range(8):
                try:
                    self._send(broker, order, fresh)
                except Exception as exc:
                    name = type(exc).__name__
                    fresh = name == "TokenException" or getattr(exc, "status", None) == 401 or fresh
                    status = self.order_status(order["tag"])
                    if status is None:
                        time.sleep(0.3 * (attempt + 1))
                        continue
                else:
                    fresh = False
                    status = self.order_status(order["tag"]) or "?"
                return "rejected" if status == "REJECTED" else "placed"
        return "failed"
