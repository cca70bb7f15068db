"""Scoring one run's test predictions: the per-image scores behind every metric, their summaries,
the image-blind baselines, breakdowns by group, and the headline numbers DVC lists."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from faceattr.evaluation.selection import HEADLINE, headline_metrics
from faceattr.inference import decoded_batches
from faceattr.metrics import (
    LOWER_IS_BETTER,
    display_value,
    expected_calibration_error,
    nme,
    nme_per_image,
    within_spread,
)
from faceattr.train.data import FaceTensors, LabelCodec

log = logging.getLogger(__name__)


SPLITS = ("val", "test")


# metric -> per-image score
SCORES = {
    "gender_acc": "gender_correct",
    "age_mae": "age_abs_err",
    "age_cs": "age_cs",
    "age_group_acc": "age_group_correct",
    "age_aabd": "age_group_abs_diff",
    "landmark_nme": "landmark_nme",
    "attr_acc": "attr_acc",
}


# metric -> (per-image score, lower is better)
METRICS = {m: (score, m in LOWER_IS_BETTER) for m, score in SCORES.items()}


COMPARED = ("gender_acc", "age_mae", "age_group_acc", "landmark_nme", "attr_acc")


def _seed_mean(stacked: np.ndarray) -> np.ndarray:
    """Mean over seeds (axis 0) of per-image scores; NaN, without a warning, where none has one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmean(stacked, 0)


def metric_key(metric: str, cs_threshold: float) -> str:
    """Public metric name (``age_cs`` carries its threshold: ``age_cs5``)."""
    return f"age_cs{cs_threshold:g}" if metric == "age_cs" else metric


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    meta: Mapping[str, Any],
    data: FaceTensors,
    device: torch.device,
    batch_size: int,
    half: bool = False,
) -> dict[str, np.ndarray]:
    """Per-image outputs: P(female), age in years, age-group and attribute probabilities, landmarks.

    ``half``: the network runs under bf16 autocast (``accel.precision`` as training resolved it);
    decoding runs in fp32 either way."""
    codec = LabelCodec.from_meta(meta)
    model.to(device)
    chunks: dict[str, list[torch.Tensor]] = {}
    norm = tuple(meta["mean"]), tuple(meta["std"])
    for _, pred in decoded_batches(model, codec, data.images, device, *norm, batch_size, half=half):
        if "gender" in pred:  # calibrated (the checkpoint's temperature), and as the network said
            logits = pred.pop("gender")
            pred["gender_prob"] = logits.softmax(1)[:, 1]
            pred["gender_prob_uncalibrated"] = (logits * codec.gender_temperature).softmax(1)[:, 1]
        if "age_std" in pred:
            pred["age_std_uncalibrated"] = pred["age_std"] / codec.age_std_scale
        for k, v in pred.items():
            chunks.setdefault({"age_group": "age_group_prob", "attributes": "attr_prob"}.get(k, k), []).append(v)
    return {k: torch.cat(v).float().cpu().numpy() for k, v in chunks.items()}


def per_image_scores(
    pred: Mapping[str, np.ndarray], data: FaceTensors, edges: Sequence[float], cs_threshold: float
) -> dict[str, np.ndarray]:
    """Per-image scores (NaN where the image lacks the label or the model the task)."""
    nan = np.full(len(data), np.nan)
    s: dict[str, np.ndarray] = {}
    gender = data.gender.numpy()
    if "gender_prob" in pred:
        s["gender_correct"] = np.where(gender >= 0, (pred["gender_prob"] >= 0.5) == (gender == 1), nan)
        for kind in CALIBRATION_KINDS:
            if f"gender_prob{kind}" in pred:
                p = pred[f"gender_prob{kind}"]
                s[f"gender_confidence{kind}"] = np.where(gender >= 0, np.maximum(p, 1 - p), nan)
    age = data.age.numpy().astype(np.float64)
    if "age" in pred:
        for kind in CALIBRATION_KINDS:
            if f"age_std{kind}" in pred:
                s[f"age_in_1sd{kind}"] = within_spread(pred["age"], pred[f"age_std{kind}"], age)
        err = np.abs(pred["age"] - age)
        s["age_abs_err"] = err
        s["age_cs"] = np.where(np.isfinite(err), err <= cs_threshold, nan)
        true_group = np.digitize(age, edges)
        group = pred["age_group_prob"].argmax(1) if "age_group_prob" in pred else np.digitize(pred["age"], edges)
        s["age_group_correct"] = np.where(np.isfinite(age), group == true_group, nan)
        s["age_group_abs_diff"] = np.where(np.isfinite(age), np.abs(group - true_group), nan)
        s["true_group"], s["pred_group"] = np.where(np.isfinite(age), true_group, -1), group
    if "landmarks" in pred:
        t = data.landmarks.double()
        s["landmark_nme"] = nme_per_image(torch.as_tensor(pred["landmarks"], dtype=torch.float64), t).numpy()
    if "attr_prob" in pred and data.attributes is not None:
        true = data.attributes.numpy()
        known = np.isfinite(true)
        right = ((pred["attr_prob"] >= 0.5) == (true >= 0.5)) & known
        with np.errstate(invalid="ignore"):
            s["attr_acc"] = right.sum(1) / np.where(known.sum(1) > 0, known.sum(1), np.nan)
    return s


