"""Identity pretraining: a trunk learns to tell people apart (margin softmax), then is saved alone.

Verification accuracy on held-out identities follows the LFW protocol (PROTOCOLS.md): flip-sum
L2-normalised embeddings, squared L2 distance, 10 folds with the threshold chosen on the others.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from faceattr.config import PretrainIdentityConfig, to_dict
from faceattr.data.packed import read_geometry, read_store
from faceattr.data.pairs import read_bin_pairs, read_pair_list
from faceattr.distributed import current
from faceattr.metrics import verification_accuracy
from faceattr.models.backbones import create_backbone
from faceattr.models.heads import MarginHead
from faceattr.train.data import (
    NORMALISATION,
    FaceTensors,
    Images,
    Prefetch,
    augment,
    batch_indices,
    for_device,
    load_split,
    to_input,
)
from faceattr.train.finetune import EVAL_BATCH_SIZE
from faceattr.train.loop import (
    bf16,
    code_fingerprint,
    fingerprint,
    fit,
    lr_at,
    make_optimizer,
    nhwc,
    precision_name,
    prepare,
    recipe,
    seed_epoch,
    set_lr,
    steps_per_epoch,
    store_files,
)

log = logging.getLogger(__name__)
MEAN, STD = NORMALISATION["default"]


def make_pairs(identity: np.ndarray, folds: int, pairs_per_fold: int, seed: int) -> dict[str, np.ndarray]:
    """LFW-style verification pairs: identities disjoint across folds, half same, half different.

    Returns arrays ``a``, ``b`` (row indices), ``same`` (bool) and ``fold``.
    """
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.unique(identity[identity >= 0]))
    groups = [g for g in np.array_split(ids, folds) if len(g) >= 2]
    if len(groups) < 2:
        raise ValueError(
            f"{folds}-fold verification needs at least {folds + 2} held-out identities (2 folds of 2 or more), the "
            f"verify pool has {len(ids)}: raise split.pretrain.verify, use more of the identity source "
            "(datasets.pretrain.max_images), or lower pretrain_identity.verify_folds"
        )
    rows = {i: np.flatnonzero(identity == i) for i in ids}
    a, b, same, fold = [], [], [], []
    for k, group in enumerate(groups):
        multi = [i for i in group if len(rows[i]) >= 2]
        for j in range(pairs_per_fold):
            is_same = j < pairs_per_fold // 2 and bool(multi)
            if is_same:
                x, y = rng.choice(rows[rng.choice(multi)], 2, replace=False)
            else:
                p, q = rng.choice(group, 2, replace=False)
                x, y = rng.choice(rows[p]), rng.choice(rows[q])
            a.append(x), b.append(y), same.append(is_same), fold.append(k)
    return {"a": np.array(a), "b": np.array(b), "same": np.array(same), "fold": np.array(fold)}


@torch.no_grad()
def embed(trunk: nn.Module, images: Images, device: torch.device, batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
    """L2-normalised sum of the embeddings of each image (uint8 NCHW) and its horizontal flip."""
    trunk.eval()
    out = []
    for _, batch in Prefetch.on(device, batch_indices(len(images), batch_size, None), images.__getitem__):
        x = to_input(batch, device, MEAN, STD)
        out.append(F.normalize(trunk(x) + trunk(torch.flip(x, dims=[3]))).float().cpu())
    return torch.cat(out)


def verify(
    trunk: nn.Module, images: Images, pairs: dict[str, np.ndarray], device: torch.device, prefix: str = "verify"
) -> dict[str, float]:
    """Mean and std over folds of verification accuracy (threshold chosen on the other folds)."""
    emb = embed(trunk, images, device)
    dist = (emb[pairs["a"]] - emb[pairs["b"]]).pow(2).sum(1).numpy()
    mean, std = verification_accuracy(dist, pairs["same"], pairs["fold"])
    return {f"{prefix}_acc": mean, f"{prefix}_acc_std": std}


def list_pairs(path: Path, folds: int, store: Path, size: int) -> tuple[torch.Tensor, dict[str, np.ndarray], int]:
    """An external verification list as (images, pairs over their rows, pairs left out).

    ``pairs.txt`` names images of the pretraining data set by file name: they are taken from the
    aligned store, and a pair whose image the align stage dropped is left out (and counted). An
    insightface ``.bin`` carries its own aligned 112-px images, resized to the crop size.
    """
    if path.suffix == ".bin":
        geometry = read_geometry(store)
        if float(geometry.get("scale", 1.0)) != 1.0 or geometry.get("crop", "template") != "template":
            raise ValueError(
                f"'{path}' holds faces aligned on the plain ArcFace template, but this trunk learned crops made "
                "with align.scale != 1 or align.crop: resize: score it on a pairs.txt list of the data set instead"
            )
        blobs, same = read_bin_pairs(path)
        decoded = [
            Image.open(io.BytesIO(b)).convert("RGB").resize((size, size), Image.Resampling.BILINEAR) for b in blobs
        ]
        images = torch.from_numpy(np.stack([np.asarray(im) for im in decoded])).permute(0, 3, 1, 2).contiguous()
        n = len(same)
        pairs = {
            "a": np.arange(0, 2 * n, 2),
            "b": np.arange(1, 2 * n, 2),
            "same": np.array(same),
            "fold": np.arange(n) * 10 // max(n, 1),  # insightface's 10 consecutive folds
        }
        return images, pairs, 0
    table = read_pair_list(path, folds)
    faces, labels = read_store(store)
    row_of = {Path(p).name: i for i, p in enumerate(labels["path"])}
    a = table["file_a"].map(lambda f: row_of.get(Path(f).name))
    b = table["file_b"].map(lambda f: row_of.get(Path(f).name))
    found = a.notna() & b.notna()
    rows = np.unique(np.concatenate([a[found].to_numpy(int), b[found].to_numpy(int)]))
    local = {r: k for k, r in enumerate(rows)}
    images = torch.from_numpy(np.ascontiguousarray(faces[rows])).permute(0, 3, 1, 2).contiguous()
    pairs = {  # copies: pandas gives read-only views, which torch warns of when indexing
        "a": a[found].map(local).to_numpy(int, copy=True),
        "b": b[found].map(local).to_numpy(int, copy=True),
        "same": table.loc[found, "same"].to_numpy(bool, copy=True),
        "fold": table.loc[found, "fold"].to_numpy(int, copy=True),
    }
    return images, pairs, int((~found).sum())


def score_pair_list(
    trunk: nn.Module, path: Path, folds: int, store: Path, size: int, device: torch.device
) -> dict[str, float]:
    """Verification accuracy on an external list (LFW protocol: threshold chosen on the other folds)."""
    images, pairs, missing = list_pairs(path, folds, store, size)
    if len(np.unique(pairs["fold"])) < 2:
        raise ValueError(f"verification list '{path}': fewer than 2 folds with usable pairs")
    return {
        **verify(trunk, images, pairs, device, "list"),
        "list_pairs": len(pairs["same"]),
        "list_pairs_missing": missing,
    }


class IdentityObjective(nn.Module):
    """Trunk and margin head as one module, so that every trained parameter (the head's class
    centres too) sits under DistributedDataParallel and gets averaged gradients."""

    def __init__(self, trunk: nn.Module, head: MarginHead, half: bool) -> None:
        super().__init__()
        self.trunk, self.head, self.half = trunk, head, half

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Margin logits: the trunk under bf16 autocast where ``half``, the head in fp32."""
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.half):
            z = self.trunk(x)
        return self.head(z.float(), labels)


