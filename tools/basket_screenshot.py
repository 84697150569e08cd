"""The README's basket screenshot: `python tools/basket_screenshot.py [OUT_DIR]` (offscreen, about 30 s).

An in-process simulator, a Kite account, a long INFY and a short TCS in one basket (max loss ₹3,000; at
₹1,500 lock ₹600; every ₹300 more raise the lock ₹150). The prices walk up, the lock trails, then fall back
to it: the basket exits both. Writes basket.png: the Baskets dock with the MTM chart and its lock.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    import keyring
    from keyring.backend import KeyringBackend
    from PySide6.QtWidgets import QApplication, QMainWindow

    from trailstop_gui.models.basket import BasketRules
    from trailstop_gui.models.basket_store import BasketStatus
    from trailstop_gui.models.domain import Product, Side, Status, TrailRule
    from trailstop_gui.models.store import ProtectionStore
    from trailstop_gui.services.baskets import BasketService
    from trailstop_gui.services.protection_service import EntryRequest, ProtectionService
    from trailstop_gui.services.secrets import SecretStore
    from trailstop_gui.services.session import AccountSession, Endpoints
    from trailstop_gui.simulator.runner import start_simulator
    from trailstop_gui.views.basket_panel import add_basket_dock

    class MemoryKeyring(KeyringBackend):
        priority = 1  # type: ignore[assignment]
        values: dict[tuple[str, str], str] = {}

        def get_password(self, service: str, username: str) -> str | None:
            return self.values.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.values[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            self.values.pop((service, username), None)

    keyring.set_keyring(MemoryKeyring())
    app = QApplication.instance() or QApplication([])
    sim = start_simulator(seed=4, auto=False, fill_delay=0.0)
    folder = tempfile.mkdtemp(prefix="trailstop-shot-")
    store = ProtectionStore(Path(folder) / "shot.db")
    section = sim.info["kite"]
    account = store.add_account(
        "kite",
        "Zerodha simulator",
        user_id=section["user_id"],
        api_key=section["api_key"],
        redirect_url=section["redirect_url"],
        api_root=sim.url,
    )
    secrets = SecretStore()
    secrets.set(account.id, "api_secret", section["api_secret"])
    session = AccountSession(account, secrets, Endpoints.for_simulator(sim.info, "kite"))
    session.login_with_password(section["user_id"], section["password"])
    service = ProtectionService(store)
    service.add_session(session)
    service.start()
    baskets = BasketService(service, step_seconds=0.02, refresh_seconds=0.2)
    baskets.start()

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)

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
        while store.get(p.id).status is not Status.OPEN:
            pump(0.05)
        members.append(p.id)
    rules = BasketRules(max_loss=3000, lock_at=1500, lock_profit=600, trail_every=300, trail_by=150)
    basket = baskets.create(account.id, "INFY long / TCS short", rules, members)
    window = QMainWindow()
    window.resize(1000, 560)
    panel = add_basket_dock(window, baskets)
    window.show()
    panel.table.selectRow(0)
    path = [8, 14, 22, 30, 38, 46, 52, 58, 50, 44, 40, 47, 55, 62, 57, 49, 41, 33, 27]
    for step in path:
        sim.set_price("NSE:INFY", 1500 + step, bid=1500 + step - 0.05, ask=1500 + step + 0.05)
        sim.set_price("NSE:TCS", 3000 - step / 2, bid=3000 - step / 2 - 0.05, ask=3000 - step / 2 + 0.05)
        pump(0.7)
    deadline = time.monotonic() + 10
    while baskets.baskets.get(basket.id).status is BasketStatus.ACTIVE and time.monotonic() < deadline:
        pump(0.1)
    pump(1.5)
    panel.refresh()
    pump(0.3)
    window.grab().save(str(out / "basket.png"))
    print(
        out / "basket.png", baskets.baskets.get(basket.id).status.value, baskets.baskets.get(basket.id).reason
    )
    baskets.shutdown()
    service.shutdown()
    store.close()
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
