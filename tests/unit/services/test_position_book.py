"""The live position book: fills once per order however updates come, corrections, and when it vouches."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tests.factories import unsaved_protection
from trailstop_gui.models.domain import Product, Protection, Side
from trailstop_gui.services.brokers.base import KITE_CAPABILITIES, UPSTOX_CAPABILITIES, Holding, Position
from trailstop_gui.services.brokers.feed_loop import OrderUpdate
from trailstop_gui.services.brokers.kite import order_from_kite
from trailstop_gui.services.brokers.upstox import order_from_upstox
from trailstop_gui.services.position_book import POSITIONS_LAG, SENT_GRACE, PositionBook


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def prot(quantity: int = 10, **changes: Any) -> Protection:
    return unsaved_protection(quantity, **changes)


def pos(
    quantity: int, product: Product = Product.MIS, symbol: str = "INFY", exchange: str = "NSE"
) -> Position:
    return Position(
        symbol=symbol,
        exchange=exchange,
        instrument=408065 if symbol == "INFY" else 1,
        quote_key=f"{exchange}:{symbol}",
        quantity=quantity,
        average_price=1500.0,
        product=product,
        raw_product=product.value,
    )


def update(
    order_id: str,
    status: str,
    filled: int,
    *,
    side: str = "BUY",
    quantity: int = 10,
    product: str = "MIS",
    symbol: str = "INFY",
    order_type: str = "MARKET",
) -> OrderUpdate:
    raw = {
        "order_id": order_id,
        "status": status,
        "transaction_type": side,
        "order_type": order_type,
        "product": product,
        "tradingsymbol": symbol,
        "exchange": "NSE",
        "instrument_token": 408065,
        "quantity": quantity,
        "filled_quantity": filled,
        "pending_quantity": quantity - filled,
        "average_price": 1500.0 if filled else 0,
    }
    return OrderUpdate(order_id=order_id, status=status, filled_quantity=filled, raw=raw)


def fresh_book(
    positions: list[Position], holdings: list[Holding] | None = None
) -> tuple[PositionBook, Clock]:
    """A Kite book with its stream up (for longer than a positions read may lag) and two agreeing reads."""
    clock = Clock()
    book = PositionBook(KITE_CAPABILITIES, order_from_kite, clock=clock)
    book.stream_up()
    clock.now += POSITIONS_LAG + 1
    book.correct(positions, holdings, clock.now)
    clock.now += 1
    book.correct(positions, holdings, clock.now)
    return book, clock


def test_a_fill_counts_once_however_often_and_in_whatever_order_its_updates_come() -> None:
    book, _ = fresh_book([pos(10)])
    assert book.quantity(prot()) == 10
    # The trader sells 6 on Kite web: a partial fill, the final state, then the same updates again and
    # an older OPEN arriving after COMPLETE.
    for u in [
        update("w1", "OPEN", 2, side="SELL", quantity=6, order_type="LIMIT"),
        update("w1", "COMPLETE", 6, side="SELL", quantity=6, order_type="LIMIT"),
        update("w1", "OPEN", 2, side="SELL", quantity=6, order_type="LIMIT"),
        update("w1", "COMPLETE", 6, side="SELL", quantity=6, order_type="LIMIT"),
        update("w1", "OPEN", 0, side="SELL", quantity=6, order_type="LIMIT"),
    ]:
        book.apply(u)
    assert book.quantity(prot()) == 4


def test_complete_before_open_is_final_and_not_in_flight() -> None:
    book, _ = fresh_book([pos(10)])
    book.apply(update("w2", "COMPLETE", 3, side="SELL", quantity=3))
    book.apply(update("w2", "OPEN PENDING", 0, side="SELL", quantity=3))
    assert book.state().in_flight == ()
    assert book.quantity(prot()) == 7


def test_a_figure_names_the_fills_the_stream_counted_in_it_and_the_age_of_its_read() -> None:
    """What an exit needs to tell whether the figure shows a twin's exit that filled a moment ago
    (positions.shows_exit): that exit's orders by id and tag, and how old the correcting read is."""
    book, clock = fresh_book([pos(10)])
    book.apply(replace(update("x1", "COMPLETE", 4, side="SELL", quantity=4), tag="TSTWIN1"))
    book.apply(update("i1", "COMPLETE", 2, side="SELL", quantity=2, symbol="ITC"))  # another stock
    clock.now += 2.5
    figure = book.figure(prot())
    assert figure is not None
    assert (figure.quantity, figure.read_age) == (6, 2.5)
    assert dict(figure.fills) == {"x1": ("TSTWIN1", 4)}


