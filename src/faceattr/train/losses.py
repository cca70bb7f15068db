"""Masked multi-task losses returned as a dict ready for logging, and their weighting.

A sample without a label for a task is masked out of that task's loss; it is never given a
sentinel value that the loss could learn from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from faceattr.config import AgeHeadConfig


def _masked_mean(per_sample: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked samples; zero (with a gradient path) when no sample has the label."""
    mask = mask.to(per_sample.dtype)
    return (per_sample * mask).sum() / mask.sum().clamp(min=1.0)


def gaussian_label_distribution(years: torch.Tensor, bins: int, sigma: float) -> torch.Tensor:
    """DLDL targets: a Gaussian over the whole years 0..bins-1 centred on each age, normalised."""
    grid = torch.arange(bins, dtype=torch.float32, device=years.device)
    logits = -((grid[None, :] - years[:, None]) ** 2) / (2 * sigma**2)
    return logits.softmax(1)


def age_loss(raw: torch.Tensor, targets: Mapping[str, torch.Tensor], kind: str, cfg: AgeHeadConfig) -> torch.Tensor:
    """Per-sample age loss for the head ``kind`` (NaN-free; the caller masks unlabelled samples).

    regression: L1 or smooth-L1 on the standardised age (L1's minimiser is what MAE measures);
    dldl: KL divergence from the Gaussian label distribution to the predicted one;
    group: cross-entropy over age groups.
    """
    raw = raw.float()
    if kind == "regression":
        loss = F.l1_loss if cfg.loss == "l1" else F.smooth_l1_loss
        return loss(raw, torch.nan_to_num(targets["age"]), reduction="none")
    if kind == "dldl":
        target = gaussian_label_distribution(torch.nan_to_num(targets["age_years"]), raw.shape[1], cfg.sigma)
        return F.kl_div(raw.log_softmax(1), target, reduction="none").sum(1)
    return F.cross_entropy(raw, targets["age_group"].clamp(min=0), reduction="none")


def multitask_loss(
    outputs: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    weighting: Mapping[str, float] | LossWeighting,
    age_kind: str = "regression",
    age_cfg: AgeHeadConfig | None = None,
) -> dict[str, torch.Tensor]:
    """Loss per task present in ``outputs`` and their weighted sum under ``"loss"``.

    ``targets`` holds ``gender`` (long, -1 when missing), ``age`` (standardised) and
    ``age_years`` (NaN when missing), ``age_group`` (long, -1 when missing), ``landmarks``
    (normalised offsets (N, 10), NaN when missing) and ``attributes`` ((N, A) 0/1, NaN when
    missing). ``weighting`` is a fixed weight per task or a :class:`LossWeighting`.
    """
    losses: dict[str, torch.Tensor] = {}
    if "gender" in outputs:
        gender = targets["gender"]
        ce = F.cross_entropy(outputs["gender"].float(), gender.clamp(min=0), reduction="none")
        losses["loss_gender"] = _masked_mean(ce, gender >= 0)
    if "age" in outputs:
        mask = torch.isfinite(targets["age"])
        per_sample = age_loss(outputs["age"], targets, age_kind, age_cfg or AgeHeadConfig())
        losses["loss_age"] = _masked_mean(per_sample, mask)
    if "landmarks" in outputs:
        lm = targets["landmarks"]
        mask = torch.isfinite(lm).all(dim=1)
        err = F.l1_loss(outputs["landmarks"].float(), torch.nan_to_num(lm), reduction="none").mean(1)
        losses["loss_landmarks"] = _masked_mean(err, mask)
    if "attributes" in outputs:
        attrs = targets["attributes"]
        bce = F.binary_cross_entropy_with_logits(
            outputs["attributes"].float(), torch.nan_to_num(attrs), reduction="none"
        )
        losses["loss_attributes"] = _masked_mean(bce.flatten(), torch.isfinite(attrs).flatten())
    per_task = {k.removeprefix("loss_"): v for k, v in losses.items()}
    if isinstance(weighting, LossWeighting):
        total = weighting(per_task)
    else:
        total = sum(weighting[k] * v for k, v in per_task.items())
    return {"loss": total, **losses}  # type: ignore[dict-item]


class LossWeighting(nn.Module):
    """Uncertainty weighting (Kendall, Gal & Cipolla 2018): ``Σ exp(−s_t)·L_t + s_t``.

    ``s_t`` is a learned log-variance per task: a task whose loss stays large (noisy labels, a
    hard task) gets a larger ``s_t`` and so a smaller weight, without hand-tuned weights. The
    ``+ s_t`` term keeps the weights from collapsing to zero.
    """

    def __init__(self, tasks: tuple[str, ...]) -> None:
        super().__init__()
        self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in tasks})

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(torch.exp(-self.log_vars[t]) * v + self.log_vars[t] for t, v in losses.items())  # type: ignore[return-value]

    def weights(self) -> dict[str, float]:
        """The effective weight ``exp(−s_t)`` of each task, for logging."""
        return {t: math.exp(-float(s.detach())) for t, s in self.log_vars.items()}
