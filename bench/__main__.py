"""`python -m bench`: every benchmark, one line per figure."""

from __future__ import annotations

import importlib

# Each module's main() prints its own lines; a missing module is a benchmark not written yet.
MODULES = ["bench.engine", "bench.decoders"]

for name in MODULES:
    importlib.import_module(name).main()
