"""Evaluation metrics, each defined as in PROTOCOLS.md.

Accumulators keep running sums on the model's device, so a training step never waits on a
host-device copy; ``compute()`` does the one synchronisation at the end.
"""

from __future__ import annotations

import numpy as np
import torch

# Metrics faceattr reports as percentages (stored as fractions); every other one in its own unit.
PERCENT = frozenset({"gender_acc", "age_cs5", "age_group_acc", "attr_acc"})
# Errors, where the lower value is the better one; every other metric is an accuracy or a score.
LOWER_IS_BETTER = frozenset({"age_mae", "age_aabd", "landmark_nme"})


def display_value(metric: str, value: float) -> float:
    """A metric as tables and headline files show it: accuracies in percent to 2 decimals, NME
    to 4, everything else (years, age groups) to 2."""
    if metric in PERCENT:
        return round(value * 100, 2)
    return round(value, 4 if metric == "landmark_nme" else 2)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE of a classifier's answers: over equal-width bins of its confidence (the probability of
    the class it answered), the image-weighted mean of |accuracy - mean confidence| in the bin.
    NaN entries (images without a label) are left out."""
    keep = np.isfinite(confidence) & np.isfinite(correct)
    conf, right = confidence[keep].astype(np.float64), correct[keep].astype(np.float64)
    if not len(conf):
        return float("nan")
    lo = 0.5 if conf.min() >= 0.5 else 0.0  # a binary answer's confidence is at least 0.5
    which = np.minimum(((conf - lo) / (1.0 - lo) * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.sum() * abs(right[in_bin].mean() - conf[in_bin].mean())
    return float(total / len(conf))


def within_spread(pred: np.ndarray, spread: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per image, whether the true age lies within the predicted age ± its spread (1 or 0; NaN
    without an age or a spread): its mean is the coverage of the ±1σ interval, 68.3 % when the
    spread is a calibrated standard deviation of a normal error."""
    known = np.isfinite(target) & np.isfinite(spread)
    return np.where(known, np.abs(pred - target) <= spread, np.nan)


def gender_accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of correct predictions over samples with a label (target >= 0)."""
    mask = target >= 0
    return float((logits.argmax(1)[mask] == target[mask]).float().mean())


def age_mae(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error in years over samples with an age."""
    mask = torch.isfinite(target)
    return float((pred[mask] - target[mask]).abs().mean())


def cumulative_score(pred: torch.Tensor, target: torch.Tensor, k: float = 5.0) -> float:
    """CS@k: fraction of samples with ``|pred - target| <= k`` years."""
    mask = torch.isfinite(target)
    return float(((pred[mask] - target[mask]).abs() <= k).float().mean())


def nme_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Normalised mean error of each image's 5-point landmarks: mean point error / inter-ocular
    distance (the one definition; every NME faceattr reports is a mean of these).

    Args:
        pred, target: (N, 5, 2) pixel coordinates, points in the order left eye, right eye, nose,
            left mouth corner, right mouth corner; the normaliser is the distance between the
            two eye points of ``target``.

    Returns:
        (N,) NME per image, NaN where ``target`` lacks a point.
    """
    iod = (target[:, 0] - target[:, 1]).norm(dim=1)
    return (pred - target).norm(dim=2).mean(1) / iod


def nme(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean of ``nme_per_image`` over the images with all five target points."""
    per = nme_per_image(pred, target)
    return float(per[torch.isfinite(per)].mean())


class MetricSums:
    """Running on-device sums: gender accuracy, age MAE / CS@k, landmark NME, attribute accuracy."""

    def __init__(self, device: torch.device | str, cs_threshold: float = 5.0) -> None:
        self.sums = torch.zeros(9, dtype=torch.float64, device=device)
        self.cs_threshold = cs_threshold

    def update(self, pred: dict[str, torch.Tensor], true: dict[str, torch.Tensor]) -> None:
        """Add one batch of decoded predictions (gender logits, age in years, landmarks in px)."""
        s = self.sums
        if "gender" in pred:
            mask = true["gender"] >= 0
            s[0] += (pred["gender"].argmax(1)[mask] == true["gender"][mask]).sum()
            s[1] += mask.sum()
        if "age" in pred:
            err = (pred["age"] - true["age"]).abs()
            mask = torch.isfinite(err)
            s[2] += err[mask].sum()
            s[3] += (err[mask] <= self.cs_threshold).sum()
            s[4] += mask.sum()
        if "landmarks" in pred:
            per = nme_per_image(pred["landmarks"], true["landmarks"])
            mask = torch.isfinite(per)
            s[5] += per[mask].sum()
            s[6] += mask.sum()
        if "attributes" in pred:
            known = torch.isfinite(true["attributes"])
            s[7] += ((pred["attributes"] >= 0.5) == (true["attributes"] >= 0.5))[known].sum()
            s[8] += known.sum()

    def compute(self) -> dict[str, float]:
        """Metrics for the tasks that had labelled samples."""
        s = self.sums.tolist()
        out: dict[str, float] = {}
        if s[1]:
            out["gender_acc"] = s[0] / s[1]
        if s[4]:
            out["age_mae"] = s[2] / s[4]
            out[f"age_cs{self.cs_threshold:g}"] = s[3] / s[4]
        if s[6]:
            out["landmark_nme"] = s[5] / s[6]
        if s[8]:
            out["attr_acc"] = s[7] / s[8]
        return out


def verification_accuracy(
    distances: np.ndarray, same: np.ndarray, folds: np.ndarray, thresholds: np.ndarray | None = None
) -> tuple[float, float]:
    """10-fold verification accuracy (LFW protocol): mean and std over folds.

    For each fold the threshold (on squared L2 distance; "same" when ``distance < threshold``)
    that maximises accuracy on the other folds is applied to the held-out fold.
    """
    if thresholds is None:
        thresholds = np.arange(0, 4, 0.01)
    predicted = distances[None, :] < thresholds[:, None]  # (T, P)
    correct = predicted == same[None, :]
    accuracies = []
    for fold in np.unique(folds):
        held = folds == fold
        best = int(np.argmax(correct[:, ~held].mean(1)))
        accuracies.append(correct[best, held].mean())
    return float(np.mean(accuracies)), float(np.std(accuracies))
