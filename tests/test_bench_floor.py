"""The quality-floor bench's careful-user schedule: warm-up to the full rate, then cosine to zero."""

import importlib.util
import itertools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_quality_floor", ROOT / "bench" / "bench_quality_floor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_warmup_rises_linearly_to_the_full_rate(bench) -> None:
    warmup, total = 10, 100
    assert [bench.warmup_cosine(s, warmup, total) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])


def test_then_decays_as_a_cosine_to_zero(bench) -> None:
    warmup, total = 10, 100
    assert bench.warmup_cosine(10, warmup, total) == pytest.approx(1.0)
    assert bench.warmup_cosine(55, warmup, total) == pytest.approx(0.5)  # half-way through the decay
    assert bench.warmup_cosine(100, warmup, total) == pytest.approx(0.0, abs=1e-12)
    assert bench.warmup_cosine(150, warmup, total) == pytest.approx(0.0, abs=1e-12)  # never negative past the end
    decay = [bench.warmup_cosine(s, warmup, total) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(decay))
