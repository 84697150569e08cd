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

from trailstop_gui.models.db_base import PRAGMAS as PRAGMAS
from trailstop_gui.models.db_base import BaseModel as BaseModel
from trailstop_gui.models.db_base import database as database
from trailstop_gui.models.paper_db import PAPER_MODELS

SCHEMA_VERSION = 4


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
    # The broker-held safety stop (schema 3).
    safety_enabled = pw.BooleanField(default=False)
    safety_buffer_percent = pw.FloatField(default=1.0)
    safety_buffer_ticks = pw.IntegerField(default=5)
    safety_state = pw.CharField(default="off")
    safety_kind = pw.CharField(default="")
    safety_order_id = pw.CharField(null=True)
    safety_level = pw.FloatField(null=True)
    safety_price = pw.FloatField(null=True)
    safety_quantity = pw.IntegerField(null=True)
    safety_modifications = pw.IntegerField(default=0)

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


class TimedExitRow(BaseModel):
    """A protection's square-off time (schema 4): exited through its own exit path at ``at`` (IST, HH:MM)."""

    protection = pw.ForeignKeyField(ProtectionRow, primary_key=True, on_delete="CASCADE")
    protection_id: int
    at = pw.CharField()

    class Meta:
        table_name = "timed_exit"


class BasketRow(BaseModel):
    """A basket protection (schema 4): its members exit together on the basket's MTM rules."""

    id = pw.AutoField()
    account = pw.ForeignKeyField(Account, backref="baskets", on_delete="RESTRICT")
    account_id: int
    name = pw.CharField()
    rules = pw.TextField()  # BasketRules.to_dict() as JSON
    # "all": every live protection of the account joins; else a JSON list of [exchange, symbol] that join
    # as they are protected; explicit members are rows of basket_member either way.
    selectors = pw.TextField(default="[]")
    status = pw.CharField(index=True)  # ACTIVE -> TRIGGERED -> EXITED; ACTIVE -> REMOVED
    reason = pw.CharField(default="")
    best = pw.FloatField(null=True)
    lock = pw.FloatField(null=True)
    breach_mtm = pw.FloatField(null=True)
    square_off = pw.CharField(default="")  # HH:MM IST: the whole basket exits then; "" for none
    created_at = pw.DateTimeField(default=datetime.now)
    updated_at = pw.DateTimeField(default=datetime.now)
    closed_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "basket"


class BasketMemberRow(BaseModel):
    id = pw.AutoField()
    basket = pw.ForeignKeyField(BasketRow, backref="members", on_delete="CASCADE")
    basket_id: int
    protection = pw.ForeignKeyField(ProtectionRow, on_delete="CASCADE")
    protection_id: int

    class Meta:
        table_name = "basket_member"
        indexes = ((("basket", "protection"), True),)


class UnderlyingRow(BaseModel):
    """A protection that trails and triggers on another instrument's price (schema 4): NIFTY 50 for an
    option, say. Its stored stop and peak are then prices of that instrument; the exit stays the option's."""

    protection = pw.ForeignKeyField(ProtectionRow, primary_key=True, on_delete="CASCADE")
    protection_id: int
    instrument = pw.CharField()  # what the underlying's ticks carry (a Kite token, an Upstox key)
    symbol = pw.CharField()
    exchange = pw.CharField()
    view = pw.CharField()  # BUY: protects against the underlying falling; SELL: against it rising
    tick_size = pw.FloatField()
    reference = pw.FloatField()  # the underlying's price when the rule was set: its "entry"

    class Meta:
        table_name = "underlying_rule"


MODELS: list[type[BaseModel]] = [
    Meta,
    Account,
    Instrument,
    ProtectionRow,
    JournalEvent,
    Setting,
    TimedExitRow,
    BasketRow,
    BasketMemberRow,
    UnderlyingRow,
]

Migration = Callable[[pw.SqliteDatabase], None]


def all_models() -> list[type[BaseModel]]:
    """Every table, the paper broker's included."""
    return [*MODELS, *PAPER_MODELS]


def _v2_paper_trading(database: pw.SqliteDatabase) -> None:
    """Version 2: accounts get a mode (live or paper), and the paper broker gets its tables."""
    columns = {c.name for c in database.get_columns("account")}
    if "mode" not in columns:
        database.execute_sql(  # type: ignore[no-untyped-call]
            "ALTER TABLE account ADD COLUMN mode VARCHAR(255) NOT NULL DEFAULT 'live'"
        )
    database.create_tables(all_models(), safe=True)


# Version 3's columns with the types and defaults peewee gives them in a new file.
_V3_SAFETY_COLUMNS = (
    ("safety_enabled", "INTEGER NOT NULL DEFAULT 0"),
    ("safety_buffer_percent", "REAL NOT NULL DEFAULT 1.0"),
    ("safety_buffer_ticks", "INTEGER NOT NULL DEFAULT 5"),
    ("safety_state", "VARCHAR(255) NOT NULL DEFAULT 'off'"),
    ("safety_kind", "VARCHAR(255) NOT NULL DEFAULT ''"),
    ("safety_order_id", "VARCHAR(255)"),
    ("safety_level", "REAL"),
    ("safety_price", "REAL"),
    ("safety_quantity", "INTEGER"),
    ("safety_modifications", "INTEGER NOT NULL DEFAULT 0"),
)


