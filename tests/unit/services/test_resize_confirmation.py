"""ResizeConfirmation: a changed quantity applies only when a read some seconds after the first agrees."""

from __future__ import annotations

from datetime import datetime

from trailstop_gui.models.domain import Product, Protection, Side, Status, TrailRule
from trailstop_gui.services.resize_confirmation import Change, ResizeConfirmation

CONFIRM = 2.0


def protection(pid: int = 1, filled: int = 30, account_id: int = 7) -> Protection:
    return Protection(
        id=pid,
        account_id=account_id,
        broker="kite",
        instrument="408065",
        symbol="INFY",
        exchange="NSE",
        side=Side.BUY,
        product=Product.MIS,
        quantity=30,
        filled_quantity=filled,
        entry_price=1500.0,
        tick_size=0.05,
        rule=TrailRule.percent(2.0),
        stop=1470.0,
        peak=1500.0,
        status=Status.OPEN,
        exit_tag="TSX1",
        created_at=datetime(2026, 12, 1, 10, 0),
    )


def test_a_first_sighting_is_remembered_and_a_read_some_seconds_on_confirms_it() -> None:
    resizes = ResizeConfirmation(CONFIRM)
    p = protection()
    assert not resizes.seen(p, Change.SHRINK, 100.0)
    assert resizes.pending(p.id) == [Change.SHRINK]
    assert not resizes.seen(p, Change.SHRINK, 101.9)  # too soon: the endpoint may still trail
    assert resizes.confirmable_at([p.id]) == 102.0
    assert resizes.seen(p, Change.SHRINK, 102.0)
    assert resizes.pending(p.id) == [] and resizes.confirmable_at([p.id]) is None


def test_a_read_without_the_change_forgets_it() -> None:
    resizes = ResizeConfirmation(CONFIRM)
    p = protection()
    resizes.seen(p, Change.SHRINK, 100.0)
    resizes.unchanged(p.id, Change.SHRINK)
    assert not resizes.seen(p, Change.SHRINK, 105.0)  # a first sighting again


def test_a_changed_covered_quantity_starts_over() -> None:
    resizes = ResizeConfirmation(CONFIRM)
    resizes.seen(protection(filled=20), Change.SHRINK, 100.0)
    assert not resizes.seen(protection(filled=30), Change.SHRINK, 105.0)  # an entry fill came meanwhile
    assert resizes.seen(protection(filled=30), Change.SHRINK, 107.0)


def test_directions_are_kept_apart() -> None:
    resizes = ResizeConfirmation(CONFIRM)
    p = protection()
    resizes.seen(p, Change.GROW, 100.0)
    resizes.unchanged(p.id, Change.SHRINK)  # a read that shows no shrink says nothing of a growth
    assert not resizes.seen(p, Change.SHRINK, 103.0)
    assert resizes.seen(p, Change.GROW, 103.0)


def test_remember_keeps_an_older_sighting() -> None:
    resizes = ResizeConfirmation(CONFIRM)
    p = protection()
    resizes.seen(p, Change.SHRINK, 100.0)
    resizes.remember(p, Change.SHRINK, 101.0)  # a flat read: a shrink too, first seen earlier
    assert resizes.confirmable_at([p.id]) == 102.0
    resizes.remember(protection(pid=2), Change.SHRINK, 101.0)
    assert resizes.confirmable_at([2]) == 103.0


def test_only_the_accounts_open_protections_keep_their_sightings() -> None:
    resizes = ResizeConfirmation(CONFIRM)
    resizes.seen(protection(pid=1), Change.SHRINK, 100.0)
    resizes.seen(protection(pid=2), Change.GROW, 100.0)
    resizes.seen(protection(pid=3, account_id=8), Change.SHRINK, 100.0)
    resizes.keep_only(7, {2})
    assert [resizes.pending(pid) for pid in (1, 2, 3)] == [[], [Change.GROW], [Change.SHRINK]]
