"""Fixtures for tests that talk to the loopback simulator.

``simulator``: a fresh simulator on a background thread (seed 7, prices move only when told, MARKET orders
fill on the next loop turn); ``kite_client``: the official KiteConnect, logged in through the HTML form;
``kite_login``: log in again (another session); ``wait_until``: poll a condition with a deadline;
``kite_mock``: load a sample from tests/data/kite-mocks; ``assert_kite_shape``: compare keys and types.
``far_limit_buy(kite, **overrides)`` (a function to import): a limit buy of 1 SBIN at 500, far below the
market, so that it rests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kiteconnect import KiteConnect

from tests.kite_mocks import kite_mock_json
from trailstop_gui.simulator.login_flow import kite_request_token
from trailstop_gui.simulator.runner import SimulatorHandle, start_simulator


def _wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def far_limit_buy(kite: KiteConnect, **overrides: Any) -> str:
    """Place a LIMIT buy of 1 SBIN MIS at 500.00 (it rests: the market is far above); returns its id."""
    spec: dict[str, Any] = {
        "variety": "regular",
        "exchange": "NSE",
        "tradingsymbol": "SBIN",
        "transaction_type": "BUY",
        "quantity": 1,
        "product": "MIS",
        "order_type": "LIMIT",
        "price": 500.0,
    }
    spec.update(overrides)
    return str(kite.place_order(**spec))


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    return _wait_until


@pytest.fixture
def simulator() -> Iterator[SimulatorHandle]:
    with start_simulator(seed=7, auto=False, fill_delay=0.0) as handle:
        yield handle


def _login_kite(handle: SimulatorHandle, timeout: float | None = None) -> KiteConnect:
    kite = handle.info["kite"]
    client = KiteConnect(kite["api_key"], root=kite["api_root"], timeout=timeout)
    client.generate_session(kite_request_token(handle.info), kite["api_secret"])
    return client


@pytest.fixture
def kite_login() -> Callable[..., KiteConnect]:
    """``kite_login(handle, timeout=None)``: a new KiteConnect session for the demo user."""
    return _login_kite


@pytest.fixture
def kite_client(simulator: SimulatorHandle) -> KiteConnect:
    return _login_kite(simulator)


# -- comparing shapes with the broker's sample payloads -------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"  # JSON has one number type: 72 and 72.5 are the same kind
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "dict"
    raise TypeError(f"not a JSON value: {value!r}")


# A null stands for an absent string or object (tag, exchange_order_id, result...), never for a number.
_NULLABLE = {"null", "string", "dict"}


def _template(samples: list[Any]) -> tuple[Any, set[str]]:
    """Merge a list's sample elements: every key with its first non-null value, and the keys all share."""
    dicts = [s for s in samples if isinstance(s, dict)]
    if not dicts:
        return (samples[0] if samples else None), set()
    merged: dict[str, Any] = {}
    for d in dicts:
        for key, value in d.items():
            if merged.get(key) is None:
                merged[key] = value
    required = set(dicts[0]).intersection(*dicts[1:])
    return merged, required


def _shape_problems(
    actual: Any,
    sample: Any,
    path: str = "$",
    required: set[str] | None = None,
    extra: frozenset[str] = frozenset(),
) -> list[str]:
    """Differences between ``actual`` and ``sample``: missing or unknown keys, mismatched value kinds."""
    ka, ks = _kind(actual), _kind(sample)
    if ka != ks:
        if ka == "null" and ks in _NULLABLE or ks == "null" and ka in _NULLABLE:
            return []
        return [f"{path}: {ka} where the sample has {ks}"]
    problems: list[str] = []
    if ka == "dict":
        need = set(sample) if required is None else required
        allowed = set(sample) | extra
        problems += [f"{path}: missing key {k!r}" for k in sorted(need - set(actual))]
        problems += [f"{path}: unknown key {k!r}" for k in sorted(set(actual) - allowed)]
        for key in sorted(set(actual) & set(sample)):
            value = sample[key]
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                template, req = _template(value)
                if not isinstance(actual[key], list):
                    problems.append(f"{path}.{key}: {_kind(actual[key])} where the sample has list")
                    continue
                for i, item in enumerate(actual[key]):
                    problems += _shape_problems(item, template, f"{path}.{key}[{i}]", req, extra)
            else:
                problems += _shape_problems(actual[key], value, f"{path}.{key}")
    elif ka == "list" and sample:
        template, req = _template(sample)
        for i, item in enumerate(actual):
            problems += _shape_problems(
                item, template, f"{path}[{i}]", req if isinstance(template, dict) else None, extra
            )
    return problems


def _assert_shape(actual: Any, sample: Any, extra: frozenset[str] = frozenset()) -> None:
    problems = _shape_problems(actual, sample, extra=extra)
    assert not problems, "\n".join(problems)


@pytest.fixture
def kite_mock() -> Callable[[str], Any]:
    """``kite_mock("orders.json")``: a sample payload as the broker published it."""
    return kite_mock_json


@pytest.fixture
def assert_kite_shape() -> Callable[..., None]:
    """``assert_kite_shape(actual, sample, extra=frozenset())``: same keys and value kinds as ``sample``."""
    return _assert_shape
