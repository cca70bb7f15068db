"""Backbone registry: every trunk maps a face crop to an embedding vector.

``FaceResNet18`` is the IResNet-18 of ArcFace/AdaFace (insightface ``iresnet.py``): a stride-1 3×3
stem, pre-activation "IBasicBlock"s with PReLU, and a BN-Dropout-FC-BN embedding layer. The
``width`` knob scales every stage's channels (64 is the paper's network; smaller widths make the
embedded default finish on a laptop CPU). ``dlib_resnet`` is dlib's face-recognition ResNet
(``faceattr.models.dlib_resnet``), with dlib's weights (pretraining ``dlib``) or from scratch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


class IBasicBlock(nn.Module):
    """insightface's pre-activation residual block: BN-conv-BN-PReLU-conv-BN (+ shortcut)."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(inplanes, eps=1e-5),
            nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False),
            nn.BatchNorm2d(planes, eps=1e-5),
            nn.PReLU(planes),
            nn.Conv2d(planes, planes, 3, stride, 1, bias=False),
            nn.BatchNorm2d(planes, eps=1e-5),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inplanes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes, eps=1e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class IResNet(nn.Module):
    """IResNet trunk; the spatial size of the last map is ``input_size / 16``."""

    def __init__(
        self,
        layers: tuple[int, ...],
        input_size: int,
        embedding_size: int,
        width: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if input_size % 16:
            raise ValueError(f"FaceResNet input size must be a multiple of 16, got {input_size}")
        widths = [width, width * 2, width * 4, width * 8]
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width, eps=1e-5), nn.PReLU(width)
        )
        stages: list[nn.Module] = []
        inplanes = width
        for planes, blocks in zip(widths, layers, strict=True):
            stages.append(IBasicBlock(inplanes, planes, stride=2))
            stages.extend(IBasicBlock(planes, planes, stride=1) for _ in range(blocks - 1))
            inplanes = planes
        self.stages = nn.Sequential(*stages)
        spatial = input_size // 16
        self.bn = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(inplanes * spatial * spatial, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        self.embedding_size = embedding_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.stages(self.stem(x)))
        return self.features(self.fc(torch.flatten(self.dropout(x), 1)))


class TorchvisionResNet(nn.Module):
    """torchvision ResNet-18 trunk with its classifier replaced by a linear embedding layer.

    ``stem="face"`` adapts it to 112-px face crops as face-recognition works do: the first
    convolution gets stride 1 and the max-pool goes, so the last map is 7×7 rather than 4×4
    (16× the compute). The ImageNet weights still load, since no weight changes shape.
    """

    def __init__(self, embedding_size: int, weights_path: Path | None = None, stem: str = "imagenet") -> None:
        super().__init__()
        from torchvision.models import resnet18

        if stem not in ("imagenet", "face"):
            raise ValueError(f"unknown resnet stem '{stem}'; choose from ['imagenet', 'face']")
        net = resnet18(weights=None)
        if weights_path is not None:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        if stem == "face":
            net.conv1.stride = (1, 1)
            net.maxpool = nn.Identity()  # type: ignore[assignment]
        net.fc = nn.Identity()  # type: ignore[assignment]
        self.net = net
        self.embed = nn.Linear(512, embedding_size)
        self.embedding_size = embedding_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.net(x))


