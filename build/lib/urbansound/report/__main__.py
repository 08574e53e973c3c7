"""``python -m urbansound.report``: see :mod:`urbansound.report`."""

import sys

from urbansound.report import main

sys.exit(main())
