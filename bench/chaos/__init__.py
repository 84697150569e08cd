"""Chaos run: the real headless app against the simulator, under random faults, SIGKILLs and restarts.

One simulator runs in this process; ``python -m trailstop_gui --headless --broker both --auto-protect
percent:2`` runs in a subprocess. Positions are opened "outside the app" with the brokers' official clients
(kiteconnect, upstox_client): both brokers, long and short, MIS, CNC and NRML. The app adopts each one,
the price trails it (up for a long, down for a short), then crosses the stop and stays beyond it. Meanwhile
the simulator injects every kind of fault (dropped and stalled sockets, HTTP 5xx, 429s and timeouts,
malformed replies, rejected orders, token expiry, fill delays, partial fills, lost replies, a lagging order
book, freeze quantities (exits sliced), 429s with a Retry-After, price gaps)
and the app is killed with SIGKILL (sometimes SIGTERM) at random moments, some of them just after a stop
was crossed, and restarted. The demo account's delivery holdings (INFY, ITC, SBIN on NSE and BSE, TCS) are
protected too (``--auto-protect-holdings``) and traded outside the app while their protections watch them:
part sold, all sold, or part sold and bought back, then the stop crossed. Some positions are protected
twice (a second protection of the whole position written while the app is down, as a Protect that
raced auto-protect stores it): the two share the position. NIFTY options are traded too (the exchange
has no SL-M for them).

After every run the invariants are checked against the simulator's own order log and trades:

- at most one exit per protection (the slices of one sliced order, and the rest of a partly filled exit
  placed again, are that one exit); no exit larger than the open position, none that flips it; the exits
  of every protection sharing one position never more than it holds;
- no order that nobody asked for: every order at the broker is the trader's own (a tag the harness sent),
  a protection's exit or safety stop (its tag, on its instrument), a slice of those, or the order a
  protection's GTT fired into;
- a sale from holdings is never adopted as a short and nothing ever buys delivery shares back; a holding
  whose stop was crossed ends with nothing protected left unsold, one sold outside closes with no order;
- every position that crossed its stop is flat within 10 s of the app being up with a working feed
  (the time the app was down, or its feed was dropped, stalled or waiting for a login, does not count);
- no stop ever moved against the trader (the journal's stop_moved events);
- the journal and the database agree (status chain, stops, exit order ids), and both agree with the broker.

``python -m bench.chaos`` (``make chaos``) runs the long version, then a soak: one app instance for minutes
with no kills (the runs restart it every few seconds, which would hide a fault that needs uptime to show);
tests/reliability/test_chaos.py runs a short one. Each run prints its figures; the last line is
``N violations``.

Where each part is:

- config.py: `ChaosConfig`, the campaign's settings, and what every part shares;
- workload.py, positions.py, holdings.py: what the trader does (positions opened outside and worked to
  flat, holdings traded outside, the baskets file, the prices pushed);
- faults.py: what is injected, and when; kills.py: when the app is killed (SIGKILL, SIGTERM) and restarted;
- app.py: the app in its subprocess; feed.py: when its feeds were working; trader.py: the official clients;
- run.py: one run and the campaign (`run_chaos`); soak.py: the endurance run;
- checker.py: the invariants, against the simulator's records; report.py: the figures and what is printed;
- cli.py: the command line.
"""

from bench.chaos.app import AppProcess
from bench.chaos.checker import PROTECTION_COLUMNS, Checker, SimOrder, SimTrade
from bench.chaos.cli import main
from bench.chaos.config import ChaosConfig
from bench.chaos.feed import FeedTracker
from bench.chaos.report import ChaosReport, RunReport, Violation, describe
from bench.chaos.run import Run, run_chaos
from bench.chaos.trader import OutsideTrader

__all__ = [
    "PROTECTION_COLUMNS",
    "AppProcess",
    "ChaosConfig",
    "ChaosReport",
    "Checker",
    "FeedTracker",
    "OutsideTrader",
    "Run",
    "RunReport",
    "SimOrder",
    "SimTrade",
    "Violation",
    "describe",
    "main",
    "run_chaos",
]
