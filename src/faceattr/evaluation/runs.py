"""Every run's predictions on a split and each variant's statistics over its seeds (mean, std,
bootstrap CI), ensembles of variants, and the per-run files evaluate leaves."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from faceattr.config import EvaluateConfig
from faceattr.evaluation.scoring import (
    METRICS,
    _seed_mean,
    metric_key,
    per_image_scores,
    predict,
)
from faceattr.io import atomic_path, read_json, write_rows_csv
from faceattr.models.checkpoint import load_multitask
from faceattr.statistics import bootstrap_ci, mean_std, seed_cluster_bootstrap_ci
from faceattr.train.data import FaceTensors, to_input
from faceattr.variants import run_name

log = logging.getLogger(__name__)


@dataclass
class Variants:
    """Per-image scores of every run of every variant on one split, and what did not run."""

    scores: dict[str, dict[int, dict[str, np.ndarray]]]  # variant -> seed -> score -> (N,)
    predictions: dict[str, dict[int, dict[str, np.ndarray]]]
    not_run: dict[str, str]  # variant -> reason


def load_runs(
    variants: Sequence[str],
    seeds: Sequence[int],
    model_dir: Path,
    data: FaceTensors,
    cfg: EvaluateConfig,
    edges: Sequence[float],
    device: torch.device,
    half: bool = False,
    split_label: str = "",
) -> Variants:
    """Predict with every run's checkpoint; runs marked "not run" by finetune are collected."""
    out = Variants({}, {}, {})
    todo = [(name, seed) for name in variants for seed in seeds]
    for name, seed in tqdm(todo, desc=f"predicting {split_label}", unit="run", leave=False):
        folder = model_dir / run_name(name, seed)
        if (folder / "status.json").is_file():
            out.not_run[name] = read_json(folder / "status.json")["reason"]
            continue
        if not (folder / "model.pt").is_file():
            raise FileNotFoundError(f"no checkpoint for run '{folder.name}' at '{folder}'; run finetune_multitask")
        model, meta = load_multitask(folder / "model.pt")
        pred = predict(model, meta, data, device, cfg.batch_size, half)
        out.predictions.setdefault(name, {})[seed] = pred
        out.scores.setdefault(name, {})[seed] = per_image_scores(pred, data, edges, cfg.cs_threshold)
    return out


def add_ensembles(
    runs: Variants,
    ensembles: Mapping[str, Sequence[str]],
    data: FaceTensors,
    edges: Sequence[float],
    cs_threshold: float,
) -> None:
    """Ensembles of variants (second paper): per seed, average the members' probabilities and ages."""
    for name, members in ensembles.items():
        absent = [m for m in members if m not in runs.predictions]
        if absent:
            runs.not_run[name] = f"members not run or not in finetune_multitask.variants: {absent}"
            continue
        seeds = sorted(set.intersection(*(set(runs.predictions[m]) for m in members)))
        for seed in seeds:
            preds = [runs.predictions[m][seed] for m in members]
            keys = set.intersection(*(set(p) for p in preds))
            avg = {k: np.mean([p[k] for p in preds], 0) for k in keys}
            runs.predictions.setdefault(name, {})[seed] = avg
            runs.scores.setdefault(name, {})[seed] = per_image_scores(avg, data, edges, cs_threshold)


def variant_statistics(
    runs: Mapping[int, Mapping[str, np.ndarray]], cfg: EvaluateConfig, groups: Sequence[str] | None = None
) -> dict[str, Any]:
    """Per metric: mean ± std over seeds, the per-seed values and the bootstrap CI, resampling the
    clusters ``groups`` (one per test image; None: images), and the seeds too with
    ``evaluate.interval: seeds_and_clusters``."""
    out: dict[str, Any] = {}
    seeds = sorted(runs)
    for metric, (score, _) in METRICS.items():
        if score not in runs[seeds[0]] or not np.isfinite(runs[seeds[0]][score]).any():
            continue
        values = [float(np.nanmean(runs[s][score])) for s in seeds]
        mean, std = mean_std(values)
        stacked = np.stack([runs[s][score] for s in seeds])
        if cfg.interval == "seeds_and_clusters":
            lo, hi = seed_cluster_bootstrap_ci(stacked, cfg.bootstrap, cfg.confidence, groups=groups)
        else:
            lo, hi = bootstrap_ci(_seed_mean(stacked), cfg.bootstrap, cfg.confidence, groups=groups)
        out[metric_key(metric, cfg.cs_threshold)] = {
            "mean": mean,
            "std": std,
            "ci_low": lo,
            "ci_high": hi,
            "seeds": values,
        }
    return out


def save_predictions(runs: Variants, data: FaceTensors, directory: Path) -> None:
    """One CSV per run: each test image's store row (``index`` in faces.npy / labels.csv) and
    its path in the data set, so a reviewer can look the image up, its labels (``true_gender``,
    ``true_age``: they were written as ``gender``/``age`` and the predicted age overwrote the
    label) and the run's predictions."""
    for name, by_seed in runs.predictions.items():
        for seed, pred in by_seed.items():
            rows = []
            for i in range(len(data)):
                row: dict[str, Any] = {
                    "index": data.rows[i] if data.rows else "",
                    "path": data.paths[i] if data.paths else "",
                    "true_gender": int(data.gender[i]),  # labels: "age" below is the prediction
                    "true_age": float(data.age[i]),
                }
                for k, v in pred.items():
                    if v.ndim == 1:
                        row[k] = round(float(v[i]), 5)
                rows.append(row)
            write_rows_csv(rows, directory / f"{run_name(name, seed)}.csv")


def attention_figure(model_dir: Path, run: str, data: FaceTensors, path: Path, images: int = 8) -> None:
    """The attention maps of an attentional-CNN run over the first test faces (second paper)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, meta = load_multitask(model_dir / run / "model.pt")
    n = min(images, len(data))
    x = to_input(data.images[:n], torch.device("cpu"), tuple(meta["mean"]), tuple(meta["std"]))
    maps = torch.nn.functional.interpolate(model.trunk.attention(x), size=data.size, mode="bilinear")
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4))
    for i in range(n):
        axes[0, i].imshow(data.images[i].permute(1, 2, 0).numpy())
        axes[1, i].imshow(data.images[i].permute(1, 2, 0).numpy())
        axes[1, i].imshow(maps[i, 0].numpy(), cmap="jet", alpha=0.5)
        axes[0, i].axis("off"), axes[1, i].axis("off")
    fig.suptitle(f"attention maps of {run} (bottom) on test faces", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
