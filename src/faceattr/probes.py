"""What a frozen trunk already knows: linear probes on its features.

For each trunk the fine-tuning variants start from (identity-pretrained, dlib's, ImageNet's, or a
random initialisation as the floor), every crop of the fine-tuning split is embedded once with the
trunk frozen (the features its heads would see), the features are standardised on the training
pool, and per task:

- a **linear probe**: logistic regression (gender, each attribute) or ridge regression (age), its
  L2 strength chosen on the validation pool, scored on the test pool with a cluster-bootstrap CI
  (the clusters of the evaluate stage: people, or byte-identical groups);
- an **L1-sparse probe** per binary task along a path of L1 strengths: the fewest feature units
  whose probe reaches ``share`` of the full probe's validation accuracy, and the fewest that reach
  ``share`` of its *gain over the training majority* (the first is easy for a rare attribute,
  whose majority already scores near the full probe; the second is not). The third paper's
  finding is that attributes live in a few units.

Both are selected on validation only; test scores are reported for the chosen probes.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from faceattr.config import FinetuneConfig, ProbeConfig
from faceattr.inference import forward_batches
from faceattr.statistics import bootstrap_ci
from faceattr.train.data import FaceTensors, load_split
from faceattr.variants import Variant, parse_variant

log = logging.getLogger(__name__)

POOLS = ("train", "val", "test")


@dataclass(frozen=True)
class Task:
    """One probed label: its name, kind (binary | regression) and values per row (NaN: unknown)."""

    name: str
    kind: str
    values: np.ndarray


def trunks_of(variants: Iterable[str]) -> list[Variant]:
    """One variant per distinct (backbone, pretraining) among ``variants``: the trunks probed."""
    seen: dict[tuple[str, str], Variant] = {}
    for name in variants:
        v = parse_variant(name)
        seen.setdefault((v.backbone, v.pretraining), v)
    return list(seen.values())


def trunk_name(variant: Variant) -> str:
    return f"{variant.backbone}-{variant.pretraining}"


def tasks_of(data: FaceTensors) -> list[Task]:
    """The labels a probe can be fitted to: gender, age and each attribute with labelled rows."""
    tasks = []
    gender = data.gender.numpy().astype(np.float64)
    gender[gender < 0] = np.nan
    if np.isfinite(gender).any():
        tasks.append(Task("gender", "binary", gender))
    age = data.age.numpy().astype(np.float64)
    if np.isfinite(age).any():
        tasks.append(Task("age", "regression", age))
    if data.attributes is not None:
        for i, name in enumerate(data.attribute_names):
            col = data.attributes[:, i].numpy().astype(np.float64)
            if np.isfinite(col).any():
                tasks.append(Task(name, "binary", col))
    return tasks


@torch.no_grad()
def features(
    trunk: nn.Module,
    data: FaceTensors,
    norm: tuple[tuple[float, ...], tuple[float, ...]],
    device: torch.device,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The frozen trunk's features of every row (fp32, eval mode, no flip, no autograd)."""
    out = []
    for idx, feats in forward_batches(trunk, data.images, device, *norm, batch_size):
        out.append(feats.float().cpu().numpy())
        if progress is not None:
            progress(len(idx))
    return np.concatenate(out).astype(np.float64)


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = train.mean(0), train.std(0)
    std[std < 1e-12] = 1.0
    return [(x - mean) / std for x in (train, *others)]


