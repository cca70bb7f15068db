"""Tensors for training: a split loaded once, batches drawn by index, augmentation on the device.

The whole split is small enough to live as one uint8 tensor; batches are index tensors drawn from
a seeded generator, so an epoch's order depends only on (seed, epoch) and a resumed training
sees exactly the batches it would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from faceattr.config import AugmentConfig
from faceattr.data.align import template
from faceattr.data.manifest import LANDMARK_COLUMNS
from faceattr.data.packed import read_store
from faceattr.distributed import current, shard

FLIP_ORDER = [1, 0, 2, 4, 3]  # after a horizontal flip the left eye becomes the right eye, etc.
# Input normalisation per pretraining: insightface trunks expect [-1, 1], ImageNet weights their own.
NORMALISATION = {
    "default": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class FaceTensors:
    """Aligned crops and labels of one split; missing labels are -1 (gender, identity) or NaN."""

    images: torch.Tensor  # uint8 (N, 3, S, S)
    gender: torch.Tensor  # int64 (N,)
    age: torch.Tensor  # float32 (N,) years
    landmarks: torch.Tensor  # float32 (N, 5, 2) crop pixels
    identity: torch.Tensor  # int64 (N,) index into ``identity_names``
    identity_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


def read_split_file(path: str | Path) -> pd.DataFrame:
    """Read the split stage's assignment of store rows to pools."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file '{path}' not found; run the split stage first")
    return pd.read_csv(path, dtype={"split": "string"})


def load_split(store: str | Path, split_file: str | Path, pools: tuple[str, ...]) -> FaceTensors:
    """Load the rows of the given pools from the packed store."""
    faces, labels = read_store(store)
    splits = read_split_file(split_file)
    rows = np.sort(splits.loc[splits["split"].isin(pools), "index"].to_numpy())
    if len(rows) == 0:
        raise ValueError(f"split file '{split_file}' has no rows in pools {list(pools)}")
    sub = labels.iloc[rows]
    names = tuple(sorted(sub["identity"].dropna().unique()))
    lookup = {n: i for i, n in enumerate(names)}
    return FaceTensors(
        images=torch.from_numpy(np.ascontiguousarray(faces[rows])).permute(0, 3, 1, 2).contiguous(),
        gender=torch.tensor(sub["gender"].fillna(-1).to_numpy(dtype=np.int64)),
        age=torch.tensor(sub["age"].astype("float64").to_numpy(dtype=np.float32, na_value=np.nan)),
        landmarks=torch.tensor(
            sub[list(LANDMARK_COLUMNS)].astype("float64").to_numpy(dtype=np.float32, na_value=np.nan)
        ).view(-1, 5, 2),
        identity=torch.tensor([lookup.get(x, -1) if isinstance(x, str) else -1 for x in sub["identity"]]),
        identity_names=names,
    )


def for_device(data: FaceTensors, device: torch.device) -> FaceTensors:
    """Pin the images in page-locked memory when they will be copied to a GPU (async copies)."""
    return replace(data, images=data.images.pin_memory()) if device.type == "cuda" else data


def batch_indices(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Shuffled (with a generator) or ordered (without) index batches covering all ``n`` rows.

    Shuffled batches under torchrun are this process's shard of the epoch's order (the same
    order on every rank, since the generator is seeded alike): disjoint across ranks.
    """
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    if generator is not None:
        order = shard(order, current())
    yield from order.split(batch_size)


def to_input(
    images: torch.Tensor,
    device: torch.device,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 NCHW on the host -> float on ``device``, normalised per channel (NHWC if asked)."""
    x = images.to(device, non_blocking=True).float().div_(255)
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    x = (x - m) / s
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def sample_augment(
    n: int, cfg: AugmentConfig, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random forward maps for a batch: linear part (n, 2, 2), shift (n, 2) and flip (n,).

    They act in ``affine_grid``'s normalised coordinates, where a crop-pixel coordinate ``p``
    (pixel ``i`` spans [i, i+1]) maps to ``u = 2p/S - 1`` (``align_corners=False``), as
    ``u_out = fwd @ u_in + shift``.
    """

    def uniform(bound: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator, device=generator.device) * 2 - 1).mul_(bound).to(device)

    angle = uniform(math.radians(cfg.max_rotation))
    scale = 1 + uniform(cfg.max_scale)
    shift = torch.stack([uniform(2 * cfg.max_shift), uniform(2 * cfg.max_shift)], 1)
    flip = (torch.rand(n, generator=generator, device=generator.device) < 0.5).to(device) & cfg.flip
    sx = torch.where(flip, -1.0, 1.0)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    fwd = torch.stack([torch.stack([cos * sx, -sin], 1), torch.stack([sin * sx, cos], 1)], 1)
    return fwd, shift, flip


def augment(
    x: torch.Tensor, landmarks: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flip, rotation, scale and shift for a whole batch at once, landmarks moved along."""
    return apply_augment(x, landmarks, *sample_augment(len(x), cfg, generator, x.device))


def apply_augment(
    x: torch.Tensor, landmarks: torch.Tensor, fwd: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp a batch by ``u_out = fwd @ u_in + shift`` with one ``grid_sample``; move the landmarks.

    After a flip the points are reordered, so the left eye stays the image's left eye.
    """
    size = x.shape[-1]
    inv = torch.linalg.inv(fwd)
    theta = torch.cat([inv, -(inv @ shift.unsqueeze(2))], 2)

    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    u = landmarks * (2 / size) - 1
    u = u @ fwd.transpose(1, 2) + shift.unsqueeze(1)
    moved = (u + 1) * (size / 2)
    moved = torch.where(flip[:, None, None], moved[:, FLIP_ORDER], moved)
    return out, moved


@dataclass(frozen=True)
class LabelCodec:
    """Converts labels to training targets and network outputs back to years and pixels.

    Age is standardised with the training set's mean and std; landmarks are offsets from the
    alignment template in units of ``landmark_unit`` crop pixels. Both are stored in checkpoints.
    """

    size: int
    age_mean: float
    age_std: float

    @property
    def landmark_unit(self) -> float:
        return 0.05 * self.size

    @classmethod
    def fit(cls, data: FaceTensors) -> LabelCodec:
        ages = data.age[torch.isfinite(data.age)]
        if len(ages) < 2:
            return cls(data.size, 0.0, 1.0)
        return cls(data.size, float(ages.mean()), float(ages.std().clamp(min=1e-3)))

    def _template(self, device: torch.device) -> torch.Tensor:
        return torch.tensor(template(self.size), dtype=torch.float32, device=device)

    def encode(self, gender: torch.Tensor, age: torch.Tensor, landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        tpl = self._template(landmarks.device)
        return {
            "gender": gender,
            "age": (age - self.age_mean) / self.age_std,
            "landmarks": ((landmarks - tpl) / self.landmark_unit).flatten(1),
        }

    def decode(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred: dict[str, torch.Tensor] = {}
        if "gender" in outputs:
            pred["gender"] = outputs["gender"].float()
        if "age" in outputs:
            pred["age"] = outputs["age"].float() * self.age_std + self.age_mean
        if "landmarks" in outputs:
            lm = outputs["landmarks"].float().view(-1, 5, 2)
            pred["landmarks"] = lm * self.landmark_unit + self._template(lm.device)
        return pred
