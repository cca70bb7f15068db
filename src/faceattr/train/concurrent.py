"""Several runs of the fine-tuning matrix at once (``finetune_multitask.runs_per_device``).

Each run is a process of its own, the stage's one-run form (``--variant V --seed S``) writing the
same files ``--all`` would. A run seeds itself and reads nothing another run writes, so it trains
the same weights alone or beside others, given the same threads (``tests/test_concurrency.py``);
its reuse, resume and MLflow run are its own, as in one process.

Slots: K runs per device. On CUDA, K per visible GPU, each run's ``CUDA_VISIBLE_DEVICES`` narrowed
to its GPU (K = 4 by default: a run of the default's small networks kept an H200 busy about 11 %
of the time); on a CPU the runs split its cores (``FACEATTR_JOBS`` multiplied by K, so each run's
torch takes its share of the threads), and K = 1 by default: on a 2-core CPU two trainings beside
each other run at about 0.55x each (``bench/bench_contention.py``), which buys almost nothing.
Free slots take the next run in the matrix's order, so long and short runs even out.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from faceattr import threads

log = logging.getLogger(__name__)

RUNS_PER_GPU = 4  # `auto` on CUDA


@dataclass(frozen=True)
class Job:
    """One run to train in a process of its own."""

    name: str
    argv: tuple[str, ...]


def slots(
    runs_per_device: int | str, device: torch.device, environ: Mapping[str, str] = os.environ
) -> list[dict[str, str]]:
    """The environment of each slot that trains one run at a time: ``runs_per_device`` per device
    (``auto``: 1 on a CPU, :data:`RUNS_PER_GPU` per CUDA GPU)."""
    if device.type == "cuda":
        per = RUNS_PER_GPU if runs_per_device == "auto" else int(runs_per_device)
        if device.index is not None:  # FACEATTR_DEVICE named one GPU: all slots on it
            gpus = [None]
        else:
            visible = environ.get("CUDA_VISIBLE_DEVICES")
            gpus = (
                [g.strip() for g in visible.split(",") if g.strip()]
                if visible
                else [str(i) for i in range(torch.cuda.device_count())]
            )
        envs = [{} if g is None else {"CUDA_VISIBLE_DEVICES": g} for g in gpus for _ in range(per)]
    else:
        per = 1 if runs_per_device == "auto" else int(runs_per_device)
        envs = [{} for _ in range(per)]
    jobs = threads.jobs(environ) * len(envs)  # each run's share of the CPU threads (faceattr.threads)
    return [{**env, "FACEATTR_JOBS": str(jobs)} if len(envs) > 1 else dict(env) for env in envs]


def run_jobs(
    jobs: Sequence[Job],
    envs: Sequence[Mapping[str, str]],
    *,
    progress: Callable[[int, int], str] = lambda done, total: "",
    poll_s: float = 0.2,
) -> None:
    """Train ``jobs`` with one process per slot of ``envs`` at a time, each process's output lines
    passed on prefixed with its run's name. The first run that fails stops the others (they keep
    their resume states) and raises ``ValueError`` naming it and its exit code. When this process
    is stopped (SIGINT, SIGTERM), the runs in flight are stopped too before the stop goes on."""
    pending = list(jobs)
    running: dict[int, tuple[subprocess.Popen[str], Job, threading.Thread]] = {}
    free = list(range(len(envs)))
    done = 0
    failed: tuple[Job, int] | None = None
    try:
        while pending or running:
            while pending and free and failed is None:
                slot = free.pop(0)
                job = pending.pop(0)
                proc = subprocess.Popen(
                    job.argv,
                    env={**os.environ, **envs[slot]},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    bufsize=1,
                )
                relay = threading.Thread(target=_relay, args=(proc, job.name), daemon=True)
                relay.start()
                running[slot] = (proc, job, relay)
                log.info("%s: started (slot %d of %d%s)", job.name, slot + 1, len(envs), _where(envs[slot]))
            if failed is not None and not running:
                break
            for slot, (proc, job, relay) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                relay.join()
                del running[slot]
                free.append(slot)
                if code != 0 and failed is None:
                    failed = (job, code)
                    for other, *_ in running.values():  # stop the others: each saves its resume state
                        other.terminate()
                elif code == 0:
                    done += 1
                    log.info("%s: finished; %d/%d runs done%s", job.name, done, len(jobs), progress(done, len(jobs)))
            time.sleep(poll_s)
    finally:
        for proc, _, _ in running.values():  # stopped from outside: the runs stop too
            proc.terminate()
        for proc, _, relay in running.values():
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
            relay.join(timeout=5)
    if failed is not None:
        job, code = failed
        raise ValueError(
            f"run {job.name} failed (exit code {code}; its log is above, prefixed '[{job.name}]'); "
            "the runs beside it were stopped and resume where they were on the next run"
        )


def _where(env: Mapping[str, str]) -> str:
    return f", GPU {env['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in env else ""


def _relay(proc: subprocess.Popen[str], name: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stderr.write(f"[{name}] {line}")
    sys.stderr.flush()