def _v3_safety_stop(database: pw.SqliteDatabase) -> None:
    """Version 3: protections get a broker-held safety stop (off for every existing protection)."""
    columns = {c.name for c in database.get_columns("protection")}
    for name, definition in _V3_SAFETY_COLUMNS:
        if name not in columns:
            database.execute_sql(f"ALTER TABLE protection ADD COLUMN {name} {definition}")  # type: ignore[no-untyped-call]


def _v4_square_off_and_baskets(database: pw.SqliteDatabase) -> None:
    """Version 4: square-off times, baskets and stops on the underlying (tables of their own; nothing
    existing changes)."""
    database.create_tables([TimedExitRow, BasketRow, BasketMemberRow, UnderlyingRow], safe=True)


# version -> the step that brings a database from version-1 to version. Append, never edit.
MIGRATIONS: dict[int, Migration] = {2: _v2_paper_trading, 3: _v3_safety_stop, 4: _v4_square_off_and_baskets}


class DatabaseError(RuntimeError):
    """The database file cannot be used (corrupt, locked, or from a newer TrailStop).

    The message is written for the trader. ``backup`` is where a damaged file was moved (None otherwise);
    ``locked`` says another program holds the file (nothing was changed: try again once it is closed).
    """

    def __init__(self, message: str, *, backup: Path | None = None, locked: bool = False) -> None:
        super().__init__(message)
        self.backup = backup
        self.locked = locked


# SQLite's words for a file that is not (or no longer) a readable database, and for one another program holds.
_CORRUPT_WORDS = ("file is not a database", "malformed", "corrupt", "integrity check failed")
_LOCKED_WORDS = ("database is locked", "database table is locked", "locking protocol")
# The files that belong to one database: a damaged one is moved aside with all of them.
_COMPANIONS = ("-wal", "-shm", "-journal")


def _check_before_opening(path: Path) -> None:
    """SQLite's structural check through a read-only connection, before anything may write to the file.

    A read-write connection can checkpoint a WAL into a damaged file, or delete the WAL, as it closes: a
    damaged database is judged first, so that the copy moved aside is exactly what was on disk. Raises
    sqlite3.DatabaseError for a damaged or locked file; a check that cannot run at all (no file yet, a
    folder SQLite cannot write its -shm into) is left to the normal open, which reports it.
    """
    if not path.exists() or path.stat().st_size == 0:
        return
    timeout = float(str(PRAGMAS["busy_timeout"])) / 1000
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout)
    except sqlite3.OperationalError:
        return
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except UnicodeDecodeError as exc:
        # SQLite's answer quoted the damaged bytes themselves (a flipped bit in a page of text), which Python
        # cannot decode: it is damage all the same (tests/unit/test_fuzz_database.py found it).
        raise sqlite3.DatabaseError(
            f"integrity check failed: unreadable text in the file ({exc.reason})"
        ) from exc
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if any(words in text for words in (*_LOCKED_WORDS, *_CORRUPT_WORDS)):
            raise
        return
    finally:
        conn.close()
    if rows != [("ok",)]:
        problems = "; ".join(str(row[0]) for row in rows[:3])
        raise sqlite3.DatabaseError(f"integrity check failed: {problems}")


def _move_aside(path: Path) -> Path:
    """Rename a damaged database (and its -wal/-shm/-journal) to ``<name>.corrupt-<timestamp>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while backup.exists():
        n += 1
        backup = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in _COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.rename(backup.with_name(backup.name + suffix))
    path.rename(backup)
    return backup


def _open_failed(path: Path, exc: Exception) -> DatabaseError:
    """The trader's message for a database that could not be opened; a damaged file is moved aside first."""
    text = str(exc)
    lowered = text.lower()
    if any(words in lowered for words in _LOCKED_WORDS):
        return DatabaseError(
            f"The database {path} is in use by another program (another TrailStop, or a database tool). "
            "Nothing was changed. Close that program and start TrailStop again.",
            locked=True,
        )
    if any(words in lowered for words in _CORRUPT_WORDS):
        try:
            backup = _move_aside(path)
        except OSError as move_error:
            return DatabaseError(
                f"The database {path} is damaged ({text}) and could not be moved aside ({move_error}). "
                "Move or copy it somewhere safe, then start TrailStop again."
            )
        return DatabaseError(
            f"The database {path} is damaged and cannot be read ({text}). It was moved to {backup} "
            "(nothing was deleted); the next start begins with an empty database. Your open positions at "
            "the broker are not protected until you protect them again; keep the backup for support.",
            backup=backup,
        )
    return DatabaseError(f"{path}: cannot open the database ({text})")


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
    try:
        _check_before_opening(path)
    except sqlite3.DatabaseError as exc:
        raise _open_failed(path, exc) from exc
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
    except DatabaseError:
        database.close()
        raise
    except (pw.DatabaseError, sqlite3.DatabaseError) as exc:
        database.close()
        raise _open_failed(path, exc) from exc
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