CALIBRATION_KINDS = ("", "_uncalibrated")  # with the checkpoint's calibration, and without


def calibration_metrics(scores: Mapping[str, np.ndarray]) -> dict[str, float]:
    """One run's calibration on a split: the ECE of its gender answers and the coverage of its
    age ± spread interval, each with the checkpoint's calibration and without
    (``_uncalibrated``). Not metrics a variant is better for having more of: kept apart from
    :data:`METRICS`."""
    out: dict[str, float] = {}
    for kind in CALIBRATION_KINDS:
        if f"gender_confidence{kind}" in scores:
            conf = scores[f"gender_confidence{kind}"]
            out[f"gender_ece{kind}"] = expected_calibration_error(conf, scores["gender_correct"])
        covered = scores.get(f"age_in_1sd{kind}")
        if covered is not None and np.isfinite(covered).any():
            out[f"age_1sd_coverage{kind}"] = float(np.nanmean(covered))
    return out


def summarise(scores: Mapping[str, np.ndarray], cs_threshold: float) -> dict[str, float]:
    """Metric values: the mean of each per-image score over the labelled images."""
    out = {}
    for metric, (score, _) in METRICS.items():
        if score in scores and np.isfinite(scores[score]).any():
            out[metric_key(metric, cs_threshold)] = float(np.nanmean(scores[score]))
    return out


def baseline_metrics(train: FaceTensors, data: FaceTensors, cs_threshold: float) -> dict[str, float]:
    """What a model that ignores the image scores: majority gender, mean training age, template."""
    out: dict[str, float] = {}
    g_train, g = train.gender[train.gender >= 0], data.gender[data.gender >= 0]
    if len(g_train) and len(g):
        majority = int(torch.mode(g_train).values)
        out["gender_acc"] = float((g == majority).float().mean())
    a_train, a = train.age[torch.isfinite(train.age)], data.age[torch.isfinite(data.age)]
    if len(a_train) and len(a):
        err = (a - a_train.mean()).abs()
        out["age_mae"] = float(err.mean())
        out[f"age_cs{cs_threshold:g}"] = float((err <= cs_threshold).float().mean())
    lm = data.landmarks[torch.isfinite(data.landmarks).flatten(1).all(1)]
    if len(lm):
        tpl = torch.tensor(train.template(), dtype=torch.float32)  # the template training aligned to
        out["landmark_nme"] = nme(tpl.expand_as(lm), lm)
    if train.attributes is not None and data.attributes is not None and data.attributes.shape[1]:
        majority = (torch.nanmean(train.attributes, 0) >= 0.5).float()
        known = torch.isfinite(data.attributes)
        out["attr_acc"] = float(((data.attributes == majority) & known).sum() / known.sum().clamp(min=1))
    return out


