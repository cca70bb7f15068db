"""Every registered backbone and head: shapes, keys, no NaN; margin head; checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from faceattr.models.backbones import BACKBONES, create_backbone
from faceattr.models.checkpoint import load_checkpoint, load_multitask, save_checkpoint
from faceattr.models.heads import HEAD_OUTPUTS, ArcFaceHead, MultiTaskModel
from faceattr.train.finetune import imagenet_weights_path


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("size", [32, 64])
def test_backbone_forward(name: str, size: int) -> None:
    trunk = create_backbone(name, input_size=size, embedding_size=24, width=8)
    out = trunk(torch.randn(3, 3, size, size))
    assert out.shape == (3, 24) and torch.isfinite(out).all()


def test_unknown_backbone_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet99'; choose from \['face_resnet18', 'resnet18'\]"):
        create_backbone("resnet99", input_size=64, embedding_size=8)


def test_multitask_heads_return_named_outputs() -> None:
    model = MultiTaskModel(
        create_backbone("face_resnet18", input_size=32, embedding_size=16, width=4), tuple(HEAD_OUTPUTS), 16
    )
    out = model(torch.randn(2, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"gender": (2, 2), "age": (2,), "landmarks": (2, 10)}
    assert all(torch.isfinite(v).all() for v in out.values())
    with pytest.raises(ValueError, match="unknown head 'height'"):
        MultiTaskModel(model.trunk, ("height",), 16)


def test_arcface_with_zero_margin_is_scaled_cosine_softmax() -> None:
    head = ArcFaceHead(8, 5, s=10.0, m=0.0)
    emb, labels = torch.randn(4, 8), torch.tensor([0, 1, 2, 3])
    cosine = F.normalize(emb) @ F.normalize(head.weight).T
    torch.testing.assert_close(head(emb, labels), 10 * cosine.clamp(-1 + 1e-7, 1 - 1e-7))


def test_arcface_margin_lowers_only_the_target_logit() -> None:
    head = ArcFaceHead(8, 5, s=1.0, m=0.5)
    emb, labels = torch.randn(4, 8), torch.tensor([0, 1, 2, 3])
    plain = ArcFaceHead(8, 5, s=1.0, m=0.0)
    plain.weight = head.weight
    diff = plain(emb, labels) - head(emb, labels)
    target = diff.gather(1, labels[:, None]).squeeze(1)
    assert (target > 0).all()
    mask = F.one_hot(labels, 5).bool()
    assert torch.equal(diff[~mask], torch.zeros_like(diff[~mask]))
    theta = torch.acos(plain(emb, labels).gather(1, labels[:, None]).squeeze(1))
    expected = torch.where(theta + 0.5 < math.pi, torch.cos(theta + 0.5), torch.cos(theta) - 0.5 * math.sin(0.5))
    torch.testing.assert_close(head(emb, labels).gather(1, labels[:, None]).squeeze(1), expected)


def test_checkpoint_round_trip_is_self_describing(tmp_path) -> None:
    trunk = create_backbone("face_resnet18", input_size=32, embedding_size=16, width=4)
    model = MultiTaskModel(trunk, ("gender", "age"), 16).eval()
    meta = {
        "backbone": "face_resnet18",
        "width": 4,
        "embedding_size": 16,
        "input_size": 32,
        "tasks": ["gender", "age"],
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "age_mean": 30.0,
        "age_std": 10.0,
    }
    save_checkpoint(tmp_path / "m.pt", model.state_dict(), meta)
    loaded, loaded_meta = load_multitask(tmp_path / "m.pt")
    assert loaded_meta == meta
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
