"""Bootstrap CIs cover the truth at their nominal rate; paired comparisons find real differences."""

from __future__ import annotations

import numpy as np
import pytest

from faceattr.statistics import bootstrap_ci, holm, mean_std, paired_bootstrap, seed_cluster_bootstrap_ci


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


PEOPLE, IMAGES = 30, 8  # the default's test split: 240 images of 30 people
ALPHA, BETA = 1.74, 0.26  # each person's accuracy ~ Beta: mean 0.87, most people near 1, a few far off


def _clustered_accuracy(rng: np.random.Generator) -> np.ndarray:
    """Correct-or-not per image; a person's images share that person's accuracy."""
    accuracy = rng.beta(ALPHA, BETA, PEOPLE)
    return (rng.random((PEOPLE, IMAGES)) < accuracy[:, None]).astype(float).ravel()


def test_cluster_bootstrap_covers_clustered_data_and_the_image_bootstrap_does_not() -> None:
    """2,000 seeded trials: the person-level CI covers the true mean 92-98 % of the time at nominal
    95 % (binomial sd 0.5 pp); resampling images as if independent covers far less."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(PEOPLE), IMAGES)
    truth = ALPHA / (ALPHA + BETA)
    trials, by_person, by_image = 2000, 0, 0
    for i in range(trials):
        x = _clustered_accuracy(rng)
        lo, hi = bootstrap_ci(x, resamples=1000, seed=i, groups=groups)
        by_person += lo <= truth <= hi
        lo, hi = bootstrap_ci(x, resamples=1000, seed=i)
        by_image += lo <= truth <= hi
    assert 0.92 <= by_person / trials <= 0.98, by_person / trials
    assert by_image / trials < 0.85, by_image / trials


def test_cluster_labels_of_any_type_and_every_image_its_own_cluster() -> None:
    x = np.random.default_rng(3).random(50)
    names = np.array([f"person{i:02d}" for i in range(50)])  # sorted like the indices
    assert bootstrap_ci(x, seed=4, groups=names) == bootstrap_ci(x, seed=4)
    with pytest.raises(ValueError, match="groups has 3 entries for 50 scores"):
        bootstrap_ci(x, groups=["a", "b", "c"])


def test_paired_cluster_bootstrap_finds_a_person_level_shift_and_not_a_null() -> None:
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(PEOPLE), IMAGES)
    b = _clustered_accuracy(rng)
    identical = paired_bootstrap(b, b.copy(), groups=groups)
    assert identical["diff"] == 0 and identical["p"] == 1.0 and identical["clusters"] == PEOPLE
    # model a gets every image right for a third of the people (chosen at random) and is otherwise b
    better = rng.permutation(PEOPLE)[: PEOPLE // 3]
    a = np.where(np.isin(groups, better), 1.0, b)
    found = paired_bootstrap(a, b, groups=groups)
    assert found["ci_low"] > 0 and found["p"] < 0.05 and found["images"] == PEOPLE * IMAGES


def test_two_level_bootstrap_adds_the_seeds_spread() -> None:
    rng = np.random.default_rng(6)
    groups = np.repeat(np.arange(PEOPLE), IMAGES)
    base = _clustered_accuracy(rng)
    same = np.stack([base, base, base])  # three seeds that agree: the clusters' interval alone
    assert seed_cluster_bootstrap_ci(same, seed=1, groups=groups) == pytest.approx(
        bootstrap_ci(base, seed=1, groups=groups), abs=0.01
    )
    # absolute age errors: a person's base error plus image noise; three seeds 1.5 years apart
    err = np.repeat(rng.gamma(2.0, 4.0, PEOPLE), IMAGES) + rng.gamma(2.0, 1.0, PEOPLE * IMAGES)
    apart = np.stack([err - 1.5, err, err + 1.5])
    lo2, hi2 = seed_cluster_bootstrap_ci(apart, seed=1, groups=groups)
    lo1, hi1 = bootstrap_ci(apart.mean(0), seed=1, groups=groups)
    assert hi2 - lo2 > 1.1 * (hi1 - lo1) and lo2 < err.mean() < hi2


def test_p_and_significant_follow_one_rule() -> None:
    """The old report printed `+0.65 [0.00, 1.33], p = 0.038: not significant`-style disagreements:
    "significant" came from the expanded interval, p from the plain percentile. Over many small,
    clustered samples near the boundary, p < 0.05 exactly when the reported interval excludes 0."""
    rng = np.random.default_rng(3)
    disagree, near = 0, 0
    for trial in range(300):
        people = rng.integers(5, 25)  # few clusters: where the expansion matters most
        groups = np.repeat(np.arange(people), 4)
        a = rng.normal(0, 1, people)[groups] + rng.normal(0, 1, len(groups))
        b = a + rng.normal(0.35, 1.2, len(groups))
        res = paired_bootstrap(b, a, resamples=500, seed=trial, groups=groups)
        excludes = not res["ci_low"] <= 0 <= res["ci_high"]
        near += 0.01 < res["p"] < 0.2
        disagree += excludes != (res["p"] < 0.05)
        assert res["significant"] == (res["p"] < 0.05)
    assert near > 30, "the trials must exercise the boundary"
    assert disagree == 0


def test_paired_comparison_resamples_seeds_where_there_are_several() -> None:
    """Two methods whose per-image scores are identical on average but whose trainings scatter:
    with each seed's scores (seeds, images), the two-level test sees the seeds' spread and is not
    fooled by one lucky set of seeds; with seed-averaged scores it would call it significant."""
    rng = np.random.default_rng(5)
    n, seeds = 600, 3
    base = rng.normal(0, 1, n)
    offsets_a, offsets_b = np.array([0.5, -0.3, 0.4]), np.array([-0.2, 0.1, -0.4])  # run-to-run spread
    a = base + offsets_a[:, None] + rng.normal(0, 0.1, (seeds, n))
    b = base + offsets_b[:, None] + rng.normal(0, 0.1, (seeds, n))
    one_level = paired_bootstrap(a.mean(0), b.mean(0))
    two_level = paired_bootstrap(a, b)
    assert one_level["resampled"] == "clusters" and one_level["significant"]
    assert two_level["resampled"] == "seeds and clusters" and two_level["seeds"] == [3, 3]
    assert two_level["diff"] == pytest.approx(one_level["diff"])
    assert not two_level["significant"] and two_level["ci_high"] - two_level["ci_low"] > 5 * (
        one_level["ci_high"] - one_level["ci_low"]
    )
    # a real method effect larger than the seeds' spread still shows
    strong = paired_bootstrap(a + 2.0, b)
    assert strong["significant"] and strong["ci_low"] > 0