def test_an_order_on_its_way_on_the_instrument_sends_the_exit_to_rest() -> None:
    book, _ = fresh_book([pos(10)])
    book.apply(update("w3", "OPEN PENDING", 0, side="SELL", quantity=4))
    assert book.quantity(prot()) is None  # its fill may come any moment
    assert book.quantity(prot(symbol="ITC", instrument="424961")) == 0  # another instrument: known
    book.apply(update("w3", "COMPLETE", 4, side="SELL", quantity=4))
    assert book.quantity(prot()) == 6


def test_a_resting_limit_order_does_not_spoil_the_book() -> None:
    book, _ = fresh_book([pos(10)])
    book.apply(update("t1", "OPEN", 0, side="SELL", quantity=10, order_type="LIMIT"))
    assert book.quantity(prot()) == 10
    book.apply(update("t1", "TRIGGER PENDING", 0, side="SELL", quantity=10, order_type="SL-M"))
    assert book.quantity(prot()) == 10


def test_never_corrected_or_stream_down_means_not_known() -> None:
    clock = Clock()
    book = PositionBook(KITE_CAPABILITIES, order_from_kite, clock=clock)
    assert book.quantity(prot()) is None  # never corrected
    book.stream_up()
    clock.now += 1
    book.correct([pos(10)], None, clock.now)
    # Sent within a lag of the stream coming up: a fill made just before it may be in neither.
    assert book.quantity(prot()) is None
    clock.now += POSITIONS_LAG
    book.correct([pos(20)], None, clock.now)
    assert book.quantity(prot()) is None  # the reads disagree (a fill made before the stream came up)
    clock.now += 1
    book.correct([pos(20)], None, clock.now)
    assert book.quantity(prot(20)) == 20  # two reads agree, no fill on the stream meanwhile
    book.stream_down()
    assert book.quantity(prot()) is None
    clock.now += 1
    book.stream_up()
    assert book.quantity(prot()) is None  # updates sent while it was down are lost: a read first
    clock.now += 1
    book.correct([pos(20)], None, clock.now)
    assert book.quantity(prot(20)) is None  # too soon after the stream came back
    clock.now += POSITIONS_LAG
    book.correct([pos(20)], None, clock.now)
    assert book.quantity(prot(20)) == 20


def test_a_read_sent_before_the_stream_came_back_does_not_count() -> None:
    book, clock = fresh_book([pos(10)])
    book.stream_down()
    sent = clock.now + 1
    clock.now += 2
    book.stream_up()
    book.correct([pos(10)], None, sent)
    assert book.quantity(prot()) is None


def test_a_lagging_read_does_not_undo_a_fill_the_stream_saw() -> None:
    book, clock = fresh_book([pos(10)])
    book.apply(update("w4", "COMPLETE", 10, side="SELL"))
    assert book.quantity(prot()) == 0
    for _ in range(2):  # positions lag the fill, twice in a row: two agreeing reads prove nothing here
        clock.now += 1
        book.correct([pos(10)], None, clock.now)
        assert book.quantity(prot()) is None  # REST and stream disagree: not vouched for
        assert book.recent_fills_bound(prot()) == 0  # but an exit never sells more than the stream left
    clock.now += 1
    book.correct([], None, clock.now)  # the read caught up
    assert book.quantity(prot()) == 0


def test_a_read_ahead_of_the_stream_never_counts_a_fill_twice() -> None:
    book, clock = fresh_book([pos(10)])
    clock.now += 1
    book.correct([pos(20)], None, clock.now)  # a buy of 10: REST shows it, its update is still on its way
    assert book.quantity(prot(20)) is None
    book.apply(update("w5", "COMPLETE", 10))
    assert book.quantity(prot(20)) is None  # not 30
    clock.now += 1
    book.correct([pos(20)], None, clock.now)
    assert book.quantity(prot(20)) == 20


def test_a_change_the_stream_never_reports_is_taken_once_two_reads_agree() -> None:
    book, clock = fresh_book([pos(10)])
    clock.now += 1
    book.correct([pos(4)], None, clock.now)  # 6 converted to CNC outside the app: no order update for it
    assert book.quantity(prot()) is None
    assert book.recent_fills_bound(prot()) is None  # no fill on the stream to explain it: the read holds
    clock.now += 1
    book.correct([pos(4)], None, clock.now)
    assert book.quantity(prot()) == 4


def test_a_new_position_from_the_stream_is_known_at_once_after_corrections() -> None:
    book, _ = fresh_book([])
    book.apply(update("w6", "COMPLETE", 5))
    assert book.quantity(prot(5)) == 5