def train_one_epoch(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: FaceTensors,
    cfg: PretrainIdentityConfig,
    epoch: int,
    seed: int,
    device: torch.device,
) -> dict[str, float]:
    """One epoch of margin-softmax classification over the pretraining identities; ``net`` is the
    (possibly DDP-wrapped) ``IdentityObjective``."""
    net.train()
    generator = seed_epoch(seed, epoch)
    cl = nhwc(device, cfg.accel)
    optim = cfg.optim
    per_epoch = steps_per_epoch(len(data), optim.batch_size, current().world)  # this rank's shard
    total, warmup = per_epoch * optim.epochs, int(optim.warmup_epochs * per_epoch)
    loss_sum, correct, seen, count = torch.zeros((), device=device), torch.zeros((), device=device), 0, 0
    lr = float("nan")
    batches = Prefetch.on(device, batch_indices(len(data), optim.batch_size, generator), data.images.__getitem__)
    for i, (idx, images) in enumerate(batches):
        if len(idx) < 2:
            continue
        lr = lr_at(epoch * per_epoch + i, total, warmup, optim)
        set_lr(optimizer, lr)
        x = to_input(images, device, MEAN, STD)
        x, _ = augment(x, data.landmarks[idx].to(device, non_blocking=True), cfg.augment, generator)
        batches.ahead()  # this step's random numbers are drawn: gather the next batch while it trains
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        labels = data.identity[idx].to(device)
        logits = net(x, labels)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach()
        correct += (logits.argmax(1) == labels).sum()
        seen, count = seen + len(idx), count + 1
    return {"train_loss": float(loss_sum) / max(count, 1), "train_id_acc": float(correct) / max(seen, 1), "lr": lr}


