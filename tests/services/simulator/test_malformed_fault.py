"""The ``malformed`` fault: its spec, and what it does to a reply body (over HTTP: tests/services/brokers)."""

from __future__ import annotations

import random

import pytest

from trailstop_gui.simulator.faults import MALFORMED, FaultError, Faults, RequestFault, malform, parse_fault


def test_spec_defaults_and_refusals() -> None:
    spec = parse_fault({"fault": "malformed", "path": "/portfolio/positions"})
    assert (spec["mode"], spec["field"], spec["count"], spec["phase"]) == (
        "null_list",
        "quantity",
        1,
        "after",
    )
    with pytest.raises(FaultError, match="`path` is required"):
        parse_fault({"fault": "malformed"})
    with pytest.raises(FaultError, match="`mode` must be one of"):
        parse_fault({"fault": "malformed", "path": "/orders", "mode": "garbled"})
    with pytest.raises(FaultError, match="`value` must be a string"):
        parse_fault({"fault": "malformed", "path": "/orders", "mode": "string_number", "value": 3})


def _fault(**body: object) -> RequestFault:
    faults = Faults(random.Random(1))
    faults.add(parse_fault({"fault": "malformed", "path": "/x", **body}))
    fault = faults.take_request_fault(MALFORMED, "GET", "/x")
    assert fault is not None and faults.take_request_fault(MALFORMED, "GET", "/x") is None  # once
    return fault


def test_null_lists_for_both_brokers_shapes() -> None:
    kite = {"status": "success", "data": {"net": [{"quantity": 3}], "day": [{"quantity": 3}]}}
    assert malform(kite, _fault()) == {"status": "success", "data": {"net": None, "day": None}}
    upstox = {"status": "success", "data": [{"quantity": 3}]}
    assert malform(upstox, _fault()) == {"status": "success", "data": None}
    assert kite["data"]["net"] == [{"quantity": 3}]  # type: ignore[index]  # the original is untouched


def test_missing_fields_and_strings_for_numbers() -> None:
    body = {"status": "success", "data": {"net": [{"quantity": 3, "product": "MIS"}]}}
    missing = malform(body, _fault(mode="missing_field"))
    assert missing["data"] == {"net": [{"product": "MIS"}]}
    as_text = malform(body, _fault(mode="string_number"))
    assert as_text["data"] == {"net": [{"quantity": "3", "product": "MIS"}]}
    garbage = malform(body, _fault(mode="string_number", value="three"))
    assert garbage["data"] == {"net": [{"quantity": "three", "product": "MIS"}]}
    one_order = {"status": "success", "data": {"order_id": "1", "quantity": 5}}
    assert malform(one_order, _fault(mode="missing_field"))["data"] == {"order_id": "1"}
