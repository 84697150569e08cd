"""`python -m trailstop_gui`: the same as `trailstop-gui`."""

from trailstop_gui.app import main

raise SystemExit(main())