def _labelled(
    x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], groups: np.ndarray
) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Each pool's (features, labels) of its labelled rows (train, val, test), and the test rows' clusters."""
    known = {p: np.isfinite(y[p]) for p in POOLS}
    return [(x[p][known[p]], y[p][known[p]]) for p in POOLS], groups[known["test"]]


def _fit_logistic(x: np.ndarray, y: np.ndarray, c: float, penalty: str) -> Any:
    from sklearn.linear_model import LogisticRegression

    if penalty == "l1":  # liblinear shuffles the rows: seeded, or two runs of one stage differ
        model = LogisticRegression(penalty="l1", C=c, solver="liblinear", max_iter=2000, random_state=0)
    else:
        model = LogisticRegression(C=c, max_iter=2000, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings at the path's weak end: scored as they are
        return model.fit(x, y.astype(int))


def _majority(y_train: np.ndarray) -> int:
    return int(y_train.mean() >= 0.5)


def _scored(correct_or_error: np.ndarray, groups: np.ndarray, cfg: ProbeConfig) -> dict[str, Any]:
    lo, hi = bootstrap_ci(correct_or_error, cfg.bootstrap, cfg.confidence, seed=0, groups=groups)
    return {"test": float(np.nanmean(correct_or_error)), "ci": [lo, hi]}


def probe_binary(
    x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], groups: np.ndarray, cfg: ProbeConfig
) -> dict[str, Any]:
    """Full (L2) and L1-sparse logistic probes of one binary task; accuracy in [0, 1]."""
    ((xt, yt), (xv, yv), (xs, ys)), gs = _labelled(x, y, groups)
    majority = _majority(yt)
    result: dict[str, Any] = {
        "kind": "binary",
        "metric": "acc",
        "images": {"train": len(yt), "val": len(yv), "test": len(ys)},
        "majority": {"val": float(np.mean(yv == majority)), "test": float(np.mean(ys == majority))},
    }
    if len(np.unique(yt)) < 2 or len(yv) == 0 or len(ys) == 0:
        result["status"] = "one class in training, or no validation/test labels: not probed"
        return result
    best = None
    for c in cfg.l2_grid:
        model = _fit_logistic(xt, yt, c, "l2")
        val = float(np.mean(model.predict(xv) == yv))
        if best is None or val > best[0]:
            best = (val, c, model)
    assert best is not None
    val_full, c_full, model = best
    result["full"] = {"val": val_full, "C": c_full, **_scored((model.predict(xs) == ys).astype(float), gs, cfg)}
    path = [{"C": 0.0, "units": 0, "val": result["majority"]["val"], "test": result["majority"]["test"]}]
    for c in np.logspace(np.log10(cfg.l1_min_c), np.log10(cfg.l1_max_c), cfg.l1_path):
        m = _fit_logistic(xt, yt, float(c), "l1")
        units = int(np.count_nonzero(np.abs(m.coef_).max(0) > 0))
        path.append(
            {
                "C": float(c),
                "units": units,
                "val": float(np.mean(m.predict(xv) == yv)),
                "test": float(np.mean(m.predict(xs) == ys)),
            }
        )
    path.sort(key=lambda p: (p["units"], -p["val"]))
    result["sparse"] = {
        "share": cfg.share,
        "of_accuracy": fewest_units(path, cfg.share * val_full),
        "of_gain": fewest_units(path, result["majority"]["val"] + cfg.share * (val_full - result["majority"]["val"])),
        "path": path,
    }
    result["status"] = "probed"
    return result


def fewest_units(path: Sequence[Mapping[str, float]], target: float) -> dict[str, Any] | None:
    """The path point with the fewest units whose validation accuracy reaches ``target`` (its
    units, validation and test accuracy), or None where no point of the path does."""
    for point in sorted(path, key=lambda p: (p["units"], -p["val"])):
        if point["val"] >= target - 1e-12:
            return {"units": int(point["units"]), "val": point["val"], "test": point["test"], "target": target}
    return None


def probe_regression(
    x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], groups: np.ndarray, cfg: ProbeConfig
) -> dict[str, Any]:
    """Ridge probe of a regression task (age); mean absolute error in the label's unit."""
    from sklearn.linear_model import Ridge

    ((xt, yt), (xv, yv), (xs, ys)), gs = _labelled(x, y, groups)
    mean = float(yt.mean()) if len(yt) else float("nan")
    result: dict[str, Any] = {
        "kind": "regression",
        "metric": "mae",
        "images": {"train": len(yt), "val": len(yv), "test": len(ys)},
        "majority": {"val": float(np.mean(np.abs(yv - mean))), "test": float(np.mean(np.abs(ys - mean)))},
    }
    if len(yt) < 2 or len(yv) == 0 or len(ys) == 0:
        result["status"] = "too few labelled rows: not probed"
        return result
    best = None
    for c in cfg.l2_grid:
        model = Ridge(alpha=1.0 / c).fit(xt, yt)
        val = float(np.mean(np.abs(model.predict(xv) - yv)))
        if best is None or val < best[0]:
            best = (val, c, model)
    assert best is not None
    val_full, c_full, model = best
    error = np.abs(model.predict(xs) - ys)
    result["full"] = {"val": val_full, "C": c_full, **_scored(error, gs, cfg)}
    result["status"] = "probed"
    return result


