from ._ui import *  # noqa: F403
