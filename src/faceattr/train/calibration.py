"""Calibration chosen on the validation split at the end of fine-tuning, kept in the checkpoint's
meta and applied by the one decoder every inference path uses (``LabelCodec``).

* Gender: temperature scaling (Guo et al., 2017): the logits divided by one T > 0 that minimises
  the validation negative log-likelihood. Accuracy is unchanged (the argmax is), the
  probabilities are not: an uncalibrated network says 0.95 where it is right 80 % of the time.
* Age spread (DLDL and age-group heads): the spread multiplied by one factor so that the true age
  lies within the predicted age ± spread for 68.27 % of the validation images, the share a
  standard deviation of a normal error covers.
"""

from __future__ import annotations

import math
from typing import Any

import torch

COVERAGE = 0.6827  # of a normal error within ±1 standard deviation
TEMPERATURES = torch.logspace(math.log10(0.05), math.log10(20.0), 241)  # the grid T is chosen on


def fit_temperature(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The T on :data:`TEMPERATURES` minimising the mean NLL of ``softmax(logits / T)`` over the
    labelled rows (target >= 0); 1.0 without labels."""
    keep = target >= 0
    if not keep.any():
        return 1.0
    z, y = logits[keep].double(), target[keep].long()
    nll = torch.stack([torch.nn.functional.cross_entropy(z / t, y) for t in TEMPERATURES.double()])
    return float(TEMPERATURES[int(nll.argmin())])


def fit_spread_scale(pred: torch.Tensor, spread: torch.Tensor, target: torch.Tensor) -> float:
    """The factor k making |pred - target| <= k * spread hold for :data:`COVERAGE` of the rows
    with an age and a positive spread; 1.0 where there are none."""
    keep = torch.isfinite(target) & (spread > 0)
    if keep.sum() < 2:
        return 1.0
    ratio = (pred[keep].double() - target[keep].double()).abs() / spread[keep].double()
    return float(torch.quantile(ratio, COVERAGE))


def calibration(pred: dict[str, torch.Tensor], gender: torch.Tensor, age: torch.Tensor) -> dict[str, Any]:
    """What a checkpoint's meta keeps as ``calibration``, from its validation predictions."""
    out: dict[str, Any] = {"fitted_on": "validation"}
    if "gender" in pred:
        out["gender_temperature"] = fit_temperature(pred["gender"], gender)
    if "age_std" in pred:
        out["age_std_scale"] = fit_spread_scale(pred["age"], pred["age_std"], age)
    return out
