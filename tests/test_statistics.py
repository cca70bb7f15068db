"""Bootstrap CIs cover the truth at their nominal rate; paired comparisons find real differences."""

from __future__ import annotations

import numpy as np
import pytest

from faceattr.statistics import bootstrap_ci, holm, mean_std, paired_bootstrap


def test_bootstrap_ci_covers_the_true_mean_at_about_the_nominal_rate() -> None:
    """200 samples of 200 from an exponential (mean 2, skewed): the 95 % CI covers 2 about 95 % of the time."""
    rng = np.random.default_rng(0)
    trials, covered = 300, 0
    for i in range(trials):
        lo, hi = bootstrap_ci(rng.exponential(2.0, 200), resamples=1000, seed=i)
        covered += lo <= 2.0 <= hi
    rate = covered / trials
    assert 0.90 <= rate <= 0.985, rate  # binomial sd at 95 %, 300 trials: 1.3 pp; percentile CIs run a bit low


def test_bootstrap_ci_of_accuracy_scores_and_nans() -> None:
    scores = np.array([1.0] * 80 + [0.0] * 20 + [np.nan] * 50)  # NaN: images without the label
    lo, hi = bootstrap_ci(scores, resamples=2000)
    assert lo < 0.8 < hi and hi - lo == pytest.approx(2 * 1.96 * np.sqrt(0.8 * 0.2 / 100), rel=0.15)
    assert np.isnan(bootstrap_ci(np.array([np.nan]))[0])


def test_paired_bootstrap_finds_a_small_shift_that_unpaired_noise_would_hide() -> None:
    rng = np.random.default_rng(1)
    difficulty = rng.normal(0, 5, 400)  # shared between the two models: cancels when paired
    a = difficulty + rng.normal(0, 0.5, 400)
    b = a + 0.3 + rng.normal(0, 0.5, 400)
    res = paired_bootstrap(b, a)
    assert res["ci_low"] > 0 and res["p"] < 0.01 and res["diff"] == pytest.approx(0.3, abs=0.1)
    assert res["images"] == 400
    lo, hi = bootstrap_ci(b)
    lo_a, hi_a = bootstrap_ci(a)
    assert lo < hi_a and lo_a < hi, "unpaired CIs overlap: only the paired test sees the difference"


def test_paired_bootstrap_of_identical_models_is_not_significant() -> None:
    x = np.random.default_rng(2).normal(size=100)
    res = paired_bootstrap(x, x.copy())
    assert res["diff"] == 0 and res["ci_low"] <= 0 <= res["ci_high"] and res["p"] == 1.0


def test_paired_bootstrap_uses_only_images_both_score() -> None:
    a = np.array([1.0, 0.0, np.nan, 1.0])
    b = np.array([0.0, 0.0, 1.0, np.nan])
    assert paired_bootstrap(a, b)["images"] == 2


def test_holm_keeps_only_what_survives_the_step_down() -> None:
    assert holm([0.001, 0.04, 0.03, 0.5]) == [True, False, False, False]
    assert holm([0.001, 0.012, 0.02]) == [True, True, True]
    assert holm([]) == []


def test_mean_std_over_seeds() -> None:
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)
