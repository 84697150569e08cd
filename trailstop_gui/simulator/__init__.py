"""Loopback exchange speaking the Kite Connect (and Upstox) protocols, for demo mode and tests.

``start_simulator()`` (in :mod:`trailstop_gui.simulator.runner`) runs it on a background thread;
``trailstop-sim`` (:mod:`trailstop_gui.simulator.cli`) runs it as a process. See README.md here.
"""
