"""The broker errors the window may catch, and the redaction their text gets before anyone sees it.

Views import these from here, never from services/brokers/ (an import-linter contract): the adapters
behind that seam may change without the widgets knowing.
"""

from __future__ import annotations

from trailstop_gui.services.brokers.errors import (
    AuthError,
    BrokerError,
    RejectedError,
    TemporaryError,
    redact,
)

__all__ = ["AuthError", "BrokerError", "RejectedError", "TemporaryError", "redact"]
