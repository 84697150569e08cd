from dataclasses import replace
import pytest
from tests.services.test_safety_stop import SafetyRig, enter, price, trail_to, POLICY, Side, Product, TrailRule, wait_until, store  # noqa

@pytest.mark.parametrize("n", range(10))
def test_dbg(simulator, store, qtbot, n):
    simulator.set_price("NSE:INFY", 1500.0, bid=1499.95, ask=1500.05)
    rig = SafetyRig(simulator, store, "upstox", qtbot)
    pid = None
    try:
        rig.service.safety.policy = replace(POLICY, min_interval=1.0)
        pid = enter(rig, Side.BUY, Product.CNC, TrailRule.percent(2.0))
        first = rig.wait_held_at_target(pid)
        p = rig.store.get(pid)
        price(rig, 1503.0)
        wait_until(lambda: (rig.store.get(pid).stop or 0) > p.stop, what="the stop to trail", qtbot=rig.qtbot)
        assert rig.service.safety.wait_idle()
        second = trail_to(rig, pid, 1530.0)
        assert second > first, (rig.store.get(pid).stop, rig.store.get(pid).safety_target)
    except BaseException:
        for e in rig.store.events(protection_id=pid):
            print(e.ts.time(), e.kind, e.old, e.new, e.price, e.message)
        raise
    finally:
        rig.close()
