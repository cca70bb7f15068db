"""CPU threads for jobs that share a machine (``dvc exp run --queue`` with several workers, an
alignment beside a training).

torch starts one OpenMP thread per core in every process, and an OpenMP thread that waits for
work spins. Two jobs on two cores then fight over four spinning threads. Measured with
``bench/bench_contention.py`` on the 2-core development machine (each job's throughput beside
the other, against alone):

* torch's default: an alignment beside a training 0.30x, two trainings 0.23x each;
* ``GOMP_SPINCOUNT=10000`` (a short spin, then sleep), which ``import faceattr`` sets where
  ``FACEATTR_JOBS`` is set and the align stage and ``faceattr predict`` ask for
  (``faceattr.short_openmp_spin``), unless the user chose a wait policy or spin count: alignment
  beside training 0.47x, two alignments 0.51x, and alone alignment runs 1.45x faster (its many
  small operations no longer wait on spinning threads); a 64-px training alone ran as fast, but the
  32-px default's training steps alone run at 0.93x with it (``bench/bench_openmp_spin.py``),
  so a training alone keeps libgomp's spin; two trainings still 0.26x;
* ``FACEATTR_JOBS=2``: each stage's torch gets cores // 2 threads (``configure``, called by every
  stage): every pair at least 0.58x.
* ``OMP_WAIT_POLICY=PASSIVE`` is fair too (0.60x) but makes a training alone 18-20 % slower.

Since training runs under bf16 autocast on CPUs with native bf16 (the default), two trainings
with every core's threads each fall to 0.07x (PASSIVE and spin counts do not help: oneDNN's bf16
kernels wait inside themselves), while ``FACEATTR_JOBS=2`` keeps every pair at 0.55x or more.
faceattr does not lower the threads by itself, because the thread count changes a training's
numbers (summation order): a run must not depend on what else happened to be running. Instead
every stage registers itself (``register``) and warns when it starts beside another faceattr job
without ``FACEATTR_JOBS``.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def jobs(environ: Mapping[str, str] = os.environ) -> int:
    """The number of parallel jobs ``FACEATTR_JOBS`` declares (1 where unset)."""
    raw = environ.get("FACEATTR_JOBS", "")
    try:
        return max(1, int(raw)) if raw else 1
    except ValueError:
        raise ValueError(f"FACEATTR_JOBS must be a whole number of jobs, got '{raw}'") from None


def configure() -> int | None:
    """With ``FACEATTR_JOBS`` set, cap torch's intra-op threads at cores // jobs (only where torch
    is already loaded: a stage that does not use torch never imports it for this). Returns the
    threads set, or None when nothing was changed."""
    if not os.environ.get("FACEATTR_JOBS") or "torch" not in sys.modules:
        return None
    import torch

    threads = max(1, cores() // jobs())
    torch.set_num_threads(threads)
    return threads


def _jobs_dir() -> Path:
    """Where running faceattr jobs of this user leave a file named by their pid."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"faceattr-jobs-{uid}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def register() -> list[int]:
    """Mark this process as a running faceattr job until it exits; returns the pids of the other
    faceattr jobs running now (files of ended ones are removed). Never fails a stage: a folder
    that cannot be written only means no warning."""
    folder, me = _jobs_dir(), os.getpid()
    try:
        folder.mkdir(exist_ok=True)
        others = []
        for entry in folder.iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            if _alive(int(entry.name)):
                others.append(int(entry.name))
            else:
                entry.unlink(missing_ok=True)
        mine = folder / str(me)
        mine.touch()
        atexit.register(mine.unlink, missing_ok=True)
    except OSError:
        return []
    return sorted(others)


def warn_if_sharing(log: logging.Logger) -> None:
    """Warn on ``log`` when this torch job starts beside another faceattr job with
    ``FACEATTR_JOBS`` unset: both then run far below half speed."""
    others = register()
    if others and not os.environ.get("FACEATTR_JOBS") and "torch" in sys.modules:
        log.warning(
            "%d other faceattr job(s) running on this machine (pid %s) and FACEATTR_JOBS is not set: jobs "
            "sharing %d cores with every core's threads each run at a fraction of their speed (two trainings "
            "0.07x, bench/bench_contention.py); set FACEATTR_JOBS to the number of parallel jobs (0.55x each)",
            len(others),
            ", ".join(map(str, others)),
            cores(),
        )
