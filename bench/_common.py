"""Shared helpers for the benchmarks: timing, peak memory and a printed table."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable


def best_of(fn: Callable[[], int], repeats: int = 3) -> tuple[float, int]:
    """Run ``fn`` (which returns how many items it processed) ``repeats`` times; best seconds."""
    best, items = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        items = fn()
        best = min(best, time.perf_counter() - start)
    return best, items


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(title: str, rows: list[tuple[str, float, str]], baseline: str) -> None:
    """Print ``name | items/s | ratio to baseline | note``."""
    base = dict((name, rate) for name, rate, _ in rows)[baseline]
    print(f"\n{title}")
    print(f"{'':2}{'method':44} {'items/s':>10} {'x ' + baseline:>22}  note")
    for name, rate, note in rows:
        print(f"  {name:44} {rate:10.1f} {rate / base:22.2f}  {note}")
    print(f"  peak host RSS {peak_rss_mib():.0f} MiB")
