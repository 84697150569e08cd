"""Peewee tables on SQLite (WAL), the schema version and its migrations.

No secrets are ever stored here: accounts keep the broker, user and API key (which is public: it travels in
every login URL); the API secret and access tokens live in the OS keyring.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import peewee as pw

SCHEMA_VERSION = 2

# Deferred: init_db() points it at a file. Peewee keeps one connection per thread, which is what the
# threads design asks for (GUI, feed and executor threads each use their own connection).
# IMMEDIATE: a transaction takes the write lock when it begins. A deferred one that reads, then writes,
# fails at once with "database is locked" when another thread writes in between; this one waits instead.
database = pw.SqliteDatabase(None, lock_type="IMMEDIATE")

PRAGMAS = {
    "journal_mode": "wal",
    # FULL: a committed transition survives a power cut, not just a crash of the app. Stop moves are
    # batched (write-behind), so the extra fsync is paid a few times a second at most.
    "synchronous": 2,
    "foreign_keys": 1,
    "busy_timeout": 5000,
}


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Meta(BaseModel):
    """Key/value facts about this database: schema version, install salt for exit tags."""

    key = pw.CharField(primary_key=True)
    value = pw.TextField()


class Account(BaseModel):
    id = pw.AutoField()
    broker = pw.CharField()
    label = pw.CharField()
    user_id = pw.CharField(default="")
    api_key = pw.CharField(default="")
    redirect_url = pw.CharField(default="")
    api_root = pw.CharField(default="")
    # "live" sends orders to the broker; "paper" fills them locally at the broker's live prices.
    mode = pw.CharField(default="live")
    created_at = pw.DateTimeField(default=datetime.now)


class Instrument(BaseModel):
    id = pw.AutoField()
    broker = pw.CharField()
    token = pw.CharField()
    symbol = pw.CharField()
    exchange = pw.CharField()
    name = pw.CharField(default="")
    tick_size = pw.FloatField()
    lot_size = pw.IntegerField(default=1)
    segment = pw.CharField(default="")
    instrument_type = pw.CharField(default="")
    expiry = pw.CharField(default="")
    updated_at = pw.DateTimeField(default=datetime.now)

    class Meta:
        indexes = ((("broker", "token"), True), (("broker", "symbol"), False))


class ProtectionRow(BaseModel):
    id = pw.AutoField()
    account = pw.ForeignKeyField(Account, backref="protections", on_delete="RESTRICT")
    account_id: int  # peewee's accessor for the foreign key's raw value
    broker = pw.CharField()
    instrument = pw.CharField()
    symbol = pw.CharField()
    exchange = pw.CharField()
    side = pw.CharField()
    product = pw.CharField()
    quantity = pw.IntegerField()
    filled_quantity = pw.IntegerField(default=0)
    entry_order_id = pw.CharField(null=True)
    entry_price = pw.FloatField(null=True)
    tick_size = pw.FloatField()
    rule = pw.TextField()
    stop = pw.FloatField(null=True)
    peak = pw.FloatField(null=True)
    status = pw.CharField(index=True)
    reason = pw.CharField(default="")
    paused = pw.BooleanField(default=False)
    exit_tag = pw.CharField(null=True, unique=True)
    exit_order_id = pw.CharField(null=True)
    exit_price = pw.FloatField(null=True)
    exit_quantity = pw.IntegerField(null=True)
    created_at = pw.DateTimeField(default=datetime.now)
    updated_at = pw.DateTimeField(default=datetime.now)
    closed_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "protection"


class JournalEvent(BaseModel):
    id = pw.AutoField()
    ts = pw.DateTimeField(default=datetime.now, index=True)
    protection = pw.ForeignKeyField(ProtectionRow, null=True, backref="events", on_delete="CASCADE")
    protection_id: int | None
    account_id = pw.IntegerField(null=True)
    kind = pw.CharField(index=True)
    old = pw.CharField(default="")
    new = pw.CharField(default="")
    price = pw.FloatField(null=True)
    message = pw.TextField(default="")


class Setting(BaseModel):
    key = pw.CharField(primary_key=True)
    value = pw.TextField()


MODELS: list[type[BaseModel]] = [Meta, Account, Instrument, ProtectionRow, JournalEvent, Setting]

Migration = Callable[[pw.SqliteDatabase], None]


def all_models() -> list[type[BaseModel]]:
    """Every table, the paper broker's included (its module imports this one, hence the late import)."""
    from trailstop_gui.models.paper_db import PAPER_MODELS

    return [*MODELS, *PAPER_MODELS]


def _v2_paper_trading(database: pw.SqliteDatabase) -> None:
    """Version 2: accounts get a mode (live or paper), and the paper broker gets its tables."""
    columns = {c.name for c in database.get_columns("account")}
    if "mode" not in columns:
        database.execute_sql(  # type: ignore[no-untyped-call]
            "ALTER TABLE account ADD COLUMN mode VARCHAR(255) NOT NULL DEFAULT 'live'"
        )
    database.create_tables(all_models(), safe=True)


# version -> the step that brings a database from version-1 to version. Append, never edit.
MIGRATIONS: dict[int, Migration] = {2: _v2_paper_trading}


class DatabaseError(RuntimeError):
    """The database file cannot be used (corrupt, locked, or from a newer TrailStop)."""


def _create_owner_only(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 before SQLite opens it; SQLite gives its -wal and -shm files the same permissions.
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def _meta_get(key: str) -> str | None:
    row = Meta.get_or_none(Meta.key == key)
    return None if row is None else str(row.value)


def _meta_set(key: str, value: str) -> None:
    Meta.insert(key=key, value=value).on_conflict_replace().execute()


def init_db(
    path: str | os.PathLike[str], migrations: dict[int, Migration] | None = None
) -> pw.SqliteDatabase:
    """Open (creating if needed) the database at ``path``, migrate it to SCHEMA_VERSION, and return it."""
    path = Path(path)
    if not database.is_closed():
        database.close()
    _create_owner_only(path)
    database.init(str(path), pragmas=PRAGMAS, check_same_thread=False)
    steps = {**MIGRATIONS, **(migrations or {})}
    target = max([SCHEMA_VERSION, *steps])
    try:
        database.connect(reuse_if_open=True)
        with database.atomic():
            fresh = not database.table_exists("meta")
            database.create_tables(all_models() if fresh else [Meta], safe=True)
            current = int(_meta_get("schema_version") or 0)
            if current == 0:
                # A new file starts at the current schema: migrations are only for files that predate it.
                current = SCHEMA_VERSION
                _meta_set("schema_version", str(current))
            if _meta_get("tag_salt") is None:
                _meta_set("tag_salt", _new_salt())
            if current > target:
                raise DatabaseError(
                    f"{path}: database schema {current} is newer than this TrailStop understands ({target})"
                )
            for version in range(current + 1, target + 1):
                steps[version](database)
                _meta_set("schema_version", str(version))
    except (pw.DatabaseError, sqlite3.DatabaseError) as exc:
        database.close()
        raise DatabaseError(f"{path}: cannot open the database ({exc})") from exc
    return database


def schema_version() -> int:
    return int(_meta_get("schema_version") or 0)


def tag_salt() -> str:
    """A random prefix for exit tags, fixed per database file.

    Tags derive from protection ids; if a trader deletes the database, ids start again at 1, and without
    the salt a new exit tag could match an order the broker already holds from earlier that day.
    """
    salt = _meta_get("tag_salt")
    if salt is None:
        raise DatabaseError("database not initialised")
    return salt


def _new_salt() -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(4))
