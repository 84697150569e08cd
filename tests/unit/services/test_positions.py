"""Sharing one broker position among its protections: oldest first, less the exits already at the broker."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from tests.factories import position, unsaved_protection
from trailstop_gui.models.domain import Product, Protection, Side, Status
from trailstop_gui.services.holdings import DeliveryStock
from trailstop_gui.services.positions import (
    LiveQuantity,
    allocate,
    covered_quantity,
    covers_position,
    exit_claim,
    exit_share,
    position_key,
    settling_exits,
)


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


def test_what_a_protection_covers_of_a_position_it_may_be_adopted_beside() -> None:
    long = prot(1, 3)
    assert covers_position(long, 1, position(5))
    assert not covers_position(long, 2, position(5))  # another account
    assert not covers_position(long, 1, position(-5))  # a short of it
    assert not covers_position(long, 1, position(5, product=Product.NRML))
    assert covered_quantity(long) == 3
    # A PENDING entry covers only what has filled of it: the rest is not in the position yet.
    assert covered_quantity(prot(2, 10, Status.PENDING, filled_quantity=4)) == 4
    assert covered_quantity(prot(3, 10, Status.PENDING, filled_quantity=0)) == 0


def test_a_delivery_protection_covers_the_stock_in_either_listing() -> None:
    stock = DeliveryStock("SBIN", "NSE", "779521", "NSE:SBIN", "INE062A01020", 10, 600.0, 10)
    bse = prot(1, 6, product=Product.CNC, instrument="128028676", symbol="SBIN", exchange="BSE")
    assert covers_position(bse, 1, stock)
    assert not covers_position(replace(bse, symbol="SBICARD"), 1, stock)
    upstox = DeliveryStock(
        "SBIN", "NSE", "NSE_EQ|INE062A01020", "NSE_EQ|INE062A01020", "INE062A01020", 10, 600.0, 10
    )
    listed_on_bse = prot(2, 6, product=Product.CNC, instrument="BSE_EQ|INE062A01020", exchange="BSE")
    assert covers_position(listed_on_bse, 1, upstox)
    assert not covers_position(replace(listed_on_bse, instrument="BSE_EQ|INE040A01034"), 1, upstox)


# ----------------------------------------------------------------------------- twins whose exit just filled

NOW = datetime(2026, 12, 6, 11, 37, 13)
LAG = 5.0


def closed_twin(pid: int, quantity: int, seconds_ago: float, **changes: object) -> Protection:
    """A twin whose exit of ``quantity`` was reported filled (CLOSED) ``seconds_ago`` before NOW."""
    fields: dict[str, object] = {
        "reason": "stop",
        "exit_order_id": f"X{pid}",
        "exit_quantity": quantity,
        "closed_at": NOW - timedelta(seconds=seconds_ago),
    }
    return prot(pid, quantity, Status.CLOSED, **{**fields, **changes})


def test_a_read_sent_a_lag_after_a_twins_exit_filled_shows_it() -> None:
    """The chaos run's flip: a twin's exit of 8 filled at 11:37:12.2; the other's, held back meanwhile,
    was sized on a read of 11:37:13.0 that still showed the 8-share short, and bought 8 more."""
    waiting = prot(84, 8, Status.TRIGGERED, side=Side.SELL)
    twin = closed_twin(83, 8, seconds_ago=0.8, side=Side.SELL)
    read = LiveQuantity(8, NOW)
    assert settling_exits(waiting, [twin], read, LAG) == [twin]
    taken = exit_claim(twin)
    # Shown or not, the answer differs (8 or 0): wait. The old rule answered 8: a flip.
    assert exit_share(waiting, [], read.quantity) == 8
    assert exit_share(waiting, [], read.quantity, settling=taken) is None
    # A read that already shows the fill (flat): 0 whichever way: nothing to wait for.
    assert exit_share(waiting, [], 0, settling=taken) == 0
    # A read sent a lag after the close shows it: believed as it is.
    later = LiveQuantity(0, NOW + timedelta(seconds=LAG))
    assert settling_exits(waiting, [twin], later, LAG) == []


def test_a_twins_fill_the_order_stream_counted_is_in_the_books_figure() -> None:
    waiting = prot(2, 8, Status.TRIGGERED)
    twin = closed_twin(1, 8, seconds_ago=0.5)
    by_tag = LiveQuantity(
        0, NOW - timedelta(seconds=30), {"S1": (twin.exit_tag, 5), "S2": (twin.exit_tag, 3)}
    )
    assert settling_exits(waiting, [twin], by_tag, LAG) == []
    by_order = LiveQuantity(0, NOW - timedelta(seconds=30), {"X1": (None, 8)})  # a fired broker stop's order
    assert settling_exits(waiting, [twin], by_order, LAG) == []
    part = LiveQuantity(0, NOW - timedelta(seconds=30), {"S1": (twin.exit_tag, 5)})  # one slice of two
    assert settling_exits(waiting, [twin], part, LAG) == [twin]


def test_what_a_settling_twin_takes_only_matters_where_it_changes_the_share() -> None:
    waiting = prot(2, 10, Status.TRIGGERED)
    # 100 held before the twin sold 8: 100 or 92, this exit's 10 either way: it goes at once.
    assert exit_share(waiting, [], 100, settling=8) == 10
    # 15 or 7: it waits rather than sell 10 of 7 (a flip) or 7 of 15 (too little).
    assert exit_share(waiting, [], 15, settling=8) is None
    # An older twin still OPEN takes its share first, on either figure.
    older = prot(1, 5)
    assert exit_share(waiting, [older], 30, settling=8) == 10
    assert exit_share(waiting, [older], 18, settling=8) is None


def test_only_twins_closed_by_an_exit_of_the_same_position_settle() -> None:
    waiting = prot(9, 8, Status.TRIGGERED)
    read = LiveQuantity(8, NOW)
    others = [
        closed_twin(1, 8, 0.5, reason="external", exit_order_id=None, exit_quantity=None),  # no exit sent
        closed_twin(2, 8, 0.5, side=Side.SELL),  # another position
        closed_twin(3, 8, 0.5, account_id=2),
        replace(closed_twin(4, 8, 0.5), status=Status.REMOVED),
        closed_twin(5, 8, LAG + 0.1),  # long enough ago
    ]
    assert settling_exits(waiting, others, read, LAG) == []
    fired = closed_twin(6, 8, 0.5, reason="safety stop", exit_quantity=None)  # a broker stop fired
    assert settling_exits(waiting, [fired], read, LAG) == [fired] and exit_claim(fired) == 8


def test_a_twin_that_closed_before_a_new_entry_was_placed_takes_nothing_from_it() -> None:
    """Found by the tick-to-exit bench: stopped out, re-entered at once and stopped out again within the
    lag, the new entry's exit waited ~5 s for a read that showed the first exit's fill. Its own entry's
    shares came after that fill: a read shows both or neither, and min(protected, live) never flips."""
    twin = closed_twin(83, 8, seconds_ago=1.0)
    reentry = prot(84, 8, Status.TRIGGERED, entry_order_id="E84", created_at=NOW - timedelta(seconds=0.5))
    read = LiveQuantity(8, NOW)
    assert settling_exits(reentry, [twin], read, LAG) == []
    # Created before the twin closed (the two shared the position), or adopted from a read (which may
    # have shown the twin's shares): the twin still settles.
    shared = replace(reentry, created_at=NOW - timedelta(seconds=2.0))
    adopted = replace(reentry, entry_order_id=None)
    assert settling_exits(shared, [twin], read, LAG) == [twin]
    assert settling_exits(adopted, [twin], read, LAG) == [twin]
