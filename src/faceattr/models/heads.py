"""Heads on top of a trunk's embedding: the multi-task model and the identity margin head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HEAD_OUTPUTS = {"gender": 2, "age": 1, "landmarks": 10}


class MultiTaskModel(nn.Module):
    """Trunk → embedding → one named head per task; ``forward`` returns a dict keyed by task."""

    def __init__(self, trunk: nn.Module, tasks: tuple[str, ...], embedding_size: int) -> None:
        super().__init__()
        unknown = [t for t in tasks if t not in HEAD_OUTPUTS]
        if unknown:
            raise ValueError(f"unknown head '{unknown[0]}'; choose from {sorted(HEAD_OUTPUTS)}")
        self.trunk = trunk
        self.heads = nn.ModuleDict({t: nn.Linear(embedding_size, HEAD_OUTPUTS[t]) for t in tasks})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(x)
        out = {name: head(z) for name, head in self.heads.items()}
        if "age" in out:
            out["age"] = out["age"].squeeze(1)
        return out


class ArcFaceHead(nn.Module):
    """Additive angular margin (ArcFace): logits ``s·cos(θ + m)`` for the true class.

    Kept outside the trunk, so that identity pretraining saves a trunk-only checkpoint.
    With ``m = 0`` it is a softmax over scaled cosine similarities.
    """

    def __init__(self, embedding_size: int, classes: int, s: float = 64.0, m: float = 0.5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)
        self.s, self.m = s, m

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = F.linear(F.normalize(embedding), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(cosine)
        target = torch.cos(theta + self.m)
        # Past θ = π - m the margin would make the target logit grow again: use cosFace's form there.
        target = torch.where(theta + self.m < math.pi, target, cosine - self.m * math.sin(self.m))
        one_hot = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype)
        return self.s * (one_hot * target + (1 - one_hot) * cosine)
