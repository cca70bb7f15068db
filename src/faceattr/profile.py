"""Where a stage's time goes: off unless ``FACEATTR_PROFILE`` names a file.

With it set, every stage process appends one JSON line to that file when it ends: the stage
script and its arguments, the seconds from process start to ``main`` (interpreter start-up and
imports), the seconds of ``main``, and the seconds of each named phase inside it (data loading,
training steps, validation, tracking, ...). ``bench/profile_default.py`` runs the default pipeline
with it and prints the breakdown.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV = "FACEATTR_PROFILE"
_phases: dict[str, float] = {}


def enabled() -> bool:
    return bool(os.environ.get(ENV))


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the time spent inside the block to phase ``name`` (nested phases count in both)."""
    if not enabled():
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        _phases[name] = _phases.get(name, 0.0) + time.perf_counter() - start


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``), or None where that is not known."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def record(startup: float | None, main_s: float, exit_code: int) -> None:
    """Append this process's line to ``$FACEATTR_PROFILE`` (one short write, so the lines of
    stages running side by side do not interleave)."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = {
        "script": Path(sys.argv[0]).stem,
        "args": sys.argv[1:],
        "startup_s": startup,
        "main_s": main_s,
        "exit_code": exit_code,
        "phases": dict(_phases),
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
