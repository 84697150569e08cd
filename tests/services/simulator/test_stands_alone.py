"""The simulator judges the app, so it must run on none of the app's code: not its codecs, login or types."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trailstop_gui.simulator

_PROBE = """
import importlib, pkgutil, sys
import trailstop_gui.simulator as sim
for module in pkgutil.walk_packages(sim.__path__, sim.__name__ + "."):
    importlib.import_module(module.name)
print("\\n".join(sorted(name for name in sys.modules if name.startswith(("trailstop_gui.services",
      "trailstop_gui.models", "trailstop_gui.views")))))
"""


def test_importing_every_simulator_module_loads_nothing_of_the_app() -> None:
    # A fresh interpreter: this test process has long imported the app. import-linter sees the static
    # imports; this also catches one made at run time.
    root = Path(trailstop_gui.simulator.__file__).parents[2]
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, cwd=root, check=True
    )
    assert result.stdout.split() == []
