"""Sharing one broker position among its protections: oldest first, less the exits already at the broker."""

from __future__ import annotations

from dataclasses import replace

from tests.factories import unsaved_protection
from trailstop_gui.models.domain import Product, Protection, Side, Status
from trailstop_gui.services.positions import allocate, exit_share, position_key


def prot(pid: int, quantity: int, status: Status = Status.OPEN, **changes: object) -> Protection:
    return unsaved_protection(quantity, id=pid, status=status, exit_tag=f"TS{pid}", **changes)


def test_two_protections_share_one_position_oldest_first() -> None:
    # Each used to believe it held the whole 100: their two exits sold 200 and the long became a short.
    older, newer = prot(1, 60), prot(2, 60)
    key = position_key(older)
    assert allocate([newer, older], {key: 100}) == {1: 60, 2: 40}
    assert allocate([newer, older], {key: 50}) == {1: 50, 2: 0}
    assert allocate([newer, older], {key: 500}) == {1: 60, 2: 60}  # never more than it protects


def test_exits_at_the_broker_are_taken_first() -> None:
    a = prot(1, 60)
    key = position_key(a)
    assert allocate([a], {key: 100}, {key: 70}) == {1: 30}
    assert allocate([a], {key: 100}, {key: 150}) == {1: 0}


def test_positions_are_told_apart_by_account_instrument_product_and_side() -> None:
    a = prot(1, 10)
    others = [
        prot(2, 10, account_id=2),
        prot(3, 10, instrument="2885", symbol="RELIANCE"),
        prot(4, 10, product=Product.CNC),
        prot(5, 10, side=Side.SELL),
    ]
    live = {position_key(p): 10 for p in [a, *others]}
    assert allocate([a, *others], live) == {1: 10, 2: 10, 3: 10, 4: 10, 5: 10}


def test_an_exit_takes_its_share_after_older_protections_and_exits_sent() -> None:
    fired = prot(2, 60, Status.TRIGGERED)
    older_open = prot(1, 30)
    assert exit_share(fired, [older_open, fired], 100) == 60
    assert exit_share(fired, [older_open, fired], 70) == 40
    sent = prot(3, 50, Status.EXITING, exit_quantity=50)
    assert exit_share(fired, [sent], 100) == 50
    # The exit sent may or may not show in the live quantity yet: wait for it rather than guess.
    assert exit_share(fired, [sent], 50) is None
    # Flat is flat: nothing to sell, nothing to wait for.
    assert exit_share(fired, [sent], 0) == 0
    # A sibling TRIGGERED on the same tick is not "sent": the older one gets the position first.
    twin_older = prot(1, 3, Status.TRIGGERED)
    twin_newer = prot(2, 3, Status.TRIGGERED)
    assert exit_share(twin_newer, [twin_older], 2) == 0
    assert exit_share(twin_older, [twin_newer], 2) == 2
    # Ended protections and other positions do not count.
    assert exit_share(fired, [prot(4, 60, Status.CLOSED), prot(5, 60, side=Side.SELL)], 60) == 60


def test_delivery_protections_on_either_listing_share_one_demat() -> None:
    """Found reading issue 14: NSE:SBIN and BSE:SBIN protections each counted the whole demat; after a
    sale outside left 6 shares, both exits were sized at 6 (12 sold of 6)."""
    nse = prot(1, 10, product=Product.CNC, instrument="779521", symbol="SBIN", exchange="NSE")
    bse = prot(2, 6, product=Product.CNC, instrument="128028676", symbol="SBIN", exchange="BSE")
    assert position_key(nse) == position_key(bse)
    assert allocate([nse, bse], {position_key(nse): 6}) == {1: 6, 2: 0}
    upstox_nse = prot(3, 10, product=Product.CNC, instrument="NSE_EQ|INE062A01020", exchange="NSE")
    upstox_bse = prot(4, 6, product=Product.CNC, instrument="BSE_EQ|INE062A01020", exchange="BSE")
    assert position_key(upstox_nse) == position_key(upstox_bse)
    # Intraday rows of the two listings are two positions, as the brokers report them.
    assert position_key(replace(nse, product=Product.MIS)) != position_key(replace(bse, product=Product.MIS))
