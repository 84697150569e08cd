"""The systemd user units in installer/linux/ start what the README says, with options the app knows."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from trailstop_gui.app import build_parser

LINUX = Path(__file__).resolve().parents[2] / "installer" / "linux"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(LINUX / name, encoding="utf-8")
    return parser


def test_the_headless_unit_runs_trailstop_headless_with_known_options() -> None:
    service = unit("trailstop-headless.service")
    program, *args = shlex.split(service["Service"]["ExecStart"].replace("%h", "/home/u"))
    assert program.endswith("/trailstop")
    parsed = build_parser().parse_args(args)
    assert parsed.headless and parsed.data_dir == "/home/u/.local/share/TrailStop"
    assert service["Service"]["KillSignal"] == "SIGTERM"  # a clean shutdown keeps protections armed
    assert "2" in service["Service"]["RestartPreventExitStatus"].split()  # an unusable database: no loop
    assert service["Install"]["WantedBy"] == "default.target"  # a user unit


def test_the_route_tunnel_listens_on_loopback_only() -> None:
    service = unit("trailstop-route-tunnel.service")
    args = shlex.split(service["Service"]["ExecStart"])
    assert args[:2] == ["/usr/bin/ssh", "-N"]
    assert args[args.index("-D") + 1] == "127.0.0.1:1080"
