"""Every registered backbone and head: shapes, keys, no NaN; margin heads; checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from faceattr.models.backbones import BACKBONES, create_backbone
from faceattr.models.checkpoint import load_checkpoint, load_multitask, save_checkpoint
from faceattr.models.heads import AGE_HEADS, MARGIN_HEADS, MarginHead, MultiTaskModel
from faceattr.train.finetune import imagenet_weights_path

ALL_TASKS = ("gender", "age", "landmarks", "attributes")


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("size", [32, 64])
def test_backbone_forward(name: str, size: int) -> None:
    size = {32: 112, 64: 150}[size] if name == "dlib_resnet" else size  # dlib's net: 150-px chips, 103 px at least
    trunk = create_backbone(name, input_size=size, embedding_size=24, width=8)
    out = trunk(torch.randn(3, 3, size, size))
    assert out.shape == (3, 24) and torch.isfinite(out).all()


def test_dlib_resnet_refuses_crops_too_small_for_it() -> None:
    with pytest.raises(ValueError, match="dlib_resnet needs crops of at least 103 px"):
        create_backbone("dlib_resnet", input_size=64, embedding_size=128)


def test_unknown_backbone_lists_choices() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown backbone 'resnet99'; choose from \['attn_cnn', 'dlib_resnet', 'face_resnet18', 'resnet18'\]",
    ):
        create_backbone("resnet99", input_size=64, embedding_size=8)


def test_attentional_cnn_exposes_its_attention_maps() -> None:
    trunk = create_backbone("attn_cnn", input_size=64, embedding_size=16, width=4)
    maps = trunk.attention(torch.randn(2, 3, 64, 64))
    assert maps.shape == (2, 1, 4, 4) and ((maps >= 0) & (maps <= 1)).all()


def test_resnet_face_stem_keeps_more_resolution_and_loads_imagenet_shapes() -> None:
    imagenet = create_backbone("resnet18", input_size=112, embedding_size=8)
    face = create_backbone("resnet18", input_size=112, embedding_size=8, stem="face")
    face.net.load_state_dict(imagenet.net.state_dict())  # no weight changes shape
    x = torch.randn(1, 3, 112, 112)
    body = torch.nn.Sequential(*list(face.net.children())[:-2])
    assert body(x).shape[-1] == 14 and face(x).shape == (1, 8)
    with pytest.raises(ValueError, match="unknown resnet stem 'tiny'"):
        create_backbone("resnet18", input_size=112, embedding_size=8, stem="tiny")


@pytest.mark.parametrize("age_head", AGE_HEADS)
def test_multitask_heads_return_named_outputs(age_head: str) -> None:
    trunk = create_backbone("face_resnet18", input_size=32, embedding_size=16, width=4)
    model = MultiTaskModel(trunk, ALL_TASKS, 16, age_head=age_head, max_age=90, group_edges=(10, 30), attributes=4)
    out = model(torch.randn(2, 3, 32, 32))
    age = {"regression": (2,), "dldl": (2, 91), "group": (2, 3)}[age_head]
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"gender": (2, 2), "age": age, "landmarks": (2, 10), "attributes": (2, 4)}
    assert all(torch.isfinite(v).all() for v in out.values())
    with pytest.raises(ValueError, match="unknown head 'height'"):
        MultiTaskModel(model.trunk, ("height",), 16)
    with pytest.raises(ValueError, match="needs both the gender and the age task"):
        MultiTaskModel(model.trunk, ("age",), 16, gender_conditioned=True)


def test_gender_conditioned_age_changes_when_gender_changes() -> None:
    torch.manual_seed(0)
    trunk = create_backbone("face_resnet18", input_size=32, embedding_size=16, width=4)
    model = MultiTaskModel(trunk, ("gender", "age"), 16, gender_conditioned=True).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        model.heads["age"].weight[0, -1] = 5.0  # the age head's weight on P(female)
        before = model(x)
        model.heads["gender"].bias.copy_(torch.tensor([10.0, -10.0]))  # now surely male
        after = model(x)
    assert not torch.allclose(before["gender"].softmax(1), after["gender"].softmax(1))
    assert (before["age"] - after["age"]).abs().min() > 0.01
    plain = MultiTaskModel(trunk, ("gender", "age"), 16).eval()
    with torch.no_grad():
        a = plain(x)["age"]
        plain.heads["gender"].bias.copy_(torch.tensor([10.0, -10.0]))
        torch.testing.assert_close(plain(x)["age"], a)  # without conditioning, age ignores gender


def _at_angles(target_deg: float, other_deg: float) -> tuple[MarginHead, torch.Tensor]:
    """A 2-d head with class 0 at 0° and class 1 at 90°, and one embedding at ``target_deg`` from
    class 0 (so ``90 − target_deg`` from class 1), of norm 3: angles known by construction."""
    head = MarginHead(2, 2, s=1.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # norms do not matter
    t = math.radians(target_deg)
    return head, torch.tensor([[3 * math.cos(t), 3 * math.sin(t)]])


# (m1, m2, m3, θ in degrees, published form of the target logit at s = 1)
MARGINS = [
    (1.0, 0.5, 0.0, 60.0, math.cos(math.radians(60) + 0.5)),  # ArcFace: cos(θ + m)
    (1.0, 0.0, 0.35, 60.0, 0.5 - 0.35),  # CosFace: cos θ − m
    (1.5, 0.0, 0.0, 60.0, math.cos(math.radians(90))),  # SphereFace-style: cos(m·θ)
    (1.0, 0.3, 0.2, 60.0, math.cos(math.radians(60) + 0.3) - 0.2),  # insightface's combined form
    # past θ + m = π insightface's ArcFace switches to cos θ − m·sin m (its "th"/"mm" branch)
    (1.0, 0.5, 0.0, 170.0, math.cos(math.radians(170)) - 0.5 * math.sin(0.5)),
]


@pytest.mark.parametrize(("m1", "m2", "m3", "theta", "expected"), MARGINS)
def test_combined_margin_gives_the_published_target_logit(m1, m2, m3, theta, expected) -> None:
    """Target logits at known angles against the papers' formulas, written out independently of
    heads.py; the other class's logit stays plain cos of its angle."""
    head, emb = _at_angles(theta, 90.0 - theta)
    head.m1, head.m2, head.m3 = m1, m2, m3
    logits = head(emb, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(expected, abs=1e-5)
    assert logits[0, 1].item() == pytest.approx(math.cos(math.radians(90.0 - theta)), abs=1e-5)


@pytest.mark.parametrize("kind", MARGIN_HEADS)
def test_margin_heads_reduce_to_scaled_cosines_at_zero_margin(kind: str) -> None:
    """With zero margins both heads give s·cos of the known angles (40° and 50°)."""
    head, emb = _at_angles(40.0, 50.0)
    head = MarginHead(2, 2, kind=kind, s=10.0, m1=1.0, m2=0.0, m3=0.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    logits = head(emb, torch.tensor([0]))
    expected = [10 * math.cos(math.radians(40)), 10 * math.cos(math.radians(50))]
    assert logits[0].tolist() == pytest.approx(expected, abs=1e-4)


def test_adaface_margin_follows_feature_norm() -> None:
    """AdaFace: g_ang = -m·n̂, g_add = m·n̂ + m, with n̂ the standardised feature norm clipped to [-1, 1]."""
    head = MarginHead(4, 3, kind="adaface", s=1.0, m2=0.4, h=1.0).eval()
    head.norm_mean.fill_(10.0), head.norm_std.fill_(1.0)
    direction = F.normalize(torch.randn(1, 4))
    labels = torch.tensor([0])
    cos = (direction @ F.normalize(head.weight).T).clamp(-1 + 1e-7, 1 - 1e-7)[0, 0]
    theta = torch.acos(cos)
    high = head(direction * 20, labels)[0, 0]  # norm 20: n̂ = +1, g_ang = -m, g_add = 2m (CosFace-like)
    low = head(direction * 1, labels)[0, 0]  # norm 1: n̂ = -1, g_ang = +m, g_add = 0 (ArcFace)
    torch.testing.assert_close(high, torch.cos((theta - 0.4).clamp(1e-3, math.pi - 1e-3)) - 0.8)
    torch.testing.assert_close(low, torch.cos((theta + 0.4).clamp(1e-3, math.pi - 1e-3)))


def test_unknown_margin_head() -> None:
    with pytest.raises(ValueError, match="unknown margin head 'sphere'"):
        MarginHead(4, 3, kind="sphere")


def _meta(**extra: object) -> dict:
    return {
        "backbone": "face_resnet18",
        "width": 4,
        "embedding_size": 16,
        "stem": "imagenet",
        "input_size": 32,
        "tasks": ["gender", "age"],
        "age_head": "dldl",
        "max_age": 50,
        "group_edges": [10.0, 20.0],
        "gender_conditioned": True,
        "attribute_names": [],
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "age_mean": 30.0,
        "age_std": 10.0,
        **extra,
    }


def test_checkpoint_round_trip_is_self_describing(tmp_path) -> None:
    trunk = create_backbone("face_resnet18", input_size=32, embedding_size=16, width=4)
    model = MultiTaskModel(trunk, ("gender", "age"), 16, age_head="dldl", max_age=50, gender_conditioned=True).eval()
    save_checkpoint(tmp_path / "m.pt", model.state_dict(), _meta())
    loaded, loaded_meta = load_multitask(tmp_path / "m.pt")
    assert loaded_meta == _meta()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))


def test_foreign_checkpoint_is_refused(tmp_path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a faceattr checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_imagenet_weights_missing_says_where(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"resnet18-f37072fd\.pth.*never downloads"):
        imagenet_weights_path(str(tmp_path / "resnet18-f37072fd.pth"))


def test_imagenet_weights_load_from_a_local_file(tmp_path) -> None:
    from torchvision.models import resnet18

    reference = resnet18(weights=None)
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    trunk = create_backbone("resnet18", input_size=64, embedding_size=8, weights_path=imagenet_weights_path(str(path)))
    torch.testing.assert_close(trunk.net.conv1.weight, reference.conv1.weight)
