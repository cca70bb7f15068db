"""Heads on top of a trunk's embedding: the multi-task model and the identity margin heads.

Age has three heads (``AGE_HEADS``): ``regression`` (one standardised number), ``dldl``
(label-distribution learning: logits over whole years, the prediction is the expectation) and
``group`` (logits over age groups, the second paper's buckets). With ``gender_conditioned`` the
predicted probability of "female" is appended to the embedding the age head reads, as in the
second paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

FIXED_OUTPUTS = {"gender": 2, "landmarks": 10}
AGE_HEADS = ("regression", "dldl", "group")
TEST_TIME = ("none", "flip")  # test-time augmentation of a fine-tuned model (finetune_multitask.tta)
FLIP_ORDER = (1, 0, 2, 4, 3)  # after a horizontal flip the left eye becomes the right eye, etc.


def age_outputs(kind: str, max_age: int, group_edges: Sequence[float]) -> int:
    """Width of the age head: 1, one logit per whole year 0..max_age, or one per age group."""
    if kind == "regression":
        return 1
    if kind == "dldl":
        return max_age + 1
    if kind == "group":
        return len(group_edges) + 1
    raise ValueError(f"unknown age head '{kind}'; choose from {list(AGE_HEADS)}")


class MultiTaskModel(nn.Module):
    """Trunk → embedding → one named head per task; ``forward`` returns a dict keyed by task.

    ``age`` is (N,) standardised years for the regression head and (N, K) logits otherwise;
    ``attributes`` is (N, A) logits, one per binary attribute.

    After :meth:`flip_at_test` the model in eval mode also runs each image mirrored and returns
    the mean of both raw outputs (the mirrored landmarks mapped back first), so every consumer of
    the network (validation, evaluate, predict, ONNX, serving) gets the same test-time
    augmentation; in training mode it runs each image once.
    """

    def __init__(
        self,
        trunk: nn.Module,
        tasks: tuple[str, ...],
        embedding_size: int,
        *,
        age_head: str = "regression",
        max_age: int = 100,
        group_edges: Sequence[float] = (10, 20, 30, 40, 50, 60, 70),
        gender_conditioned: bool = False,
        attributes: int = 0,
    ) -> None:
        super().__init__()
        known = (*FIXED_OUTPUTS, "age", "attributes")
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise ValueError(f"unknown head '{unknown[0]}'; choose from {sorted(known)}")
        if gender_conditioned and not {"gender", "age"} <= set(tasks):
            raise ValueError("a gender-conditioned age head needs both the gender and the age task")
        if "attributes" in tasks and attributes < 1:
            raise ValueError("the attributes task needs a data set with attribute labels (attr_* columns)")
        self.trunk = trunk
        self.age_head = age_head
        self.gender_conditioned = gender_conditioned
        heads: dict[str, nn.Module] = {}
        for t in tasks:
            if t == "age":
                width = age_outputs(age_head, max_age, group_edges)
                heads[t] = nn.Linear(embedding_size + int(gender_conditioned), width)
            elif t == "attributes":
                heads[t] = nn.Linear(embedding_size, attributes)
            else:
                heads[t] = nn.Linear(embedding_size, FIXED_OUTPUTS[t])
        self.heads = nn.ModuleDict(heads)
        self.flip = False

    def flip_at_test(self, template: Sequence[Sequence[float]], size: int, unit: float) -> MultiTaskModel:
        """Average each eval-mode output with that of the mirrored image. The landmark head predicts
        offsets ``o`` from the crop template ``t`` (crop pixels, ``size`` px crops) in units of
        ``unit`` px; the mirror of point ``i`` is point ``FLIP_ORDER[i]`` at ``x → size − x``, so in
        offsets it is a permutation, a sign on x and a constant (not saved with the weights: it
        follows from the checkpoint's meta)."""
        t = torch.tensor(template, dtype=torch.float32).view(5, 2)
        mirrored = t[list(FLIP_ORDER)]
        offset = torch.stack([(size - mirrored[:, 0] - t[:, 0]) / unit, (mirrored[:, 1] - t[:, 1]) / unit], 1)
        self.register_buffer("flip_offset", offset.flatten(), persistent=False)
        self.register_buffer("flip_sign", torch.tensor([-1.0, 1.0]).repeat(5), persistent=False)
        self.flip = True
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.flip or self.training:
            return self._forward(x)
        both = self._forward(torch.cat([x, x.flip(3)]))  # one batch of twice the images
        out = {}
        for name, value in both.items():
            plain, mirrored = value.unflatten(0, (2, -1))  # no batch size in the graph: ONNX keeps it dynamic
            if name == "landmarks":
                points = mirrored.reshape(-1, 5, 2)[:, list(FLIP_ORDER)].flatten(1)
                mirrored = points * self.flip_sign.to(points.dtype) + self.flip_offset.to(points.dtype)
            out[name] = (plain + mirrored) / 2
        return out

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(x)
        out = {name: head(z) for name, head in self.heads.items() if name != "age"}
        if "age" in self.heads:
            if self.gender_conditioned:
                p_female = out["gender"].float().softmax(1)[:, 1:].to(z.dtype)
                z = torch.cat([z, p_female], 1)
            age = self.heads["age"](z)
            out["age"] = age.squeeze(1) if self.age_head == "regression" else age
        return out


class MarginHead(nn.Module):
    """Identity classifier over cosine similarities with a margin on the true class.

    ``combined``: the true-class logit is ``s·(cos(m1·θ + m2) − m3)`` (insightface's combined
    margin): ArcFace is (1, m, 0), CosFace (1, 0, m), SphereFace (m, 0, 0).
    ``adaface``: AdaFace's feature-norm adaptive margin. With ``h``-scaled, batch-standardised
    feature norms ``n̂`` in [-1, 1] the true-class logit is ``s·(cos(θ + g_ang) − g_add)`` with
    ``g_ang = −m·n̂`` and ``g_add = m·n̂ + m``: a low-quality (small-norm) face gets ArcFace's
    angular margin ``cos(θ + m)``, a high-quality one ``cos(θ − m) − 2m``, which puts the weight
    on hard high-quality faces. The norm statistics are running averages.

    With zero margins both are a plain softmax over ``s·cos θ``. Kept outside the trunk, so that
    identity pretraining saves a trunk-only checkpoint.
    """

    def __init__(
        self,
        embedding_size: int,
        classes: int,
        *,
        kind: str = "combined",
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
        h: float = 0.333,
    ) -> None:
        super().__init__()
        if kind not in MARGIN_HEADS:
            raise ValueError(f"unknown margin head '{kind}'; choose from {list(MARGIN_HEADS)}")
        self.weight = nn.Parameter(torch.empty(classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)
        self.kind, self.s, self.m1, self.m2, self.m3, self.h = kind, s, m1, m2, m3, h
        self.register_buffer("norm_mean", torch.tensor(20.0))
        self.register_buffer("norm_std", torch.tensor(100.0))

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Margin logits, computed in fp32 also under bf16 autocast: in bf16 the clamp at 1 − 1e-7
        rounds to 1, ``acos`` near 1 loses its margin, and logits move by tenths."""
        with torch.autocast(embedding.device.type, enabled=False):
            return self._logits(embedding.float(), labels)

    def _logits(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = F.linear(F.normalize(embedding), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        target = self._adaface_target(embedding, cosine) if self.kind == "adaface" else self._combined_target(cosine)
        one_hot = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype)
        return self.s * (one_hot * target + (1 - one_hot) * cosine)

    def _combined_target(self, cosine: torch.Tensor) -> torch.Tensor:
        if self.m1 == 1.0 and self.m2 == 0.0:
            return cosine - self.m3
        theta = torch.acos(cosine)
        target = torch.cos(self.m1 * theta + self.m2) - self.m3
        # Past m1·θ + m2 = π the margin would make the target logit grow again: use CosFace's form.
        return torch.where(self.m1 * theta + self.m2 < math.pi, target, cosine - self.m2 * math.sin(self.m2) - self.m3)

    def _adaface_target(self, embedding: torch.Tensor, cosine: torch.Tensor) -> torch.Tensor:
        norms = embedding.detach().float().norm(dim=1).clamp(0.001, 100)
        if self.training and len(norms) > 1:
            with torch.no_grad():
                self.norm_mean.mul_(0.99).add_(0.01 * norms.mean())
                self.norm_std.mul_(0.99).add_(0.01 * norms.std())
        scaled = ((norms - self.norm_mean) / (self.norm_std + 1e-3) * self.h).clamp(-1, 1)[:, None]
        g_ang, g_add = -self.m2 * scaled, self.m2 * scaled + self.m2
        theta = torch.acos(cosine)
        return torch.cos((theta + g_ang).clamp(1e-3, math.pi - 1e-3)) - g_add


MARGIN_HEADS = ("combined", "adaface")
