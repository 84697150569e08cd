"""`python -m bench`: every benchmark, one line per figure.

Each benchmark runs in its own process, so that threads, Qt objects and simulators of one cannot
disturb the figures of the next.
"""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "bench.engine",
    "bench.baskets",
    "bench.decoders",
    "bench.feed_throughput",
    "bench.tick_to_exit",
    "bench.exit_burst",
    "bench.gui",
    "bench.journal",
    "bench.safety",
    "bench.dist",
]


def main() -> int:
    failed = []
    for name in MODULES:
        if subprocess.run([sys.executable, "-m", name], check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