class AttentionalCNN(nn.Module):
    """The second paper's attentional CNN: plain conv blocks, then a spatial attention map.

    A 1×1-conv branch scores every position of the last feature map; the sigmoid of that score
    weights the map before pooling, so the embedding is an attention-weighted mean of local
    features. ``attention(x)`` returns the maps (N, 1, S/16, S/16) for figures.
    """

    def __init__(self, input_size: int, embedding_size: int, width: int = 32) -> None:
        super().__init__()
        if input_size % 16:
            raise ValueError(f"AttentionalCNN input size must be a multiple of 16, got {input_size}")
        layers: list[nn.Module] = []
        channels = 3
        for out in (width, width * 2, width * 4, width * 8):
            layers += [
                nn.Conv2d(channels, out, 3, 1, 1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, 1, 1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = out
        self.body = nn.Sequential(*layers)
        self.score = nn.Sequential(nn.Conv2d(channels, width, 1), nn.ReLU(inplace=True), nn.Conv2d(width, 1, 1))
        self.fc = nn.Linear(channels, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size)
        self.embedding_size = embedding_size

    def _maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return f, torch.sigmoid(self.score(f))

    @torch.no_grad()
    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention maps in [0, 1], one per image."""
        return self._maps(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, a = self._maps(x)
        pooled = (f * a).sum((2, 3)) / a.sum((2, 3)).clamp(min=1e-6)
        return self.features(self.fc(pooled))


def _face_resnet18(input_size: int, embedding_size: int, width: int, **_: object) -> nn.Module:
    return IResNet((2, 2, 2, 2), input_size, embedding_size, width=width)


def _resnet18(
    input_size: int, embedding_size: int, weights_path: Path | None = None, stem: str = "imagenet", **_: object
) -> nn.Module:
    del input_size  # global average pooling accepts any size
    return TorchvisionResNet(embedding_size, weights_path, stem)


def _dlib_resnet(
    input_size: int,
    embedding_size: int,
    weights_path: Path | None = None,
    features: str = "embedding",
    norm: str | None = None,
    **_: object,
) -> nn.Module:
    """dlib's network (its widths are fixed: ``width`` does not apply); ``features`` picks what
    the heads see, its descriptor (``embedding_size``: dlib's weights have 128) or the 256-d pool.
    ``norm``: dlib's weights come with ``affine`` layers (batch norm folded in: fine-tuned so, as
    frozen statistics); from scratch the network has batch norm, as dlib trains it (default)."""
    from faceattr.models import dlib_resnet

    if input_size < dlib_resnet.MIN_INPUT_SIZE:
        smallest = dlib_resnet.MIN_INPUT_SIZE
        raise ValueError(f"dlib_resnet needs crops of at least {smallest} px (dlib's chips are 150), got {input_size}")
    if weights_path is None:
        return dlib_resnet.DlibResNet(embedding_size, features=features, norm=norm or "batch")
    if embedding_size != dlib_resnet.EMBEDDING_SIZE:
        raise ValueError(f"dlib's weights give a {dlib_resnet.EMBEDDING_SIZE}-d descriptor, not {embedding_size}")
    return dlib_resnet.load_dlib_resnet(weights_path, features=features).train()


def _attn_cnn(input_size: int, embedding_size: int, width: int, **_: object) -> nn.Module:
    return AttentionalCNN(input_size, embedding_size, width=width)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "face_resnet18": _face_resnet18,
    "resnet18": _resnet18,
    "attn_cnn": _attn_cnn,
    "dlib_resnet": _dlib_resnet,
}

# Pretraining each backbone can start from; "identity" is this pipeline's own pretrain stage
# (it must have trained the same backbone: pretrain_identity.backbone); "dlib": dlib's weights
# (about 3 million faces of 7,485 people), from the face_recognition_models package.
PRETRAININGS: dict[str, tuple[str, ...]] = {
    "face_resnet18": ("identity", "none"),
    "resnet18": ("imagenet", "identity", "none"),
    "attn_cnn": ("identity", "none"),
    "dlib_resnet": ("dlib", "identity", "none"),
}


def create_backbone(
    name: str,
    *,
    input_size: int,
    embedding_size: int,
    width: int = 64,
    weights_path: Path | None = None,
    stem: str = "imagenet",
    features: str = "embedding",
    norm: str | None = None,
) -> nn.Module:
    """Build a registered backbone by name (``stem`` applies to resnet18 only, ``features`` to
    dlib_resnet; ``weights_path``: ImageNet's for resnet18, dlib's ``.dat`` for dlib_resnet).

    Raises:
        ValueError: for an unknown name, listing the registered ones.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}'; choose from {sorted(BACKBONES)}")
    return BACKBONES[name](
        input_size=input_size,
        embedding_size=embedding_size,
        width=width,
        weights_path=weights_path,
        stem=stem,
        features=features,
        norm=norm,
    )


def output_size(trunk: nn.Module) -> int:
    """The width of what a trunk gives its heads."""
    return int(getattr(trunk, "output_size", None) or trunk.embedding_size)
