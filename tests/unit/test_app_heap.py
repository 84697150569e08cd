"""settle_heap: start-up garbage is collected, what is left is frozen out of later full collections."""

from __future__ import annotations

import gc
import weakref

from trailstop_gui.app import release_heap, settle_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def test_settle_heap_collects_garbage_first_then_freezes_the_rest() -> None:
    garbage = Node()
    gone = weakref.ref(garbage)
    del garbage
    kept = Node()
    try:
        settle_heap()
        assert gone() is None  # unreachable at start-up: collected, not frozen for the app's life
        assert gc.get_freeze_count() > 0
        # What stays is out of every generation the collector walks.
        assert not any(o is kept for o in gc.get_objects())
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_release_heap_unfreezes_and_collects_what_start_up_kept() -> None:
    kept = Node()
    settle_heap()
    held = weakref.ref(kept)
    del kept  # now unreachable, but frozen: no collection frees it
    gc.collect()
    assert held() is not None
    release_heap()
    assert gc.get_freeze_count() == 0
    assert held() is None  # at shutdown it is collected again (a connection in such a cycle closes)
