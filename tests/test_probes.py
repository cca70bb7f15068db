"""Linear and L1-sparse probes of frozen trunks (faceattr.probes) and the probe stage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from faceattr.config import ProbeConfig
from faceattr.probes import fewest_units, probe_binary, probe_regression, trunks_of

CFG = ProbeConfig(bootstrap=200)


def _pools(x: np.ndarray, y: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    n = len(y)
    cut = {"train": slice(0, n // 2), "val": slice(n // 2, 3 * n // 4), "test": slice(3 * n // 4, n)}
    xs = {p: x[s] for p, s in cut.items()}
    ys = {p: y[s] for p, s in cut.items()}
    return xs, ys, np.arange(len(ys["test"]))


def test_a_task_carried_by_two_units_needs_those_units_not_all():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 20))
    y = (x[:, 3] + x[:, 7] > 0).astype(float)  # both units needed, the other 18 are noise
    xs, ys, groups = _pools(x, y)
    r = probe_binary(xs, ys, groups, CFG)
    assert r["status"] == "probed"
    assert r["full"]["test"] > 0.95
    lo, hi = r["full"]["ci"]
    assert lo <= r["full"]["test"] <= hi
    units = r["sparse"]["of_gain"]["units"]
    assert 1 <= units <= 3, units
    assert r["sparse"]["of_gain"]["val"] >= r["sparse"]["of_gain"]["target"]


def test_a_rare_attribute_reaches_95_percent_of_accuracy_with_no_unit_but_not_of_the_gain():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 10))
    y = (x[:, 0] > 1.9).astype(float)  # about 3 % positive: the majority scores about 97 %
    xs, ys, groups = _pools(x, y)
    r = probe_binary(xs, ys, groups, CFG)
    assert r["majority"]["val"] > 0.95
    assert r["sparse"]["of_accuracy"]["units"] == 0  # the majority alone is 95 % of the full probe
    assert r["sparse"]["of_gain"]["units"] >= 1  # the gain over it needs the unit that carries it


def test_noise_gives_a_probe_no_better_than_the_majority():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 16))
    y = (rng.random(2000) < 0.5).astype(float)
    xs, ys, groups = _pools(x, y)
    r = probe_binary(xs, ys, groups, CFG)
    assert r["full"]["test"] < 0.6


def test_unlabelled_rows_are_left_out_and_counted():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1000, 8))
    y = (x[:, 0] > 0).astype(float)
    y[::5] = np.nan
    xs, ys, groups = _pools(x, y)
    r = probe_binary(xs, ys, groups, CFG)
    assert r["images"]["train"] == int(np.isfinite(ys["train"]).sum()) == 400


def test_one_class_in_training_is_reported_not_fitted():
    x = np.random.default_rng(4).normal(size=(400, 4))
    y = np.zeros(400)
    xs, ys, groups = _pools(x, y)
    r = probe_binary(xs, ys, groups, CFG)
    assert "not probed" in r["status"] and "full" not in r


def test_ridge_probe_of_age_beats_the_training_mean():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 12))
    age = 40 + 10 * x[:, 2] + rng.normal(scale=1.0, size=2000)
    xs, ys, groups = _pools(x, age)
    r = probe_regression(xs, ys, groups, CFG)
    assert r["full"]["test"] < 1.5 < 7 < r["majority"]["test"]


def test_fewest_units_takes_the_smallest_point_that_reaches_the_target():
    path = [
        {"units": 0, "val": 0.5, "test": 0.5},
        {"units": 4, "val": 0.80, "test": 0.79},
        {"units": 2, "val": 0.91, "test": 0.90},
        {"units": 9, "val": 0.95, "test": 0.94},
    ]
    assert fewest_units(path, 0.9)["units"] == 2
    assert fewest_units(path, 0.95)["units"] == 9
    assert fewest_units(path, 0.99) is None


def test_one_trunk_per_backbone_and_pretraining():
    names = [
        t.backbone + "-" + t.pretraining
        for t in trunks_of(
            [
                "face_resnet18-identity-gender",
                "face_resnet18-identity-age",
                "face_resnet18-none-gender",
                "resnet18-imagenet-gender",
            ]
        )
    ]
    assert names == ["face_resnet18-identity", "face_resnet18-none", "resnet18-imagenet"]


def test_probe_config_rejects_a_bad_share():
    with pytest.raises(ValueError, match="share"):
        ProbeConfig(share=1.5)


def test_probe_stage_probes_every_trunk_and_the_report_shows_it(pipeline):
    result = json.loads((pipeline["metrics"] / "probe.json").read_text())
    trunks = result["trunks"]
    assert set(trunks) == {"face_resnet18-identity", "face_resnet18-none", "resnet18-none", "resnet18-imagenet"}
    assert trunks["resnet18-imagenet"]["status"] == "not run"
    identity = trunks["face_resnet18-identity"]
    assert identity["status"] == "probed" and identity["features"] == 16
    assert {"gender", "age"} <= set(identity["tasks"])
    assert identity["tasks"]["gender"]["images"]["test"] == result["images"]["test"]
    report = (pipeline["reports"] / "report.md").read_text()
    assert "## What a frozen trunk already knows (linear probes)" in report
    assert "`resnet18-imagenet`: **not run**" in report


def test_an_l1_probe_is_the_same_whatever_numpy_s_global_random_state() -> None:
    """liblinear shuffles the rows with numpy's global generator unless seeded: two probe stages on
    the same features gave different unit counts (58 and 59) until the fits were seeded."""
    from faceattr.probes import _fit_logistic

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 40))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=1.0, size=300) > 0).astype(float)
    fits = []
    for seed in (1, 2):
        np.random.seed(seed)
        fits.append(_fit_logistic(x, y, 0.05, "l1").coef_.copy())
    assert np.array_equal(fits[0], fits[1])
