"""Masked losses ignore missing labels and return a dict."""

from __future__ import annotations

import torch

from faceattr.train.losses import multitask_loss

WEIGHTS = {"gender": 1.0, "age": 2.0, "landmarks": 0.5}


def _batch() -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(0)
    out = {
        "gender": torch.randn(6, 2, generator=g, requires_grad=True),
        "age": torch.randn(6, generator=g),
        "landmarks": torch.randn(6, 10, generator=g),
    }
    tgt = {
        "gender": torch.tensor([0, 1, -1, 1, -1, 0]),
        "age": torch.tensor([0.1, float("nan"), 0.3, float("nan"), 0.5, 0.2]),
        "landmarks": torch.randn(6, 10, generator=g),
    }
    tgt["landmarks"][1] = float("nan")
    return out, tgt


def test_keys_and_weighted_sum() -> None:
    out, tgt = _batch()
    losses = multitask_loss(out, tgt, WEIGHTS)
    assert set(losses) == {"loss", "loss_gender", "loss_age", "loss_landmarks"}
    expected = losses["loss_gender"] + 2 * losses["loss_age"] + 0.5 * losses["loss_landmarks"]
    torch.testing.assert_close(losses["loss"], expected)


def test_masked_samples_do_not_matter() -> None:
    out, tgt = _batch()
    before = multitask_loss(out, tgt, WEIGHTS)
    out2 = {k: v.detach().clone() for k, v in out.items()}
    out2["gender"][[2, 4]] = 100.0  # predictions for samples without gender
    out2["age"][[1, 3]] = -50.0
    out2["landmarks"][1] = 9.0
    after = multitask_loss(out2, tgt, WEIGHTS)
    for key in before:
        torch.testing.assert_close(before[key].detach(), after[key])


def test_masked_mean_is_the_mean_over_labelled_samples() -> None:
    out, tgt = _batch()
    losses = multitask_loss({"age": out["age"]}, tgt, WEIGHTS)
    keep = torch.isfinite(tgt["age"])
    torch.testing.assert_close(losses["loss_age"], (out["age"][keep] - tgt["age"][keep]).abs().mean())


def test_no_labels_gives_zero_not_nan() -> None:
    out = {"gender": torch.randn(3, 2, requires_grad=True)}
    losses = multitask_loss(out, {"gender": torch.full((3,), -1)}, WEIGHTS)
    assert losses["loss"].item() == 0.0
    losses["loss"].backward()
    assert torch.isfinite(out["gender"].grad).all()


def test_only_present_heads_contribute() -> None:
    out, tgt = _batch()
    losses = multitask_loss({"gender": out["gender"]}, tgt, WEIGHTS)
    assert set(losses) == {"loss", "loss_gender"}
