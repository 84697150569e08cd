"""A keyring backend for the secrets audit's app subprocess (``PYTHON_KEYRING_BACKEND``).

It plays the OS keyring: values live in a JSON file the test names (``TRAILSTOP_AUDIT_KEYRING``), outside
the data folder, and every write is recorded there, so the audit can prove that the secrets went to the
keyring, and nowhere else.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import keyring.backend
import keyring.errors

_lock = threading.Lock()


def _path() -> Path:
    return Path(os.environ["TRAILSTOP_AUDIT_KEYRING"])


def _load() -> dict[str, Any]:
    path = _path()
    if not path.exists():
        return {"values": {}, "writes": [], "deletes": []}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _save(data: dict[str, Any]) -> None:
    path = _path()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


class FileKeyring(keyring.backend.KeyringBackend):
    """The keyring as the app sees it; the test reads the file afterwards."""

    priority = 1

    def get_password(self, service: str, username: str) -> str | None:
        with _lock:
            value = _load()["values"].get(f"{service}/{username}")
        return None if value is None else str(value)

    def set_password(self, service: str, username: str, password: str) -> None:
        with _lock:
            data = _load()
            data["values"][f"{service}/{username}"] = password
            data["writes"].append([service, username, password])
            _save(data)

    def delete_password(self, service: str, username: str) -> None:
        with _lock:
            data = _load()
            if data["values"].pop(f"{service}/{username}", None) is None:
                raise keyring.errors.PasswordDeleteError(username)
            data["deletes"].append([service, username])
            _save(data)
