"""faceattr: face attributes (gender, age, landmarks) with identity pretraining and multi-task learning.

The library behind the DVC stages in ``stages/``; nothing runs at import but one environment
default: ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it (``faceattr.threads`` says why; it
must be set before torch loads OpenMP, and every faceattr entry point imports faceattr first).
"""

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
