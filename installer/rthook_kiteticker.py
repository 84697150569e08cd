"""PyInstaller runtime hook: ``kiteconnect`` without its KiteTicker.

``import kiteconnect`` imports ``kiteconnect.ticker``, which pulls in Twisted and Autobahn (with txaio,
zope.interface, service_identity, ...) only for the SDK's own WebSocket client. TrailStop reads the Kite
ticker with its own client (services/brokers/kite_feed.py) and never uses KiteTicker, so the bundle leaves
that stack out (bundle_config.KITE_TICKER_STACK) and this hook puts a ``kiteconnect.ticker`` in its place
before anything imports the SDK: KiteConnect works as ever, and KiteTicker says why it is not there.
"""

import sys
import types

_ticker = types.ModuleType("kiteconnect.ticker")
_ticker.__doc__ = "KiteTicker is left out of the TrailStop bundle (see installer/rthook_kiteticker.py)."


class KiteTicker:
    """Refuses to start: its Twisted/Autobahn stack is not in the bundle."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise ImportError(
            "KiteTicker is not part of the TrailStop bundle (its Twisted/Autobahn stack is left out); "
            "TrailStop reads the Kite ticker with its own client"
        )


KiteTicker.__module__ = "kiteconnect.ticker"
_ticker.KiteTicker = KiteTicker  # type: ignore[attr-defined]
sys.modules.setdefault("kiteconnect.ticker", _ticker)
