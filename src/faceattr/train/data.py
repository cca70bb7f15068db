"""Tensors for training: a split's labels loaded once, its crops read by batch, augmentation on the device.

A split's crops stay in the store's memory-mapped ``faces.npy`` (``StoreImages``): a batch is
gathered from the mapped file when it is needed, on a background thread one batch ahead
(``prefetch``), so a large identity set is never copied into each process's memory (the page
cache holds it once, shared by every rank). Batches are index tensors drawn from a seeded
generator, so an epoch's order depends only on (seed, epoch) and a resumed training sees exactly
the batches it would have seen.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from faceattr.config import AugmentConfig
from faceattr.data.align import crop_template
from faceattr.data.manifest import LANDMARK_COLUMNS, group_keys
from faceattr.data.packed import read_geometry, read_store
from faceattr.distributed import current, shard
from faceattr.models.heads import FLIP_ORDER

# Input normalisation per pretraining: insightface trunks expect [-1, 1], ImageNet weights their own.
# dlib's network: (pixel - mean) / 256 with the means its .dat file stores (checked by a test).
NORMALISATION = {
    "default": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "dlib": ((122.782 / 255, 117.001 / 255, 104.298 / 255), (256 / 255, 256 / 255, 256 / 255)),
}


class StoreImages:
    """Some rows of a store's crops (``faces.npy``, N×S×S×3, memory-mapped), read on demand.

    Indexing (an int, a slice, or an index tensor or array into these rows) returns uint8 NCHW
    tensors, gathered from the mapped file: nothing is read before it is needed, and the
    whole split never sits in this process's memory as a copy. ``pinned`` batches come in
    page-locked memory, for non-blocking copies to a GPU.
    """

    def __init__(self, faces: np.ndarray, rows: np.ndarray, pinned: bool = False) -> None:
        self.faces, self.rows, self.pinned = faces, np.asarray(rows, dtype=np.int64), pinned

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.rows), int(self.faces.shape[3]), int(self.faces.shape[1]), int(self.faces.shape[2]))

    def _rows(self, key: object) -> np.ndarray:
        if isinstance(key, slice):
            return self.rows[key]
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        return self.rows[np.asarray(key, dtype=np.int64)]

    def __getitem__(self, key: object) -> torch.Tensor:
        if isinstance(key, int | np.integer):
            return self[[int(key)]][0]
        batch = torch.from_numpy(np.asarray(self.faces[self._rows(key)])).permute(0, 3, 1, 2).contiguous()
        return batch.pin_memory() if self.pinned else batch

    def take(self, idx: object) -> StoreImages:
        """These rows at ``idx``, still unread."""
        return StoreImages(self.faces, self._rows(idx), self.pinned)

    def pin(self) -> StoreImages:
        return StoreImages(self.faces, self.rows, pinned=True)


Images = StoreImages | torch.Tensor


class Prefetch:
    """Index batches with their data, the next batch's data gathered on a background thread
    while the caller trains on this one.

    Drawing the next index batch can draw random numbers (a new shuffled pass), so the caller
    decides when: ``ahead()`` once its step has drawn its own (augmentation), and the numbers
    come out exactly as without prefetching. A step that never calls it gets the next batch
    drawn when it asks for it. ``fetch`` must depend on the index batch only.

    ``background=False`` gathers inline, in the same order: for a step on the CPU, whose OpenMP
    threads already use every core. There a gathering thread beside them made an epoch of the
    32-px default 1.31x slower on 2 cores (``bench/bench_prefetch.py``: 416 against 546 crops/s, best of 5).
    """

    def __init__(
        self, batches: Iterable[torch.Tensor], fetch: Callable[[torch.Tensor], Any], background: bool = True
    ) -> None:
        self._batches, self._fetch, self._background = iter(batches), fetch, background
        self._pool: ThreadPoolExecutor | None = None
        self._next: tuple[torch.Tensor, Any] | None = None
        self._drawn = False

    @classmethod
    def on(
        cls, device: torch.device, batches: Iterable[torch.Tensor], fetch: Callable[[torch.Tensor], Any]
    ) -> Prefetch:
        """Gathering for steps on ``device``: on a background thread beside an accelerator, inline
        on the CPU (the one place that rule is written)."""
        return cls(batches, fetch, background=device.type != "cpu")

    def ahead(self) -> None:
        """Draw the next index batch and start gathering its data (inline: nothing, the next
        batch is drawn when the loop asks for it)."""
        if self._drawn or not self._background:
            return
        self._drawn = True
        idx = next(self._batches, None)
        assert self._pool is not None
        self._next = None if idx is None else (idx, self._pool.submit(self._fetch, idx))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Any]]:
        if not self._background:
            for idx in self._batches:
                yield idx, self._fetch(idx)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="faceattr-prefetch") as self._pool:
            self.ahead()
            while self._next is not None:
                idx, pending = self._next
                self._drawn = False
                yield idx, pending.result()
                self.ahead()


@dataclass(frozen=True)
class FaceTensors:
    """Aligned crops and labels of one split; missing labels are -1 (gender, identity) or NaN."""

    images: Images  # uint8 (N, 3, S, S): the store's mapped rows (StoreImages), or a tensor
    gender: torch.Tensor  # int64 (N,)
    age: torch.Tensor  # float32 (N,) years
    landmarks: torch.Tensor  # float32 (N, 5, 2) crop pixels
    identity: torch.Tensor  # int64 (N,) index into ``identity_names``
    identity_names: tuple[str, ...]
    attributes: torch.Tensor | None = None  # float32 (N, A) 0/1, NaN when unknown
    attribute_names: tuple[str, ...] = ()
    race: torch.Tensor | None = None  # int64 (N,), -1 when unknown
    template_scale: float = 1.0  # the align stage's template scale (``template(size, scale)``)
    template_points: tuple[tuple[float, float], ...] | None = None  # align.crop resize: mean landmarks / size
    fill: str = "black"  # the align stage's border fill (align.fill)
    crop: str = "template"  # the align stage's crop kind (align.crop): template | resize
    template_name: str = "arcface"  # the align stage's template (align.template): arcface | dlib
    fit: str = "mtcnn"  # whose five points the align stage fitted (align.fit): mtcnn | dlib
    paths: tuple[str, ...] = ()  # each row's image path in its data set
    rows: tuple[int, ...] = ()  # each row's index in the store (faces.npy, labels.csv)
    groups: tuple[str, ...] = ()  # each row's cluster: its person, else its byte-identical group
    group_unit: str = "image"  # what a cluster is: person | byte-identical image group | image

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def template(self) -> np.ndarray:
        """The five points these crops were aligned to, in crop pixels (``crop_template``)."""
        return crop_template(self.size, self.template_scale, self.template_points)

    def geometry(self) -> dict[str, Any]:
        """How these crops were cut, as a checkpoint's meta records it, so that ``predict`` cuts a
        new photo the same way: size, template scale, border fill, crop kind, whose five points
        were fitted and (crop resize) the mean landmarks a new photo is aligned to."""
        points = None if self.template_points is None else [list(p) for p in self.template_points]
        return {
            "size": self.size,
            "scale": self.template_scale,
            "fill": self.fill,
            "crop": self.crop,
            "template": self.template_name,
            "template_points": points,
            "fit": self.fit,
        }

    def with_own_template(self) -> FaceTensors:
        """For ``align.crop: resize``: the template points as the mean landmarks of these rows
        (the training pool's), not of the whole store, whose test rows must not shape training."""
        if self.crop != "resize" or self.template_points is None:
            return self
        lm = self.landmarks.double()
        known = torch.isfinite(lm).flatten(1).all(1)
        if not known.any():
            return self
        mean = (lm[known].mean(0) / self.size).tolist()
        return replace(self, template_points=tuple((round(x, 6), round(y, 6)) for x, y in mean))


def read_split_file(path: str | Path) -> pd.DataFrame:
    """Read the split stage's assignment of store rows to pools."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file '{path}' not found; run the split stage first")
    return pd.read_csv(path, dtype={"split": "string"})


def _points(value: object) -> tuple[tuple[float, float], ...] | None:
    """A store's template points as a hashable tuple (frozen dataclasses), or None."""
    if value is None:
        return None
    return tuple((float(x), float(y)) for x, y in value)  # type: ignore[union-attr]


def load_split(store: str | Path, split_file: str | Path, pools: tuple[str, ...]) -> FaceTensors:
    """Load the rows of the given pools from the packed store."""
    faces, labels = read_store(store)
    geometry = read_geometry(store)
    splits = read_split_file(split_file)
    rows = np.sort(splits.loc[splits["split"].isin(pools), "index"].to_numpy())
    if len(rows) == 0:
        raise ValueError(f"split file '{split_file}' has no rows in pools {list(pools)}")
    sub = labels.iloc[rows]
    names = tuple(sorted(sub["identity"].dropna().unique()))
    lookup = {n: i for i, n in enumerate(names)}
    attr_columns = [c for c in sub.columns if c.startswith("attr_")]
    attributes = sub[attr_columns].astype("float64").to_numpy(dtype=np.float32, na_value=np.nan)
    race = sub["race"].fillna(-1).to_numpy(dtype=np.int64) if "race" in sub else np.full(len(sub), -1)
    return FaceTensors(
        images=StoreImages(faces, rows),
        gender=torch.tensor(sub["gender"].fillna(-1).to_numpy(dtype=np.int64)),
        age=torch.tensor(sub["age"].astype("float64").to_numpy(dtype=np.float32, na_value=np.nan)),
        landmarks=torch.tensor(
            sub[list(LANDMARK_COLUMNS)].astype("float64").to_numpy(dtype=np.float32, na_value=np.nan)
        ).view(-1, 5, 2),
        identity=torch.tensor([lookup.get(x, -1) if isinstance(x, str) else -1 for x in sub["identity"]]),
        identity_names=names,
        attributes=torch.from_numpy(attributes).reshape(len(sub), len(attr_columns)),
        attribute_names=tuple(c.removeprefix("attr_") for c in attr_columns),
        race=torch.from_numpy(race),
        template_scale=float(geometry.get("scale", 1.0)),
        template_points=_points(geometry.get("template_points")),
        fill=str(geometry.get("fill", "black")),
        crop=str(geometry.get("crop", "template")),
        template_name=str(geometry.get("template", "arcface")),
        fit=str(geometry.get("fit", "mtcnn")),
        paths=tuple(sub["path"]),
        rows=tuple(int(r) for r in rows),
        groups=tuple(group_keys(sub)),
        group_unit=cluster_unit(sub),
    )


def cluster_unit(labels: pd.DataFrame) -> str:
    """What one cluster of ``group_keys`` holds: all images of a person where every row names
    one, else byte-identical copies (where content hashes are known), else a single image."""
    named = labels["identity"].notna()
    hashed = labels["sha256"].notna() if "sha256" in labels else pd.Series(False, index=labels.index)
    if named.all():
        return "person"
    if named.any():
        return "person or byte-identical image group"
    return "byte-identical image group" if hashed.any() else "image"


def subset(data: FaceTensors, percent: int, seed: int) -> FaceTensors:
    """A seeded ``percent`` % of the rows (at least two), for data-efficiency curves."""
    if percent >= 100:
        return data
    n = max(2, round(len(data) * percent / 100))
    rows = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return replace(
        data,
        images=data.images.take(rows) if isinstance(data.images, StoreImages) else data.images[rows],
        gender=data.gender[rows],
        age=data.age[rows],
        landmarks=data.landmarks[rows],
        identity=data.identity[rows],
        attributes=None if data.attributes is None else data.attributes[rows],
        race=None if data.race is None else data.race[rows],
        paths=tuple(data.paths[i] for i in rows.tolist()) if data.paths else (),
        rows=tuple(data.rows[i] for i in rows.tolist()) if data.rows else (),
        groups=tuple(data.groups[i] for i in rows.tolist()) if data.groups else (),
    )


def for_device(data: FaceTensors, device: torch.device) -> FaceTensors:
    """Batches in page-locked memory when they will be copied to a GPU (async copies)."""
    if device.type != "cuda":
        return data
    images = data.images.pin() if isinstance(data.images, StoreImages) else data.images.pin_memory()
    return replace(data, images=images)


def batch_indices(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Shuffled (with a generator) or ordered (without) index batches covering all ``n`` rows.

    Shuffled batches under torchrun are this process's shard of the epoch's order (the same
    order on every rank, since the generator is seeded alike): disjoint across ranks.
    """
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    if generator is not None:
        order = shard(order, current())
    yield from order.split(batch_size)


def epoch_batches(
    n: int, batch_size: int, generator: torch.Generator, steps: int | None = None
) -> Iterator[torch.Tensor]:
    """One epoch's shuffled batches of ``n`` rows (this rank's shard), or exactly ``steps`` of
    them drawn from successive shuffled passes: a small subset trained for the steps of a whole
    set (``fraction_budget: steps``). With ``steps`` equal to one pass's batches it is that pass."""
    if steps is None:
        yield from batch_indices(n, batch_size, generator)
        return
    made = 0
    while made < steps:
        for idx in batch_indices(n, batch_size, generator):
            yield idx
            made += 1
            if made == steps:
                return


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
    moved = torch.where(flip[:, None, None], moved[:, list(FLIP_ORDER)], moved)
    return out, moved


def group_index(age: torch.Tensor, edges: tuple[float, ...]) -> torch.Tensor:
    """Age group of each age: 0 below ``edges[0]``, k for ``edges[k-1] <= age < edges[k]``."""
    return torch.bucketize(age, torch.tensor(edges, dtype=age.dtype, device=age.device), right=True)


def group_centres(edges: tuple[float, ...]) -> list[float]:
    """A representative age per group: the middle of each bounded group, and half a group's width
    past the last edge for the open-ended last group."""
    bounds = [0.0, *edges]
    mids = [(a + b) / 2 for a, b in itertools.pairwise(bounds)]
    return [*mids, edges[-1] + (edges[-1] - bounds[-2]) / 2]


@dataclass(frozen=True)
class LabelCodec:
    """Converts labels to training targets and network outputs back to years and pixels.

    Age is standardised with the training set's mean and std (regression head), or kept in years
    (DLDL and age-group heads); landmarks are offsets from the alignment template in units of
    ``landmark_unit`` crop pixels. All of it is stored in checkpoints.
    """

    size: int
    age_mean: float
    age_std: float
    age_head: str = "regression"
    max_age: int = 100
    group_edges: tuple[float, ...] = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0)
    template_scale: float = 1.0
    template_points: tuple[tuple[float, float], ...] | None = None
    # chosen on validation after training (faceattr.train.calibration); 1.0: as the network says
    gender_temperature: float = 1.0
    age_std_scale: float = 1.0

    @property
    def landmark_unit(self) -> float:
        return 0.05 * self.size

    @classmethod
    def fit(cls, data: FaceTensors, **age_head: object) -> LabelCodec:
        ages = data.age[torch.isfinite(data.age)]
        where = {"template_scale": data.template_scale, "template_points": data.template_points}
        if len(ages) < 2:
            return cls(data.size, 0.0, 1.0, **age_head, **where)  # type: ignore[arg-type]
        std = float(ages.std().clamp(min=1e-3))
        return cls(data.size, float(ages.mean()), std, **age_head, **where)  # type: ignore[arg-type]

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> LabelCodec:
        """The codec a fine-tuned checkpoint was trained with, from its meta."""
        return cls(
            meta["input_size"],
            meta["age_mean"],
            meta["age_std"],
            meta["age_head"],
            meta["max_age"],
            tuple(meta["group_edges"]),
            meta.get("template_scale", 1.0),
            _points(meta.get("template_points")),
            float(meta.get("calibration", {}).get("gender_temperature", 1.0)),
            float(meta.get("calibration", {}).get("age_std_scale", 1.0)),
        )

    def _template(self, device: torch.device) -> torch.Tensor:
        points = crop_template(self.size, self.template_scale, self.template_points)
        return torch.tensor(points, dtype=torch.float32, device=device)

    def encode(
        self,
        gender: torch.Tensor,
        age: torch.Tensor,
        landmarks: torch.Tensor,
        attributes: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        tpl = self._template(landmarks.device)
        out = {
            "gender": gender,
            "age": (age - self.age_mean) / self.age_std,
            "age_years": age,
            "age_group": torch.where(torch.isfinite(age), group_index(age, self.group_edges), -1),
            "landmarks": ((landmarks - tpl) / self.landmark_unit).flatten(1),
        }
        if attributes is not None:
            out["attributes"] = attributes
        return out

    def decode(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Gender logits (divided by the checkpoint's calibration temperature), age in years (plus
        group probabilities for the group head, and the spread times its calibration scale),
        landmarks in crop pixels, attribute probabilities.

        Always in fp32, also when called under bf16 autocast (validation, CUDA test prediction):
        autocast would run the expectation ``probs @ values`` in bf16, whose 8-bit mantissa moves
        a DLDL age by tenths of a year and its spread by years.
        """
        if not outputs:
            return {}
        device_type = next(iter(outputs.values())).device.type
        with torch.autocast(device_type, enabled=False):
            return self._decode({k: v.float() for k, v in outputs.items()})

    def _decode(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred: dict[str, torch.Tensor] = {}
        if "gender" in outputs:
            pred["gender"] = outputs["gender"].float() / self.gender_temperature
        if "age" in outputs:
            raw = outputs["age"].float()
            if self.age_head == "regression":
                pred["age"] = raw * self.age_std + self.age_mean
            else:  # a distribution: its expectation, and its std as the spread of the estimate
                probs = raw.softmax(1)
                if self.age_head == "dldl":
                    values = torch.arange(raw.shape[1], dtype=raw.dtype, device=raw.device)
                else:
                    pred["age_group"] = probs
                    values = torch.tensor(group_centres(self.group_edges), dtype=raw.dtype, device=raw.device)
                pred["age"] = probs @ values
                spread = (probs @ values.square() - pred["age"].square()).clamp(min=0).sqrt()
                pred["age_std"] = spread * self.age_std_scale
        if "attributes" in outputs:
            pred["attributes"] = outputs["attributes"].float().sigmoid()
        if "landmarks" in outputs:
            lm = outputs["landmarks"].float().view(-1, 5, 2)
            pred["landmarks"] = lm * self.landmark_unit + self._template(lm.device)
        return pred