def test_our_exit_not_yet_reported_keeps_the_position_unknown_until_reported() -> None:
    book, clock = fresh_book([pos(10)])
    book.exit_sent(["x1"], prot())
    assert book.quantity(prot()) is None
    assert book.state().in_flight == ("x1",)
    book.apply(update("x1", "COMPLETE", 10, side="SELL"))
    assert book.quantity(prot()) == 0
    # One the stream never reports is left to the reads after SENT_GRACE.
    book.exit_sent(["x2"], prot())
    clock.now += SENT_GRACE + 1
    book.correct([], None, clock.now)
    assert book.quantity(prot()) == 0


def test_a_lost_reply_or_an_unreadable_update_means_rest_until_the_next_read() -> None:
    book, clock = fresh_book([pos(10)])
    book.suspect(prot())
    assert book.quantity(prot()) is None
    clock.now += 1
    book.correct([pos(10)], None, clock.now)
    assert book.quantity(prot()) == 10
    book.apply(OrderUpdate(order_id="bad", status="COMPLETE", raw={"order_id": "bad", "status": "COMPLETE"}))
    assert book.quantity(prot()) is None


def test_a_short_is_counted_for_a_short_and_never_flipped() -> None:
    book, _ = fresh_book([pos(-10)])
    short = prot(side=Side.SELL)
    assert book.quantity(short) == 10
    assert book.quantity(prot()) == 0
    book.apply(update("w7", "COMPLETE", 15))  # bought back 15 outside: now long 5
    assert book.quantity(short) == 0
    assert book.quantity(prot()) == 5


def holding(quantity: int, used: int = 0) -> Holding:
    return Holding(
        symbol="INFY",
        exchange="NSE",
        instrument=408065,
        quote_key="NSE:INFY",
        isin="INE009A01021",
        quantity=quantity,
        t1_quantity=0,
        average_price=1400.0,
        used_quantity=used,
    )


def test_delivery_sale_outside_the_app_is_a_negative_cnc_net() -> None:
    book, _ = fresh_book([], [holding(10)])
    cnc = prot(product=Product.CNC)
    assert book.quantity(cnc) == 10
    book.apply(update("d1", "COMPLETE", 4, side="SELL", quantity=4, product="CNC"))
    assert book.quantity(cnc) == 6
    book.apply(update("d2", "COMPLETE", 2, quantity=2, product="CNC"))  # a same-day buy-back
    assert book.quantity(cnc) == 8


def test_delivery_is_not_known_without_a_holdings_read() -> None:
    book, _ = fresh_book([pos(10)])
    assert book.quantity(prot(product=Product.CNC)) is None


def upstox_update(order_id: str, filled: int, side: str, product: str = "D") -> OrderUpdate:
    raw = {
        "update_type": "order",
        "order_id": order_id,
        "status": "complete",
        "transaction_type": side,
        "order_type": "MARKET",
        "product": product,
        "trading_symbol": "INFY",
        "exchange": "NSE",
        "instrument_token": "NSE_EQ|INE009A01021",
        "quantity": filled,
        "filled_quantity": filled,
        "average_price": 1500.0,
    }
    return OrderUpdate(order_id=order_id, status="complete", filled_quantity=filled, raw=raw)


def test_upstox_delivery_sale_counts_as_used_and_a_buy_back_does_not_give_it_back() -> None:
    clock = Clock()
    book = PositionBook(UPSTOX_CAPABILITIES, order_from_upstox, clock=clock)
    book.stream_up()
    held = replace(holding(10), instrument="NSE_EQ|INE009A01021", quote_key="NSE_EQ|INE009A01021")
    clock.now += POSITIONS_LAG
    for _ in range(2):
        clock.now += 1
        book.correct([], [held], clock.now)
    cnc = prot(product=Product.CNC, broker="upstox", instrument="NSE_EQ|INE009A01021")
    assert book.quantity(cnc) == 10
    book.apply(upstox_update("u1", 4, "SELL"))
    book.apply(upstox_update("u2", 2, "BUY"))
    # held 10, net -2, used 4: min(10 - 2, 10 - 4 + 0) = 6, as a REST read would give
    assert book.quantity(cnc) == 6


