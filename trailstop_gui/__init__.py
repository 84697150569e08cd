"""TrailStop: trailing stop-loss protection for Zerodha (Kite Connect) and Upstox positions."""

__version__ = "0.1.0"
