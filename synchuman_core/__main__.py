"""``python -m synchuman_core``: the headless runner (see :mod:`synchuman_core.cli`)."""

import sys

from .cli import main

sys.exit(main())