def probe_features(
    feats: Mapping[str, np.ndarray], data: Mapping[str, FaceTensors], cfg: ProbeConfig
) -> dict[str, Any]:
    """Every task's probes on one trunk's features of the three pools."""
    x = dict(zip(POOLS, _standardise(feats["train"], feats["val"], feats["test"]), strict=True))
    tasks = {p: {t.name: t for t in tasks_of(data[p])} for p in POOLS}
    groups = np.asarray(data["test"].groups, dtype=object) if data["test"].groups else np.arange(len(data["test"]))
    out: dict[str, Any] = {}
    for name, task in tasks["train"].items():
        if name not in tasks["val"] or name not in tasks["test"]:
            continue
        y = {p: tasks[p][name].values for p in POOLS}
        fit = probe_binary if task.kind == "binary" else probe_regression
        out[name] = fit(x, y, groups, cfg)
    return out


def summary(trunk: Mapping[str, Any]) -> dict[str, float]:
    """A trunk's probes in a few numbers: gender accuracy, age MAE, mean attribute accuracy and the
    median units of the attributes' sparse probes (NaN where absent)."""
    tasks = trunk.get("tasks", {})

    def full(name: str) -> float:
        t = tasks.get(name, {})
        return float(t["full"]["test"]) if "full" in t else float("nan")

    attrs = [t for n, t in tasks.items() if n not in ("gender", "age") and "full" in t]
    units = [t["sparse"]["of_gain"]["units"] for t in attrs if t["sparse"]["of_gain"] is not None]
    return {
        "gender_acc": full("gender"),
        "age_mae": full("age"),
        "attr_acc": float(np.mean([t["full"]["test"] for t in attrs])) if attrs else float("nan"),
        "attr_units_of_gain_median": float(np.median(units)) if units else float("nan"),
    }


def run_probes(
    cfg: ProbeConfig,
    finetune: FinetuneConfig,
    *,
    store: Path,
    split: Path,
    identity_checkpoint: Path | None,
    device: torch.device,
    seed: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Probe every trunk of ``finetune.variants``; a trunk whose weights are missing (ImageNet's
    uncached, dlib's not installed) or whose crops do not fit it is listed with the reason."""
    from faceattr.train.finetune import build_model, check_geometry, missing_weights, normalisation

    data = {p: load_split(store, split, (p,)) for p in POOLS}
    if cfg.max_train and len(data["train"]) > cfg.max_train:
        from faceattr.train.data import subset

        data["train"] = subset(data["train"], round(100 * cfg.max_train / len(data["train"])), seed)
    result: dict[str, Any] = {
        "images": {p: len(data[p]) for p in POOLS},
        "cluster_unit": data["test"].group_unit,
        "share": cfg.share,
        "trunks": {},
    }
    for variant in trunks_of(finetune.variants):
        name = trunk_name(variant)
        reason = missing_weights(variant, finetune)
        if reason is None:
            try:
                check_geometry(variant, data["train"])
            except ValueError as err:
                reason = str(err)
        if variant.pretraining == "identity" and identity_checkpoint is None:
            reason = "no pretrain_identity checkpoint given"
        if reason is not None:
            log.warning("probe %s not run: %s", name, reason)
            result["trunks"][name] = {"status": "not run", "reason": reason}
            continue
        torch.manual_seed(seed)  # the random initialisation of a trunk from scratch
        model, _ = build_model(
            variant, finetune, data["train"].size, identity_checkpoint, data["train"].attribute_names
        )
        trunk = model.trunk.to(device)
        total = sum(len(d) for d in data.values())
        done = 0

        def tick(n: int, name: str = name, total: int = total) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(name, done, total)

        feats = {p: features(trunk, data[p], normalisation(variant), device, cfg.batch_size, tick) for p in POOLS}
        entry = {
            "status": "probed",
            "features": int(feats["train"].shape[1]),
            "tasks": probe_features(feats, data, cfg),
        }
        entry["summary"] = summary(entry)
        result["trunks"][name] = entry
        log.info("probe %s: %s", name, entry["summary"])
    return result
