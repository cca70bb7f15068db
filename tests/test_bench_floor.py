"""The quality-floor bench's careful-user schedule (warm-up to the full rate, then cosine to zero) and
its wall-time budget (as many epochs as the first one says fit)."""

import itertools

import pytest

from .conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_quality_floor")


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


def test_epochs_within_counts_from_the_first_epoch(bench) -> None:
    assert bench.epochs_within(budget_s=1548, spent_s=48, first_epoch_s=300) == 5
    assert bench.epochs_within(budget_s=1548, spent_s=48, first_epoch_s=299) == 5
    assert bench.epochs_within(budget_s=1548, spent_s=48, first_epoch_s=301) == 4
    assert bench.epochs_within(budget_s=100, spent_s=90, first_epoch_s=50) == 1  # the epoch already run stays


def test_plain_loop_under_a_budget_trains_the_epochs_its_first_epoch_allows(bench, monkeypatch) -> None:
    import torch

    from faceattr.config import FinetuneConfig, OptimConfig
    from faceattr.train.data import FaceTensors

    n = 6
    train = FaceTensors(
        images=torch.zeros(n, 3, 32, 32, dtype=torch.uint8),
        gender=torch.tensor([0, 1] * 3),
        age=torch.linspace(10, 60, n),
        landmarks=torch.zeros(n, 5, 2),
        identity=torch.zeros(n, dtype=torch.long),
        identity_names=("a",),
    )
    clock = itertools.count(0.0, 10.0)  # every reading of the clock is 10 s after the last
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    lrs = []
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: lrs.append(self.param_groups[0]["lr"]))
    cfg = FinetuneConfig(optim=OptimConfig(epochs=99, batch_size=3, lr=1.0))
    x = torch.randint(0, 255, (n, 3, 32, 32), dtype=torch.uint8)
    pred, epochs = bench.plain_loop(x, train, x, cfg, seed=0, schedule="warmup_cosine", budget_s=45.0, spent_s=5.0)
    assert epochs == 4  # (45 − 5) // 10: the first epoch read the clock at 0 and 10
    assert len(pred["age"]) == n
    assert len(lrs) == 4 * 2  # 2 steps an epoch
    assert lrs[:2] == pytest.approx([0.5, 1.0])  # the warm-up: one epoch
    assert lrs[-1] == pytest.approx(bench.warmup_cosine(7, 2, 8))  # the cosine ends at the budget's last step
    assert lrs[-1] < lrs[2]
