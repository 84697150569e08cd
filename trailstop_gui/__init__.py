"""TrailStop: trailing stop-loss protection for Zerodha (Kite Connect) and Upstox positions."""

__version__ = "0.1.0"

# Before anything imports PySide6: see _immortal.py (a Qt build that would otherwise abort the app).
from trailstop_gui._immortal import make_singletons_immortal

make_singletons_immortal()
