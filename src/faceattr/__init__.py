"""faceattr: face attributes (gender, age, landmarks) with identity pretraining and multi-task learning.

The library behind the DVC stages in ``stages/``; nothing runs at import but one environment
default: where jobs share the machine (``FACEATTR_JOBS`` set), OpenMP threads that wait for work
spin only briefly (``GOMP_SPINCOUNT=10000``) unless the user chose a wait policy or spin count.
Alone, a training keeps libgomp's own spin: the short one made the 32-px default's training
steps 7 % slower (0.93x, ``bench/bench_openmp_spin.py``). The align stage and ``faceattr predict``,
whose many small MTCNN operations run faster with it, ask for it with :func:`short_openmp_spin`.
``faceattr.threads`` says why; it must be set before torch loads OpenMP, and every faceattr entry
point imports faceattr first.
"""

import os as _os


def short_openmp_spin() -> None:
    """Let waiting OpenMP threads spin briefly, then sleep (``GOMP_SPINCOUNT=10000``), unless the
    user chose a wait policy or spin count. Only before torch is loaded; afterwards it changes nothing."""
    if "OMP_WAIT_POLICY" not in _os.environ:
        _os.environ.setdefault("GOMP_SPINCOUNT", "10000")


if _os.environ.get("FACEATTR_JOBS"):
    short_openmp_spin()

__version__ = "0.1.0"
