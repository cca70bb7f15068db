"""Calibration (issue "full size"): the gender temperature and the age-spread scale are chosen on
validation after fine-tuning, kept in the checkpoint's meta and applied by the one decoder, so
evaluate, predict and serving answer with calibrated probabilities and spreads; evaluate
measures ECE and the ±1σ coverage on test, with and without the calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from faceattr.metrics import expected_calibration_error, within_spread
from faceattr.train.calibration import COVERAGE, fit_spread_scale, fit_temperature
from faceattr.train.data import to_input

from .conftest import TINY_VARIANTS


def test_ece_by_hand() -> None:
    # 15 bins over [0.5, 1]: 0.9 falls in bin 12 (right 1 of 2: |0.5 - 0.9|), 0.6 in bin 6 (right
    # 2 of 2: |1 - 0.6|); each bin holds half the images
    conf = np.array([0.9, 0.9, 0.6, 0.6, np.nan])
    correct = np.array([1.0, 0.0, 1.0, 1.0, 1.0])
    assert expected_calibration_error(conf, correct) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    assert expected_calibration_error(np.array([0.75] * 4), np.array([1, 1, 1, 0.0])) == pytest.approx(0.0)


def test_within_spread_is_the_coverage_of_the_interval() -> None:
    cover = within_spread(np.array([30.0, 30, 30, 30]), np.array([5.0, 5, 5, np.nan]), np.array([33, 36, np.nan, 30]))
    assert cover[:2].tolist() == [1.0, 0.0] and np.isnan(cover[2:]).all()


def test_temperature_scaling_recovers_an_overconfident_network() -> None:
    """Labels drawn from softmax(z / 2.5): a network saying z is overconfident by 2.5."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 2, generator=g) * 4
    y = torch.multinomial((z / 2.5).softmax(1), 1, generator=g).squeeze(1)
    y[:100] = -1  # unlabelled rows are left out
    t = fit_temperature(z, y)
    assert t == pytest.approx(2.5, rel=0.06)
    conf = (z / t).softmax(1).max(1).values.numpy()
    raw = z.softmax(1).max(1).values.numpy()
    right = (z.argmax(1) == y).float().numpy()
    right[:100] = np.nan
    assert expected_calibration_error(conf, right) < 0.02 < expected_calibration_error(raw, right)


def test_spread_scale_makes_one_sigma_cover_68_percent() -> None:
    g = torch.Generator().manual_seed(1)
    true = torch.rand(20000, generator=g) * 80
    spread = 2 + torch.rand(20000, generator=g) * 4
    pred = true + torch.randn(20000, generator=g) * spread * 3  # the network's spread is 3x too small
    k = fit_spread_scale(pred, spread, true)
    assert k == pytest.approx(3.0, rel=0.05)
    assert (pred - true).abs().le(k * spread).float().mean() == pytest.approx(COVERAGE, abs=0.002)


def test_checkpoints_carry_their_calibration_and_every_path_applies_it(pipeline) -> None:
    """The tiny pipeline's models: a temperature chosen on validation in the meta; the decoder
    divides the gender logits by it (predict's probabilities are calibrated); evaluate reports
    ECE with and without it, per run and per variant over seeds."""
    from faceattr.inference import load_model

    run = pipeline["models"] / "finetune" / f"{TINY_VARIANTS[0]}-s0"
    model = load_model(run)
    cal = model.meta["calibration"]
    assert cal["fitted_on"] == "validation" and cal["gender_temperature"] > 0
    crops = np.random.default_rng(0).integers(0, 255, (4, model.meta["input_size"], model.meta["input_size"], 3))
    x = torch.from_numpy(crops.astype(np.uint8)).permute(0, 3, 1, 2)
    raw = model.raw(to_input(x, torch.device("cpu"), tuple(model.meta["mean"]), tuple(model.meta["std"])))
    decoded = model.decode(crops.astype(np.uint8))
    assert np.allclose(decoded["gender"], raw["gender"].numpy() / cal["gender_temperature"], atol=1e-5)
    ev = json.loads((pipeline["metrics"] / "evaluate.json").read_text())
    c = ev["variants"][TINY_VARIANTS[0]]["calibration"]
    assert {"gender_ece", "gender_ece_uncalibrated"} <= set(c) and 0 <= c["gender_ece"]["mean"] <= 1
    assert len(c["gender_ece"]["seeds"]) == 2
    assert "calibration" in ev["runs"][f"{TINY_VARIANTS[0]}-s0"]


def test_the_report_has_a_calibration_section(pipeline) -> None:
    report = (pipeline["reports"] / "report.md").read_text()
    section = report.split("## Calibration (test)", 1)[1].split("\n## ", 1)[0]
    assert f"| `{TINY_VARIANTS[0]}` |" in section and "Gender ECE, calibrated" in section
