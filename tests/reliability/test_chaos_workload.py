"""The chaos workload is the seed's: two runs with one seed open the same positions, trade the same holdings
and inject the same faults, in the same order; another seed does not. (No app is started: the parts of a
run that draw from its random source are driven by hand.)

What the app does to the workload (fills, kills, the feed) still varies from run to run; what the harness
asks for does not, so a run that found a violation can be asked for again with its seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.chaos import ChaosConfig, Run

NOW = 1000.0


def workload(seed: int, folder: Path) -> tuple[list[Any], list[Any], list[Any], float]:
    folder.mkdir()
    run = Run(ChaosConfig(seed=seed, duration=60.0), 1, seed, folder, print)
    faults: list[dict[str, Any]] = []
    real = run.control

    def control(path: str, body: dict[str, Any] | None = None) -> Any:
        if path == "fault" and body is not None:
            faults.append(dict(body))
        return real(path, body)

    run.control = control  # type: ignore[method-assign]
    try:
        opened = [run.positions.new_episode(NOW) for _ in range(10)]
        run.holdings.new_plays(NOW)
        for ep in opened:  # the trader's orders done before the faults (a slow reply takes seconds)
            assert ep is None or ep.future is None or ep.future.result(timeout=30) == "placed"
        for _ in range(25):
            run.faults.inject()
        episodes = [(ep.broker, ep.symbol, ep.side, ep.product, ep.quantity, ep.tag) for ep in opened if ep]
        plays = [(p.broker, p.symbol, p.held, p.play, p.start_at) for p in run.holdings.plays]
        return episodes, plays, faults, run.rng.random()
    finally:
        run.pool.shutdown(wait=True)
        run.sim.stop()
        run.transcript.close()


def test_one_seed_gives_one_workload(tmp_path: Path) -> None:
    first = workload(20240, tmp_path / "a")
    again = workload(20240, tmp_path / "b")
    other = workload(20241, tmp_path / "c")
    episodes, plays, faults, _next = first
    assert len(episodes) == 10 and len(plays) == 8 and len(faults) >= 20
    assert again == first
    assert other[0] != episodes and other[2] != faults
