"""``python -m synchuman_core.io download [FOLDER]`` / ``check [FOLDER]`` (see :mod:`.download`)."""

from .download import main

raise SystemExit(main())
