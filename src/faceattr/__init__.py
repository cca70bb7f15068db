"""faceattr: face attributes (gender, age, landmarks) with identity pretraining and multi-task learning.

The library behind the DVC stages in ``stages/``; nothing runs at import but one environment
default: OpenMP threads that wait for work spin only briefly (``GOMP_SPINCOUNT=10000``) unless the
user chose a wait policy or spin count. ``faceattr.threads`` says why; it must be set before torch
loads OpenMP, and every faceattr entry point imports faceattr first.
"""

import os as _os

if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__version__ = "0.1.0"
