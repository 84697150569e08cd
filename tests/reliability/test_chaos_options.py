"""The chaos harness's command line: baskets are in the campaign unless turned off."""

from __future__ import annotations

import pytest

import bench.chaos.cli as cli
from bench.chaos import ChaosConfig, ChaosReport


@pytest.mark.parametrize(
    ("argv", "baskets"),
    [
        ([], True),
        (["--no-baskets"], False),
        (["--baskets"], True),
        (["--safety-stop", "--no-baskets"], False),
    ],
)
def test_baskets_are_on_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], baskets: bool
) -> None:
    seen: list[ChaosConfig] = []

    def run(config: ChaosConfig) -> ChaosReport:
        seen.append(config)
        return ChaosReport(config)

    monkeypatch.setattr(cli, "run_chaos", run)
    assert cli.main(["--runs", "1", *argv]) == 0
    (config,) = seen
    assert config.baskets is baskets
