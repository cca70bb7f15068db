"""Masked, weighted multi-task losses returned as a dict ready for logging.

A sample without a label for a task is masked out of that task's loss; it is never given a
sentinel value that the loss could learn from.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F


def _masked_mean(per_sample: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked samples; zero (with a gradient path) when no sample has the label."""
    mask = mask.to(per_sample.dtype)
    return (per_sample * mask).sum() / mask.sum().clamp(min=1.0)


def multitask_loss(
    outputs: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
) -> dict[str, torch.Tensor]:
    """Loss per task present in ``outputs`` and their weighted sum under ``"loss"``.

    ``targets`` holds ``gender`` (long, -1 when missing), ``age`` (normalised, NaN when missing)
    and ``landmarks`` (normalised offsets (N, 10), NaN when missing). Age and landmarks use L1,
    the loss whose minimiser is what MAE and NME measure.
    """
    losses: dict[str, torch.Tensor] = {}
    if "gender" in outputs:
        gender = targets["gender"]
        mask = gender >= 0
        ce = F.cross_entropy(outputs["gender"].float(), gender.clamp(min=0), reduction="none")
        losses["loss_gender"] = _masked_mean(ce, mask)
    if "age" in outputs:
        age = targets["age"]
        mask = torch.isfinite(age)
        err = F.l1_loss(outputs["age"].float(), torch.nan_to_num(age), reduction="none")
        losses["loss_age"] = _masked_mean(err, mask)
    if "landmarks" in outputs:
        lm = targets["landmarks"]
        mask = torch.isfinite(lm).all(dim=1)
        err = F.l1_loss(outputs["landmarks"].float(), torch.nan_to_num(lm), reduction="none").mean(1)
        losses["loss_landmarks"] = _masked_mean(err, mask)
    total = sum(weights[k.removeprefix("loss_")] * v for k, v in losses.items())
    return {"loss": total, **losses}  # type: ignore[dict-item]
