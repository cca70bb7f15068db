"""Metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from faceattr.metrics import MetricSums, age_mae, cumulative_score, gender_accuracy, nme, verification_accuracy


def test_gender_accuracy_ignores_missing_labels() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 5.0]])
    target = torch.tensor([0, 0, -1, 1])  # correct, wrong, missing, correct
    assert gender_accuracy(logits, target) == pytest.approx(2 / 3)


def test_age_mae_and_cs() -> None:
    pred = torch.tensor([30.0, 40.0, 25.0, 10.0])
    true = torch.tensor([33.0, 46.0, float("nan"), 10.0])  # errors 3, 6, -, 0
    assert age_mae(pred, true) == pytest.approx(3.0)
    assert cumulative_score(pred, true, 5) == pytest.approx(2 / 3)


def test_nme_normalises_by_interocular_distance() -> None:
    true = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [5.0, 5.0], [2.0, 10.0], [8.0, 10.0]]])
    pred = true.clone()
    pred[0, 2, 0] += 3.0  # nose off by 3 px, eyes 10 px apart
    pred[0, 4, 1] += 4.0  # right mouth corner off by 4 px
    assert nme(pred, true) == pytest.approx((3 + 4) / 5 / 10)


def test_metric_sums_match_the_functions() -> None:
    g = torch.Generator().manual_seed(0)
    pred = {
        "gender": torch.randn(20, 2, generator=g),
        "age": torch.rand(20, generator=g) * 60,
        "landmarks": torch.rand(20, 5, 2, generator=g) * 50,
    }
    true = {
        "gender": torch.randint(-1, 2, (20,), generator=g),
        "age": torch.rand(20, generator=g) * 60,
        "landmarks": torch.rand(20, 5, 2, generator=g) * 50,
    }
    sums = MetricSums("cpu")
    sums.update({k: v[:7] for k, v in pred.items()}, {k: v[:7] for k, v in true.items()})
    sums.update({k: v[7:] for k, v in pred.items()}, {k: v[7:] for k, v in true.items()})
    out = sums.compute()
    assert out["gender_acc"] == pytest.approx(gender_accuracy(pred["gender"], true["gender"]))
    assert out["age_mae"] == pytest.approx(age_mae(pred["age"], true["age"]), rel=1e-6)
    assert out["age_cs5"] == pytest.approx(cumulative_score(pred["age"], true["age"]))
    assert out["landmark_nme"] == pytest.approx(nme(pred["landmarks"], true["landmarks"]), rel=1e-6)


def test_verification_separable_pairs_score_one() -> None:
    same = np.array([True, False] * 50)
    distances = np.where(same, 0.5, 2.5)
    folds = np.repeat(np.arange(10), 10)
    mean, std = verification_accuracy(distances, same, folds)
    assert (mean, std) == (1.0, 0.0)


def test_verification_threshold_comes_from_other_folds() -> None:
    """Fold 0's own best threshold differs from the others': it must be scored with theirs."""
    same = np.array([True, False] * 20)
    distances = np.where(same, 1.0, 3.0)
    folds = np.repeat(np.arange(4), 10)
    distances[:10] = np.where(same[:10], 3.5, 3.8)  # fold 0 is shifted: the others' threshold fails it
    mean, _ = verification_accuracy(distances, same, folds)
    assert mean == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    assert not math.isnan(mean)
