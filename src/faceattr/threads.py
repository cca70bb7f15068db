"""CPU threads for jobs that share a machine (``dvc exp run --queue`` with several workers).

torch starts one OpenMP thread per core in every process, and an OpenMP thread that waits for
work spins. Two jobs on two cores then fight over four spinning threads. ``configure`` makes
waiting threads sleep (``OMP_WAIT_POLICY=PASSIVE``, read when torch loads OpenMP, so it must run
before torch is imported) and gives each of ``FACEATTR_JOBS`` jobs its share of the cores.
"""

from __future__ import annotations

import os


def configure() -> int:
    """Apply the thread settings; returns the intra-op threads this process uses."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    jobs = max(1, int(os.environ.get("FACEATTR_JOBS", "1")))
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // jobs)
    torch.set_num_threads(threads)
    return threads
