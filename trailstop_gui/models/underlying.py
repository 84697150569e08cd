"""A stop on the underlying: an option or future protection that trails and triggers on another instrument's
price (NIFTY 50, the stock) while its exit goes to the option itself. Pure.

The engine needs nothing new: it is handed the same protection seen on the underlying (``engine_view``):
the underlying's instrument, the trader's view of it as the side (BUY: protect against it falling, as for a
bought call; SELL: against it rising, as for a bought put), its price when the rule was set as the entry,
and its tick size. The rule (percent or points) applies to the underlying's price. The stored stop and peak
are then prices of the underlying; the exit (side, quantity, tag) is still the protection's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from trailstop_gui.models.domain import InstrumentId, Protection, Side, require_positive
from trailstop_gui.models.engine import checked_initial_stop


@dataclass(frozen=True, slots=True)
class UnderlyingRule:
    instrument: InstrumentId
    symbol: str
    exchange: str
    view: Side
    tick_size: float
    reference: float

    def __post_init__(self) -> None:
        text = str(self.instrument).strip()
        if not text:
            raise ValueError("underlying: the instrument must not be empty")
        object.__setattr__(self, "instrument", text)  # stored as text, as protections keep theirs
        object.__setattr__(self, "view", Side.parse(self.view, "view"))
        object.__setattr__(self, "tick_size", require_positive(self.tick_size, "underlying tick size"))
        object.__setattr__(self, "reference", require_positive(self.reference, "underlying price"))

    @property
    def engine_instrument(self) -> InstrumentId:
        text = str(self.instrument)
        return int(text) if text.isdigit() else text


def engine_view(p: Protection, rule: UnderlyingRule) -> Protection:
    """The protection as the engine must watch it: on the underlying's prices, in the underlying's terms."""
    return p.with_changes(
        instrument=str(rule.instrument),
        side=rule.view,
        entry_price=rule.reference,
        tick_size=rule.tick_size,
    )


def initial_stop(p: Protection, rule: UnderlyingRule) -> float:
    """The first stop on the underlying: the protection's own rule measured from the underlying's price."""
    return checked_initial_stop(rule.view, rule.reference, rule.tick_size, p.rule)
