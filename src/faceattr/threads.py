"""CPU threads for jobs that share a machine (``dvc exp run --queue`` with several workers, an
alignment beside a training).

torch starts one OpenMP thread per core in every process, and an OpenMP thread that waits for
work spins. Two jobs on two cores then fight over four spinning threads: measured with
``bench/bench_contention.py`` on the 2-core development machine, an alignment beside a training
ran at 0.17x its speed alone, two trainings at 0.21x each. With waiting threads asleep
(``OMP_WAIT_POLICY=PASSIVE``, which ``import faceattr`` sets unless the user chose a policy) the
worst pair kept 0.54x, for 2 % of a lone job's speed.

``FACEATTR_JOBS=N`` (optional) tells each job that N jobs share the machine: ``configure`` then
gives a stage's torch its share of the cores (0.61x worst pair in the same bench).
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
