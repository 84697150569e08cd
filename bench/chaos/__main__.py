"""``python -m bench.chaos``: see bench/chaos/__init__.py for what runs and what is checked."""

import sys

from bench.chaos.cli import main

sys.exit(main())
