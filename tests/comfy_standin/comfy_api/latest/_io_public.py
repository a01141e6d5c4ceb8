from ._io import *  # noqa: F403
from ._ui import *  # noqa: F403