def breakdowns(
    runs: Mapping[int, Mapping[str, np.ndarray]],
    data: FaceTensors,
    edges: Sequence[float],
    attribute_names: Sequence[str],
    train: FaceTensors | None = None,
) -> dict[str, Any]:
    """Seed-averaged MAE per true age band, accuracy per gender and race, the age-group confusion
    matrix (counts summed over seeds) and per-attribute accuracies, each beside the accuracy of
    predicting the attribute's majority value in ``train`` for every image."""
    first = next(iter(runs.values()))
    mean = {
        k: _seed_mean(np.stack([r[k] for r in runs.values()])) for k in first if k not in ("true_group", "pred_group")
    }
    out: dict[str, Any] = {}
    bands = [f"<{edges[0]:g}", *(f"{a:g}-{b:g}" for a, b in pairwise(edges)), f"{edges[-1]:g}+"]
    if "age_abs_err" in mean:
        group = first["true_group"]
        out["age_mae_by_band"] = [
            {"band": b, "mae": float(np.nanmean(mean["age_abs_err"][group == i])), "images": int((group == i).sum())}
            for i, b in enumerate(bands)
            if (group == i).any()
        ]
        k = len(bands)
        confusion = np.zeros((k, k), dtype=int)
        for r in runs.values():
            ok = r["true_group"] >= 0
            np.add.at(confusion, (r["true_group"][ok], r["pred_group"][ok]), 1)
        out["age_group_confusion"] = {"bands": bands, "counts": confusion.tolist()}
    for label, codes, names in (
        ("gender", data.gender.numpy(), {0: "male", 1: "female"}),
        ("race", data.race.numpy() if data.race is not None else None, None),
    ):
        if codes is None or not (codes >= 0).any():
            continue
        rows = {}
        for code in sorted(set(codes[codes >= 0].tolist())):
            sel = codes == code
            row = {"images": int(sel.sum())}
            for metric in ("gender_acc", "age_mae"):
                score = METRICS[metric][0]
                if score in mean and np.isfinite(mean[score][sel]).any():
                    row[metric] = float(np.nanmean(mean[score][sel]))
            rows[names.get(code, str(code)) if names else str(code)] = row
        out[f"by_{label}"] = rows
    preds = [p for p in runs.values() if "attr_prob" in p]
    if preds and data.attributes is not None and len(attribute_names):
        true = data.attributes.numpy()
        per = {}
        for j, name in enumerate(attribute_names):
            known = np.isfinite(true[:, j])
            t = true[known, j] >= 0.5
            accs, bals = [], []
            for p in preds:
                y = p["attr_prob"][known, j] >= 0.5
                accs.append(float((y == t).mean()))
                recalls = [float((y[t == c] == c).mean()) for c in (False, True) if (t == c).any()]
                bals.append(float(np.mean(recalls)))
            per[name] = {
                "acc": float(np.mean(accs)),
                "balanced_acc": float(np.mean(bals)),
                "positive_rate": float(t.mean()),
            }
            if train is not None and train.attributes is not None:
                majority = bool(np.nanmean(train.attributes[:, j].numpy()) >= 0.5)
                per[name]["majority_acc"] = float((t == majority).mean())
        out["attributes"] = per
    return out


def summarise_results(results: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers worth a `dvc metrics diff`: test images, baselines, and per variant the
    mean, std and CI of each metric (variants that did not run are left out)."""
    variants = {
        name: {m: {k: s[k] for k in ("mean", "std", "ci_low", "ci_high")} for m, s in st.items() if "mean" in s}
        for name, st in results["variants"].items()
        if st["status"] == "ok"
    }
    return {"images": results["images"]["test"], "baseline": results["baseline"]["test"], "variants": variants}


def headline(results: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """What ``dvc metrics show/diff`` and ``dvc exp show`` list: per variant that ran, the mean over
    seeds of its main test metrics (accuracies in percent) and its number of seeds; and for the
    whole run the best of those means per metric (``best``: on test means, as the report marks it)
    with the test images and people they were measured on. The rest is ``summary.json`` and
    ``evaluate.json``."""
    per_variant: dict[str, dict[str, float]] = {}
    for name, st in results["variants"].items():
        if st.get("status") != "ok":
            continue
        wanted = headline_metrics(name)
        stats = {m: st[m] for m in wanted if isinstance(st.get(m), dict) and "mean" in st[m]}
        row = {m: display_value(m, s["mean"]) for m, s in stats.items()}
        per_variant[name] = {**row, "seeds": max((len(s.get("seeds", ())) for s in stats.values()), default=0)}
    best: dict[str, float] = {}
    for m in HEADLINE:
        values = [row[m] for row in per_variant.values() if m in row]
        if values:
            best[m] = min(values) if METRICS[m][1] else max(values)
    test = {"test_images": results["images"]["test"], "test_clusters": results["protocol"].get("clusters")}
    return {"best": best, **{k: v for k, v in test.items() if v is not None}}, per_variant