def pretrain_identity(
    cfg: PretrainIdentityConfig,
    *,
    seed: int,
    store: Path,
    split_file: Path,
    device: torch.device,
    resume_path: Path | None,
    on_epoch: Callable[[dict[str, float]], None],
    pair_list: Path | None = None,
    pair_folds: int = 0,
) -> tuple[nn.Module, dict[str, Any], list[dict[str, float]]]:
    """Train a trunk with a margin head; returns the trunk, its checkpoint meta and the history.

    With ``pair_list`` the finished trunk is also scored on that external verification list
    (``meta["pair_list"]``); the split stage has kept the list's people out of training.
    """
    torch.manual_seed(seed)
    train = load_split(store, split_file, ("pretrain",)).with_own_template()  # crop resize: its own rows' mean
    held = load_split(store, split_file, ("verify",))
    pairs = make_pairs(held.identity.numpy(), cfg.verify_folds, cfg.verify_pairs_per_fold, seed)
    train = for_device(train, device)
    trunk = create_backbone(cfg.backbone, input_size=train.size, embedding_size=cfg.embedding_size, width=cfg.width)
    m = cfg.margin
    head = MarginHead(
        cfg.embedding_size, len(train.identity_names), kind=m.head, s=m.s, m1=m.m1, m2=m.m2, m3=m.m3, h=m.h
    ).to(device)
    half = bf16(device, cfg.accel)
    objective = IdentityObjective(trunk, head, half)
    net = prepare(objective, device, cfg.accel)  # what we call: trunk and head under DDP together
    optimizer = make_optimizer(objective, cfg.optim)
    key = fingerprint(recipe(cfg), seed, split_file, *store_files(store), half, code_fingerprint())
    history = fit(
        modules={"trunk": trunk, "head": head},
        optimizer=optimizer,
        epochs=cfg.optim.epochs,
        train_epoch=lambda e: train_one_epoch(net, optimizer, train, cfg, e, seed, device),
        validate=lambda: verify(trunk, held.images, pairs, device),
        resume_path=resume_path,
        resume_key=key,
        on_epoch=on_epoch,
        resume_every_s=cfg.accel.resume_every_s,
    )
    listed = {} if pair_list is None else score_pair_list(trunk, pair_list, pair_folds, store, train.size, device)
    meta = {
        "kind": "trunk",
        "pretraining": "identity",
        "backbone": cfg.backbone,
        "width": cfg.width,
        "embedding_size": cfg.embedding_size,
        "norm": getattr(trunk, "norm", None),  # dlib_resnet: batch norm from scratch
        "stem": "imagenet",
        "input_size": train.size,
        "mean": list(MEAN),
        "std": list(STD),
        "template": train.template().tolist(),
        "template_scale": train.template_scale,
        "template_points": train.template_points,  # align.crop resize: what predict aligns a new photo to
        "geometry": train.geometry(),
        "identities": len(train.identity_names),
        "images": len(train),
        "verify_pairs": len(pairs["same"]),
        "verify_folds": len(np.unique(pairs["fold"])),
        "pair_list": {"file": pair_list.name, **listed} if pair_list is not None else None,
        "params": to_dict(cfg),
        "seed": seed,
        "precision": precision_name(half),  # what accel.precision came to on this machine
    }
    return trunk.cpu(), meta, history
