"""Settings: typed defaults, validation naming the field, tolerant loading of stored values."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from trailstop_gui.models.domain import TrailRule
from trailstop_gui.models.store import ProtectionStore
from trailstop_gui.settings import Settings, data_dir, load_settings, log_dir, save_settings


def test_defaults_are_valid() -> None:
    s = Settings()
    assert s.default_rule == TrailRule.percent(2.0)
    assert s.market_protection == -1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"default_rule_value": 0}, "rule value"),
        ({"default_rule_value": 150.0}, "rule value"),
        ({"default_rule_kind": "fibonacci"}, "default rule kind"),
        ({"default_product": "BO"}, "default product"),
        ({"default_quantity": 0}, "default quantity"),
        ({"market_protection": 0}, "market protection"),
        ({"theme": "neon"}, "theme"),
    ],
)
def test_bad_values_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Settings(**changes)  # type: ignore[arg-type]


def test_round_trip_through_store(tmp_path: Path) -> None:
    with ProtectionStore(tmp_path / "s.db") as store:
        assert load_settings(store) == Settings()
        custom = Settings(default_rule_kind="points", default_rule_value=5.0, default_product="CNC")
        save_settings(store, custom)
    with ProtectionStore(tmp_path / "s.db") as store:
        assert load_settings(store) == custom


def test_bad_stored_values_fall_back_per_field(caplog: pytest.LogCaptureFixture) -> None:
    loaded = Settings.from_dict(
        {"default_quantity": "lots", "theme": "dark", "unknown": 1, "default_rule_value": -3}
    )
    assert loaded.theme == "dark"  # the good value is kept
    assert loaded.default_quantity == Settings().default_quantity
    assert loaded.default_rule_value == Settings().default_rule_value
    assert "unknown" in caplog.text and "default quantity" in caplog.text.replace("_", " ")
    assert Settings.from_dict("garbage") == Settings()  # type: ignore[arg-type]


def test_data_dir_override_is_created(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "data"
    assert data_dir(target) == target and target.is_dir()


def test_data_and_log_folders_are_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = tmp_path / "platform" / "TrailStop"
    default.mkdir(parents=True, mode=0o755)  # as an earlier version left it
    monkeypatch.setattr("trailstop_gui.settings.platformdirs.user_data_dir", lambda *_a: str(default))
    assert data_dir() == default
    assert stat.S_IMODE(default.stat().st_mode) == 0o700
    assert stat.S_IMODE(log_dir(default).stat().st_mode) == 0o700
    new = data_dir(tmp_path / "named")  # created by us: owner-only
    assert stat.S_IMODE(new.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    data_dir(shared)  # the trader's own folder: left as it is
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
