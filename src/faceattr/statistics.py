"""Bootstrap statistics over test images: confidence intervals and paired comparisons.

Every metric faceattr reports is a mean of per-image scores (correct or not, absolute error,
NME), so one resampling scheme serves them all: draw the test images with replacement and
recompute the mean. A paired comparison draws the *same* images for both models, which removes
the between-image variance that the two share and makes small but real differences visible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_ci(
    scores: np.ndarray, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``scores`` (NaNs, i.e. unlabelled images, dropped)."""
    x = np.asarray(scores, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    means = x[_indices(len(x), resamples, seed)].mean(1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Difference of means ``mean(a) − mean(b)`` over the images both score, with its CI.

    Returns ``diff``, ``ci_low``, ``ci_high``, ``p`` (two-sided bootstrap p-value: twice the
    share of resampled differences on the far side of zero, capped at 1) and ``images``.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    d = a[both] - b[both]
    if len(d) == 0:
        return {"diff": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "p": float("nan"), "images": 0}
    means = d[_indices(len(d), resamples, seed)].mean(1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    p = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    return {"diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi), "p": p, "images": len(d)}


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm–Bonferroni: which of several hypotheses stay significant at family-wise ``alpha``."""
    order = np.argsort(p_values)
    significant = [False] * len(p_values)
    for rank, i in enumerate(order):
        if not p_values[i] <= alpha / (len(p_values) - rank):
            break
        significant[i] = True
    return significant


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) over seeds."""
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0
