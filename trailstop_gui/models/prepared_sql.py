"""The exit path's SQL written once: whole protection rows read, a row updated, journal events appended.

Peewee builds a statement's SQL anew on every call, and that is most of each statement on the protection
table: one row read by id took 0.45 ms of the interpreter (SQLite's part a few dozen microseconds), a
journal event's insert about as much. On the tick path the feed thread commits TRIGGERED while the exit
job reads the position's rows, and every millisecond of either holds the interpreter the other waits for
(bench/tick_to_exit_stages.py). These run the same statements with their text built once, and convert
values both ways with the very converters peewee's own statements use (``Field.python_value`` and
``Field.db_value``), so a row reads and writes the same either way (tests/unit/models/test_prepared_sql.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import peewee as pw

from trailstop_gui.models import db

_FIELDS = tuple(db.ProtectionRow._meta.sorted_fields)
COLUMNS = tuple(f.column_name for f in _FIELDS)
_CONVERTERS = tuple(f.python_value for f in _FIELDS)
_TABLE = db.ProtectionRow._meta.table_name
_SELECT = "SELECT {} FROM {} ".format(", ".join(f'"{c}"' for c in COLUMNS), f'"{_TABLE}"')


class ProtectionRowValues(NamedTuple):
    """One protection row as its column names (``account_id`` for the account), values as peewee's."""

    id: int
    account_id: int
    broker: str
    instrument: str
    symbol: str
    exchange: str
    side: str
    product: str
    quantity: int
    filled_quantity: int
    entry_order_id: str | None
    entry_price: float | None
    tick_size: float
    rule: str
    stop: float | None
    peak: float | None
    status: str
    reason: str
    paused: bool
    exit_tag: str | None
    exit_order_id: str | None
    exit_price: float | None
    exit_quantity: int | None
    created_at: Any
    updated_at: Any
    closed_at: Any
    safety_enabled: bool
    safety_buffer_percent: float
    safety_buffer_ticks: int
    safety_state: str
    safety_kind: str
    safety_order_id: str | None
    safety_level: float | None
    safety_price: float | None
    safety_quantity: int | None
    safety_modifications: int


if ProtectionRowValues._fields != COLUMNS:  # a column added to db.ProtectionRow must be added here too
    raise RuntimeError(f"prepared_sql: the table's columns are {COLUMNS}")


def _execute(database: pw.Database, sql: str, params: Sequence[object]) -> Any:
    return database.execute_sql(sql, tuple(params))  # type: ignore[no-untyped-call]


def select(database: pw.Database, where: str, params: Sequence[object]) -> list[ProtectionRowValues]:
    """Rows of ``SELECT <every column> FROM protection WHERE <where>`` (``?`` placeholders), in order."""
    cursor = _execute(database, _SELECT + "WHERE " + where, params)
    return [
        ProtectionRowValues._make([convert(value) for convert, value in zip(_CONVERTERS, raw, strict=True)])
        for raw in cursor.fetchall()
    ]


def by_id(database: pw.Database, protection_id: int) -> ProtectionRowValues | None:
    rows = select(database, '"id" = ?', (protection_id,))
    return rows[0] if rows else None


def like_pattern(suffix: str) -> str:
    """``LIKE ? ESCAPE '\\'`` pattern for values ending in ``suffix``, its wildcards taken literally
    (as peewee's ``endswith``, whose LIKE is SQLite's: case-insensitive for ASCII)."""
    escaped = suffix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    return "%" + escaped


def db_value(field: pw.Field, value: object) -> object:
    """``value`` as peewee passes it to SQLite for ``field`` (a datetime stays one for sqlite3 to adapt)."""
    return field.db_value(value)  # type: ignore[no-untyped-call]


_FIELD_BY_NAME: dict[str, pw.Field] = dict(db.ProtectionRow._meta.fields)


def update(
    database: pw.Database, protection_id: int, values: Mapping[str, Any], *, status: str | None
) -> int:
    """``UPDATE protection SET <values by field name>`` on one row (and only while its status is
    ``status``, when given): the number of rows changed, 0 or 1."""
    fields = [_FIELD_BY_NAME[name] for name in values]
    assignments = ", ".join(f'"{f.column_name}" = ?' for f in fields)
    params = [db_value(f, v) for f, v in zip(fields, values.values(), strict=True)]
    where = '"id" = ?'
    params.append(protection_id)
    if status is not None:
        where += ' AND "status" = ?'
        params.append(status)
    cursor = _execute(database, f'UPDATE "{_TABLE}" SET {assignments} WHERE {where}', params)
    return int(cursor.rowcount)


_EVENT = db.JournalEvent._meta
_EVENT_FIELDS = tuple(f for f in _EVENT.sorted_fields if f.name != "id")
_INSERT_EVENT = 'INSERT INTO "{}" ({}) VALUES ({})'.format(
    _EVENT.table_name,
    ", ".join(f'"{f.column_name}"' for f in _EVENT_FIELDS),
    ", ".join("?" * len(_EVENT_FIELDS)),
)


def insert_event(
    database: pw.Database,
    *,
    protection_id: int | None,
    account_id: int | None,
    kind: str,
    old: str,
    new: str,
    price: float | None,
    message: str,
) -> None:
    """Append one journal event, stamped now (as ``JournalEvent.create`` with the same values)."""
    values = {
        "ts": datetime.now(),
        "protection": protection_id,
        "account_id": account_id,
        "kind": kind,
        "old": old,
        "new": new,
        "price": price,
        "message": message,
    }
    _execute(database, _INSERT_EVENT, [db_value(f, values[f.name]) for f in _EVENT_FIELDS])
