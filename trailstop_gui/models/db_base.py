"""The one SQLite database every table is bound to, and the base class of those tables.

Its own module so that table modules (``db.py``, ``paper_db.py``) import it and ``db.py`` can list every
table without importing anything back.
"""

from __future__ import annotations

import peewee as pw

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
