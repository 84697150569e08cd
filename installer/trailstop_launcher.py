"""The frozen app's entry point: the same ``main()`` as ``trailstop-gui`` and ``python -m trailstop_gui``."""

from trailstop_gui.app import main

raise SystemExit(main())
