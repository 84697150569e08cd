"""Typed settings with defaults, kept in the database's settings table; paths via platformdirs.

Secrets never live here: API secrets and access tokens are in the OS keyring (services/secrets.py).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from trailstop_gui.models.domain import (
    SAFETY_BUFFER_PERCENT,
    SAFETY_BUFFER_TICKS,
    Product,
    RuleKind,
    TrailRule,
    check_safety_buffer,
    require_positive,
    require_positive_int,
)
from trailstop_gui.models.square_off import parse_exit_time
from trailstop_gui.models.store import ProtectionStore

log = logging.getLogger("trailstop.settings")

APP_NAME = "TrailStop"
SETTINGS_KEY = "app_settings"
SETTINGS_SCHEMA = 1


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Where the database and logs live: the platform's user-data folder unless overridden.

    Owner-only: the files in it are 0600 already, but a readable folder still tells other users of the
    machine which files exist and when they change. A folder the trader named is created owner-only
    and otherwise left as it is.
    """
    if override:
        return _private_folder(Path(override), ours=False)
    return _private_folder(Path(platformdirs.user_data_dir(APP_NAME, APP_NAME)), ours=True)


def _private_folder(path: Path, *, ours: bool) -> Path:
    existed = path.is_dir()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (ours or not existed) and os.name == "posix":
        os.chmod(path, 0o700)  # also one an earlier version made 0755
    return path


def database_path(directory: Path) -> Path:
    return directory / "trailstop.db"


def log_dir(directory: Path) -> Path:
    return _private_folder(directory / "logs", ours=True)


@dataclass(frozen=True)
class Settings:
    """What a trader can set once instead of on every order."""

    schema: int = SETTINGS_SCHEMA
    default_rule_kind: str = RuleKind.PERCENT.value
    default_rule_value: float = 2.0
    default_product: str = Product.MIS.value
    default_quantity: int = 1
    confirm_orders: bool = True
    confirm_exit_all: bool = True
    close_to_tray: bool = True
    # Kite's market_protection for MARKET/SL-M exits: -1 lets the broker choose, 1-100 is a percent cap.
    market_protection: int = -1
    theme: str = "system"
    notifications: bool = True  # desktop notifications for stops, exits, feed and login problems
    sound: bool = True  # a sound with the notifications that need attention
    # The broker-held safety stop: the default for new protections (the order form can change it per order).
    safety_stop: bool = False
    safety_buffer_percent: float = SAFETY_BUFFER_PERCENT  # behind the trailed stop: this percent ...
    safety_buffer_ticks: int = SAFETY_BUFFER_TICKS  # ... or this many ticks, whichever is larger
    # A GTT's LIMIT order (Kite CNC/NRML) is priced this far through its trigger, to fill in a fast market.
    safety_limit_percent: float = 2.0
    # Auto-protect (--auto-protect) also covers delivery holdings, not only today's positions.
    auto_protect_holdings: bool = False
    # Every MIS protection without its own square-off time exits at this time (HH:MM IST); "" is off.
    # Suggested: 15:15, before the brokers' own MIS auto square-off (which charges a fee per order).
    mis_square_off: str = ""

    def __post_init__(self) -> None:
        TrailRule(
            RuleKind(_check_choice(self.default_rule_kind, RuleKind, "default rule kind")),
            self.default_rule_value,
        )
        _check_choice(self.default_product, Product, "default product")
        require_positive_int(self.default_quantity, "default quantity")
        require_positive(self.default_rule_value, "default rule value")
        if not (self.market_protection == -1 or 1 <= self.market_protection <= 100):
            raise ValueError(f"market protection: -1 (automatic) or 1 to 100, got {self.market_protection!r}")
        if self.theme not in ("system", "light", "dark"):
            raise ValueError(f"theme: system, light or dark, got {self.theme!r}")
        check_safety_buffer(self.safety_buffer_percent, self.safety_buffer_ticks)
        if self.mis_square_off:
            parse_exit_time(self.mis_square_off, "MIS square-off time")
        if not 0 < self.safety_limit_percent <= 10:
            raise ValueError(f"safety limit percent: above 0, at most 10, got {self.safety_limit_percent!r}")
        for name in (
            "confirm_orders",
            "confirm_exit_all",
            "close_to_tray",
            "notifications",
            "sound",
            "safety_stop",
            "auto_protect_holdings",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name.replace('_', ' ')}: must be true or false")

    @property
    def default_rule(self) -> TrailRule:
        return TrailRule(RuleKind(self.default_rule_kind), self.default_rule_value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        """Build settings from stored values; a bad or unknown value falls back to its default, logged."""
        settings = cls()
        if not isinstance(data, dict):
            log.warning("settings: stored value is not a mapping; using defaults")
            return settings
        known = {f.name: f for f in fields(cls)}
        for key, value in data.items():
            if key not in known or key == "schema":
                if key != "schema":
                    log.warning("settings: ignoring unknown setting %r", key)
                continue
            try:
                settings = replace(settings, **{key: _coerce(known[key].type, value)})
            except (TypeError, ValueError) as exc:
                log.warning("settings: keeping the default for %s (%s)", key, exc)
        return settings


def _check_choice(value: str, enum_cls: type[RuleKind] | type[Product], field_name: str) -> str:
    allowed = [m.value for m in enum_cls]
    if value not in allowed:
        raise ValueError(f"{field_name}: one of {', '.join(allowed)}, got {value!r}")
    return value


def _coerce(type_name: object, value: Any) -> Any:
    if type_name in ("bool", bool):
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if type_name in ("int", int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        return value
    if type_name in ("float", float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    return value


def load_settings(store: ProtectionStore) -> Settings:
    try:
        stored = store.settings_repo.get(SETTINGS_KEY, {})
    except ValueError:
        # Not JSON (edited by hand, or damaged): start with the defaults rather than not start at all.
        log.warning("settings: the stored settings cannot be read; using defaults")
        stored = {}
    return Settings.from_dict(stored)


def save_settings(store: ProtectionStore, settings: Settings) -> None:
    store.settings_repo.set(SETTINGS_KEY, settings.to_dict())
