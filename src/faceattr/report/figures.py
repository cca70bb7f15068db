"""The report's figures: learning curves, identity pretraining, data efficiency, confusion matrices."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from faceattr.io import atomic_path
from faceattr.metrics import PERCENT
from faceattr.report.tables import (
    MAIN_METRICS,
    METRIC_LABEL,
)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _plt().close(fig)
    return path


def line_styles(n: int) -> list[dict[str, Any]]:
    """``n`` distinguishable line styles: matplotlib's 10 default colours, then the same colours
    dashed, dotted and dash-dotted (40 before a style repeats)."""
    colours = [f"C{i}" for i in range(10)]
    dashes = ["-", "--", ":", "-."]
    return [{"color": colours[i % 10], "linestyle": dashes[(i // 10) % 4]} for i in range(n)]


def plot_curves(curves: Mapping[str, list[dict[str, float]]], out_dir: Path) -> list[Path]:
    """One PNG per validation metric, a line per variant (mean over seeds)."""
    plt = _plt()
    paths = []
    styles = line_styles(len(curves))
    for metric, label in (
        ("val_gender_acc", "validation gender accuracy"),
        ("val_age_mae", "validation age MAE (years)"),
        ("val_landmark_nme", "validation landmark NME"),
        # one task's loss per figure: a sum over 1 and over 3 tasks is not one scale
        ("train_loss_gender", "training gender loss"),
        ("train_loss_age", "training age loss"),
        ("train_loss_landmarks", "training landmark loss"),
        ("train_loss_attributes", "training attribute loss"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for (name, rows), style in zip(curves.items(), styles, strict=True):
            pts = [(r["epoch"], r[metric]) for r in rows if metric in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=name, **style)
        if not ax.lines:
            plt.close(fig)
            continue
        ax.set_xlabel("epoch"), ax.set_ylabel(label + " (mean over seeds)"), ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
        fig.tight_layout()
        paths.append(_save(fig, out_dir / f"{metric}.png"))
    return paths


def plot_pretraining(rows: Sequence[Mapping[str, float]], path: Path) -> Path | None:
    """Identity pretraining by epoch: held-out verification accuracy (± std over folds) and the
    training identity accuracy, so a reader sees whether the trunk had converged."""
    if not rows or not any("verify_acc" in r for r in rows):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    pts = [r for r in rows if "verify_acc" in r]
    x = [r["epoch"] for r in pts]
    ax.errorbar(
        x,
        [100 * r["verify_acc"] for r in pts],
        yerr=[100 * r.get("verify_acc_std", 0.0) for r in pts],
        marker="o",
        ms=3,
        capsize=2,
        label="held-out verification (± std over folds)",
    )
    train = [(r["epoch"], 100 * r["train_id_acc"]) for r in rows if "train_id_acc" in r]
    if train:
        ax.plot(*zip(*train, strict=True), marker="s", ms=3, label="training identity accuracy")
    ax.set_xlabel("epoch"), ax.set_ylabel("%"), ax.grid(alpha=0.3), ax.legend(fontsize=8, loc="best")
    ax.set_title("identity pretraining")
    fig.tight_layout()
    return _save(fig, path)


def plot_data_efficiency(ev: Mapping[str, Any], path: Path) -> Path | None:
    """Metric vs fraction of the labelled training images, a line per family, ± std over seeds."""
    families = ev["data_efficiency"]
    metrics = [m for m in MAIN_METRICS if any(m in f for f in families.values())]
    if not metrics:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for family, points in families.items():
            pts = points.get(metric)
            if pts:
                scale = 100 if metric in PERCENT else 1
                x = [p["fraction"] * 100 for p in pts]
                ax.errorbar(
                    x,
                    [p["mean"] * scale for p in pts],
                    [p["std"] * scale for p in pts],
                    marker="o",
                    capsize=3,
                    label=family,
                )
        ax.set_xscale("log"), ax.set_xlabel("labelled training images"), ax.set_ylabel(METRIC_LABEL[metric])
        ticks = sorted({p["fraction"] * 100 for f in families.values() for p in f.get(metric, ())})
        ax.set_xticks(ticks, [_percent_label(x / 100) for x in ticks])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    fig.suptitle("data efficiency (test split, mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _percent_label(fraction: float) -> str:
    """10 %, 25 %, 2.5 %: a training fraction as the tables and axes label it."""
    value = fraction * 100
    return f"{value:.0f} %" if value == round(value) else f"{value:.1f} %"


def plot_confusion(bands: Sequence[str], counts: Sequence[Sequence[int]], title: str, path: Path) -> Path:
    """Age-group confusion matrix (rows true, columns predicted; counts summed over seeds)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.imshow(counts, cmap="Blues")
    (
        ax.set_xticks(range(len(bands)), bands, rotation=45, fontsize=7),
        ax.set_yticks(range(len(bands)), bands, fontsize=7),
    )
    for i, row in enumerate(counts):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=6)
    ax.set_xlabel("predicted age group"), ax.set_ylabel("true age group"), ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _link(path: Path, out_md: Path) -> str:
    return f"![{path.stem}]({Path(os.path.relpath(path, out_md.parent)).as_posix()})"
