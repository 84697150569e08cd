"""The broker's Kite Connect sample payloads, kept in the repository (tests/data/kite-mocks, see its README).

Every test reads them through these functions. A missing file fails the test and names the file: a skip
would let a clone without the data pass while checking nothing.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

KITE_MOCKS = Path(__file__).resolve().parent / "data" / "kite-mocks"


def kite_mock_path(name: str) -> Path:
    """The sample ``name`` (e.g. ``"orders.json"``); fails the test when it is not in the repository."""
    path = KITE_MOCKS / name
    if not path.is_file():
        pytest.fail(f"Kite sample payload {name!r} is missing: expected {path}", pytrace=False)
    return path


def kite_mock_bytes(name: str) -> bytes:
    return kite_mock_path(name).read_bytes()


def kite_mock_text(name: str) -> str:
    return kite_mock_path(name).read_text(encoding="utf-8")


def kite_mock_json(name: str) -> Any:
    return json.loads(kite_mock_text(name))


def kite_mock_packet(name: str) -> bytes:
    """A ticker packet (``"ticker_full.packet"``): stored base64-encoded, returned as its raw bytes."""
    return base64.b64decode(kite_mock_text(name).strip(), validate=True)