def test_a_working_delivery_sale_blocks_its_shares_so_the_book_does_not_vouch() -> None:
    book, _ = fresh_book([], [holding(10)])
    cnc = prot(product=Product.CNC)
    book.apply(update("d3", "OPEN", 0, side="SELL", quantity=4, product="CNC", order_type="LIMIT"))
    assert book.quantity(cnc) is None  # the order book decides (services/holdings.blocked_by_working_sales)
    assert book.quantity(prot()) == 0  # an intraday protection is not blocked by it
    book.apply(update("d3", "CANCELLED", 0, side="SELL", quantity=4, product="CNC", order_type="LIMIT"))
    assert book.quantity(cnc) == 10


def test_a_row_first_seen_before_any_read_is_accepted_once_the_stream_is_quiet_for_a_lag() -> None:
    clock = Clock()
    book = PositionBook(KITE_CAPABILITIES, order_from_kite, clock=clock)
    book.stream_up()
    book.apply(update("b1", "COMPLETE", 1))  # before any read: nothing is known of this row
    clock.now += 1
    book.correct([pos(1)], None, clock.now)
    clock.now += 1
    book.correct([pos(1)], None, clock.now)
    assert book.quantity(prot(1)) is None  # the reads agree, but could both trail b1
    clock.now += POSITIONS_LAG
    book.correct([pos(1)], None, clock.now)
    assert book.quantity(prot(1)) == 1


def test_reads_that_trail_every_fill_are_never_accepted_while_fills_keep_coming() -> None:
    # Reads one fill behind give the same offset after every fill: were they believed, the book would be a
    # share off for good (on sales: one more to sell than there is, a flip).
    clock = Clock()
    book = PositionBook(KITE_CAPABILITIES, order_from_kite, clock=clock)
    book.stream_up()
    book.apply(update("b1", "COMPLETE", 1))
    clock.now += POSITIONS_LAG + 1
    book.correct([], None, clock.now)  # trails b1
    for n in range(2, 5):
        clock.now += 1
        book.apply(update(f"b{n}", "COMPLETE", 1))
        clock.now += 1
        book.correct([pos(n - 1)], None, clock.now)  # always one fill behind
        assert book.quantity(prot(n)) is None


def test_a_fill_while_the_read_was_on_its_way_leaves_the_row_as_it_was() -> None:
    # The reconcile's read left before the exit filled and came back after the stream reported the fill:
    # it was taken for a disagreement, and with fills every second the row never settled again.
    book, clock = fresh_book([pos(1)])
    sent = clock.now + 1
    clock.now += 2
    book.apply(update("x9", "COMPLETE", 1, side="SELL", quantity=1))
    book.correct([pos(1)], None, sent)  # does not show the fill: it cannot
    assert book.quantity(prot()) == 0


def test_its_views_of_the_days_orders_follow_every_update() -> None:
    """The book keeps the orders not final yet and the filled ones by symbol (an exit reads those, not
    every order of the day): an order seen before its fill shows its fill once it comes, one that ends
    is no longer on its way, and a late update of an ended order puts nothing back."""
    book, _ = fresh_book([pos(10)], [holding(5)])
    for n in range(50):  # a busy day on other stocks: filled and final
        book.apply(update(f"o{n}", "COMPLETE", 1, symbol="ITC", quantity=1))
    book.apply(replace(update("e1", "OPEN PENDING", 0, side="SELL", quantity=4), tag="TSTWIN1"))
    assert book.figure(prot()) is None
    assert book.state().in_flight == ("e1",)
    book.apply(replace(update("e1", "OPEN", 3, side="SELL", quantity=4, order_type="LIMIT"), tag="TSTWIN1"))
    figure = book.figure(prot())
    assert figure is not None and figure.quantity == 7  # resting with a fill: it no longer spoils the book
    assert dict(figure.fills) == {"e1": ("TSTWIN1", 3)}
    book.apply(replace(update("e1", "COMPLETE", 4, side="SELL", quantity=4), tag="TSTWIN1"))
    book.apply(replace(update("e1", "OPEN PENDING", 0, side="SELL", quantity=4), tag="TSTWIN1"))  # late
    figure = book.figure(prot())
    assert figure is not None and (figure.quantity, dict(figure.fills)) == (6, {"e1": ("TSTWIN1", 4)})
    assert book.state().in_flight == ()
    cnc = prot(product=Product.CNC)
    assert book.quantity(cnc) == 5
    book.apply(update("d1", "OPEN", 0, side="SELL", quantity=2, product="CNC", order_type="LIMIT"))
    assert book.quantity(cnc) is None  # a working delivery sale, resting: still open, so it blocks
    book.apply(update("d1", "COMPLETE", 2, side="SELL", quantity=2, product="CNC", order_type="LIMIT"))
    assert book.quantity(cnc) == 3
