"""Masked losses ignore missing labels and return a dict."""

from __future__ import annotations

import pytest
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


def test_dldl_expectation_matches_a_known_distribution() -> None:
    """Logits that are the log of a known distribution decode to its mean, in years."""
    from faceattr.train.data import LabelCodec

    years = torch.arange(101, dtype=torch.float32)
    known = torch.exp(-((years - 37.3) ** 2) / (2 * 3.0**2))
    known /= known.sum()
    skewed = torch.where(years < 20, 1.0, 0.0) + torch.where(years == 80, 2.0, 0.0)
    skewed /= skewed.sum()
    logits = torch.stack([known.log(), skewed.clamp(min=1e-12).log()])
    codec = LabelCodec(64, 30.0, 10.0, age_head="dldl", max_age=100)
    expected = torch.stack([(known * years).sum(), (skewed * years).sum()])
    torch.testing.assert_close(codec.decode({"age": logits})["age"], expected)
    assert abs(float(expected[0]) - 37.3) < 1e-3 and abs(float(expected[1]) - (9.5 * 20 + 160) / 22) < 1e-3


def test_dldl_targets_are_gaussians_centred_on_the_age() -> None:
    from faceattr.train.losses import gaussian_label_distribution

    target = gaussian_label_distribution(torch.tensor([25.0, 60.5]), 101, 2.0)
    years = torch.arange(101.0)
    torch.testing.assert_close(target.sum(1), torch.ones(2))
    torch.testing.assert_close(target @ years, torch.tensor([25.0, 60.5]))
    torch.testing.assert_close(((years - 25.0) ** 2 * target[0]).sum().sqrt(), torch.tensor(2.0), atol=1e-3, rtol=0)


def test_dldl_loss_is_zero_at_the_target_and_masks_missing_ages() -> None:
    from faceattr.config import AgeHeadConfig
    from faceattr.train.losses import gaussian_label_distribution

    cfg = AgeHeadConfig(max_age=50, sigma=2.0)
    ages = torch.tensor([20.0, float("nan")])
    logits = gaussian_label_distribution(torch.tensor([20.0, 40.0]), 51, 2.0).clamp(min=1e-30).log()
    targets = {"age": ages / 10, "age_years": ages}
    loss = multitask_loss({"age": logits}, targets, {"age": 1.0}, "dldl", cfg)
    assert float(loss["loss_age"]) == pytest.approx(0.0, abs=1e-5)
    wrong = multitask_loss({"age": logits.flip(0)}, targets, {"age": 1.0}, "dldl", cfg)
    assert float(wrong["loss_age"]) > 1.0


def test_group_head_loss_and_decoding() -> None:
    from faceattr.config import AgeHeadConfig
    from faceattr.train.data import LabelCodec, group_centres, group_index

    edges = (10.0, 20.0, 40.0)
    assert group_index(torch.tensor([0.0, 9.9, 10.0, 39.0, 40.0, 90.0]), edges).tolist() == [0, 0, 1, 2, 3, 3]
    assert group_centres(edges) == [5.0, 15.0, 30.0, 50.0]
    codec = LabelCodec(64, 30.0, 10.0, age_head="group", group_edges=edges)
    target = codec.encode(torch.tensor([0]), torch.tensor([35.0]), torch.zeros(1, 5, 2))
    assert target["age_group"].tolist() == [2]
    logits = torch.tensor([[-9.0, -9.0, 9.0, -9.0]])
    out = codec.decode({"age": logits})
    assert out["age_group"].argmax(1).tolist() == [2] and float(out["age"][0]) == pytest.approx(30.0, abs=0.01)
    loss = multitask_loss({"age": logits}, target, {"age": 1.0}, "group", AgeHeadConfig(group_edges=edges))
    assert float(loss["loss_age"]) < 1e-3


def test_attribute_loss_masks_unknown_attributes() -> None:
    logits = torch.tensor([[5.0, -5.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    attrs = torch.tensor([[1.0, 0.0, float("nan")], [float("nan")] * 3])
    loss = multitask_loss({"attributes": logits}, {"attributes": attrs}, {"attributes": 1.0})["loss_attributes"]
    loss.backward()
    assert float(loss.detach()) < 0.01 and logits.grad[1].abs().sum() == 0 and logits.grad[0, 2] == 0


def test_uncertainty_weighting_learns_the_right_ordering() -> None:
    """Two regressions sharing nothing, one with 10× the label noise: the noisy task gets the
    larger learned log-variance, i.e. the smaller weight."""
    from faceattr.train.losses import LossWeighting

    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=g)
    w_true = torch.randn(4, generator=g)
    y_clean = x @ w_true + 0.1 * torch.randn(512, generator=g)
    y_noisy = x @ w_true + 1.0 * torch.randn(512, generator=g)
    heads = torch.nn.ModuleDict({"clean": torch.nn.Linear(4, 1), "noisy": torch.nn.Linear(4, 1)})
    weighting = LossWeighting(("clean", "noisy"))
    opt = torch.optim.Adam([*heads.parameters(), *weighting.parameters()], lr=0.05)
    for _ in range(400):
        losses = {
            "clean": ((heads["clean"](x).squeeze(1) - y_clean) ** 2).mean(),
            "noisy": ((heads["noisy"](x).squeeze(1) - y_noisy) ** 2).mean(),
        }
        opt.zero_grad()
        weighting(losses).backward()
        opt.step()
    s = {k: float(v.detach()) for k, v in weighting.log_vars.items()}
    assert s["noisy"] > s["clean"] + 2.0, s  # log σ² ≈ log MSE: log(1) vs log(0.01)
    assert weighting.weights()["clean"] > 10 * weighting.weights()["noisy"]


def test_uncertainty_weighting_through_multitask_loss() -> None:
    from faceattr.train.losses import LossWeighting

    out, tgt = _batch()
    weighting = LossWeighting(("gender", "age", "landmarks"))
    with torch.no_grad():
        weighting.log_vars["age"].fill_(1.0)
    losses = multitask_loss(out, tgt, weighting)
    expected = (
        losses["loss_gender"] + losses["loss_landmarks"] + torch.exp(torch.tensor(-1.0)) * losses["loss_age"] + 1.0
    )
    torch.testing.assert_close(losses["loss"], expected)
