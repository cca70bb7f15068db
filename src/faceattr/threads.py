"""CPU threads for jobs that share a machine (``dvc exp run --queue`` with several workers, an
alignment beside a training).

torch starts one OpenMP thread per core in every process, and an OpenMP thread that waits for
work spins. Two jobs on two cores then fight over four spinning threads. Measured with
``bench/bench_contention.py`` on the 2-core development machine (each job's throughput beside
the other, against alone):

* torch's default: an alignment beside a training 0.30x, two trainings 0.23x each;
* ``GOMP_SPINCOUNT=10000`` (a short spin, then sleep), which ``import faceattr`` sets unless the
  user chose a wait policy or spin count: alignment beside training 0.47x, two alignments 0.51x,
  and alone alignment runs 1.45x faster (its many small operations no longer wait on spinning
  threads) and training as fast; two trainings still 0.26x;
* ``FACEATTR_JOBS=2``: each stage's torch gets cores // 2 threads (``configure``, called by every
  stage): every pair at least 0.58x.
* ``OMP_WAIT_POLICY=PASSIVE`` is fair too (0.60x) but makes a training alone 18-20 % slower.
"""

from __future__ import annotations

import os
import sys


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def configure() -> int | None:
    """With ``FACEATTR_JOBS`` set, cap torch's intra-op threads at cores // jobs (only where torch
    is already loaded: a stage that does not use torch never imports it for this). Returns the
    threads set, or None when nothing was changed."""
    raw = os.environ.get("FACEATTR_JOBS", "")
    if not raw or "torch" not in sys.modules:
        return None
    try:
        jobs = max(1, int(raw))
    except ValueError:
        raise ValueError(f"FACEATTR_JOBS must be a whole number of jobs, got '{raw}'") from None
    import torch

    threads = max(1, cores() // jobs)
    torch.set_num_threads(threads)
    return threads
