"""``python -m urbansound.report``, the console script ``urbansound-report``: see
:mod:`urbansound.report.cli`."""

from urbansound.report.cli import main

raise SystemExit(main())
