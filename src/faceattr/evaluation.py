"""Test-set evaluation: every run's per-image predictions, per-variant statistics over seeds,
paired comparisons, ensembles, breakdowns and data-efficiency points.

Each metric is a mean of per-image scores, so a variant's seed-averaged metric equals the mean of
its seed-averaged per-image scores; the bootstrap CI and the paired comparisons resample those
test images (``faceattr.statistics``). Seeds vary initialisation, batch order and augmentation
(and the image subset of ``frac`` variants); the split and the identity pretraining are fixed.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise, permutations
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from faceattr.config import INTERVALS, EvaluateConfig
from faceattr.io import atomic_path, read_json, write_rows_csv
from faceattr.metrics import LOWER_IS_BETTER, display_value, nme, nme_per_image
from faceattr.models.checkpoint import load_multitask
from faceattr.selection import HEADLINE, TASK_METRICS, headline_metrics
from faceattr.statistics import bootstrap_ci, holm, mean_std, paired_bootstrap, seed_cluster_bootstrap_ci
from faceattr.train.data import FaceTensors, LabelCodec, batch_indices, load_split, to_input
from faceattr.variants import Variant, parse_variant, run_name

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
    model.eval().to(device)
    chunks: dict[str, list[torch.Tensor]] = {}
    for idx in batch_indices(len(data), batch_size, None):
        x = to_input(data.images[idx], device, tuple(meta["mean"]), tuple(meta["std"]))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=half):
            outputs = model(x)
        pred = codec.decode(outputs)
        if "gender" in pred:
            pred["gender_prob"] = pred.pop("gender").softmax(1)[:, 1]
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
    age = data.age.numpy().astype(np.float64)
    if "age" in pred:
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


@dataclass
class Variants:
    """Per-image scores of every run of every variant on one split, and what did not run."""

    scores: dict[str, dict[int, dict[str, np.ndarray]]]  # variant -> seed -> score -> (N,)
    predictions: dict[str, dict[int, dict[str, np.ndarray]]]
    not_run: dict[str, str]  # variant -> reason


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


def _same_but(a: Variant, b: Variant, *fields: str) -> bool:
    keys = ("backbone", "pretraining", "tasks", "age_head", "gender_conditioned", "uncertainty_weighting", "fraction")
    return all(getattr(a, k) == getattr(b, k) for k in keys if k not in fields)


def comparison_pairs(
    names: Sequence[str], ensembles: Mapping[str, Sequence[str]]
) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """The comparisons the papers make, found among the listed variants: (a, b, question, metrics).

    Pretraining vs none and identity vs ImageNet (same tasks), multi-task vs fewer tasks (same
    backbone and pretraining, on the smaller set's tasks), age head, gender conditioning and
    uncertainty weighting vs their plain counterpart, and each ensemble vs its members.
    """
    parsed = {n: parse_variant(n) for n in names}
    pairs = []
    for (na, a), (nb, b) in permutations(parsed.items(), 2):
        if a.fraction != 100 or b.fraction != 100:  # data-efficiency points: pretraining only
            if _same_but(a, b, "pretraining") and a.pretraining != "none" and b.pretraining == "none":
                q = f"data efficiency: {a.pretraining} pretraining vs none at {a.fraction} % of the training images"
                pairs.append((na, nb, q, tuple(m for t in a.tasks for m in TASK_METRICS[t])))
            continue
        if _same_but(a, b, "pretraining") and a.pretraining != "none" and b.pretraining == "none":
            q = f"{a.pretraining} pretraining vs none"
        elif _same_but(a, b, "backbone", "pretraining") and (a.pretraining, b.pretraining) == ("identity", "imagenet"):
            q = "identity vs ImageNet pretraining"
        elif _same_but(a, b, "tasks") and set(a.tasks) > set(b.tasks):
            q = "multi-task vs fewer tasks"
        elif _same_but(a, b, "age_head") and b.age_head == "regression":
            q = f"{a.age_head} age head vs regression"
        elif _same_but(a, b, "gender_conditioned") and a.gender_conditioned:
            q = "gender-conditioned age vs plain"
        elif _same_but(a, b, "uncertainty_weighting") and a.uncertainty_weighting:
            q = "uncertainty weighting vs fixed weights"
        else:
            continue
        if q.startswith("multi-task"):
            tasks = b.tasks
        elif q.endswith("age head vs regression"):
            tasks = ("age",)
        else:
            tasks = tuple(t for t in a.tasks if t in b.tasks)
        metrics = [m for t in tasks for m in TASK_METRICS[t]]
        if "group" in (a.age_head, b.age_head) and "age" in tasks:
            metrics.append("age_group_acc")
        pairs.append((na, nb, q, tuple(metrics)))
    for name, members in ensembles.items():
        pairs += [(name, m, "ensemble vs member", COMPARED) for m in members]
    return pairs


def family(question: str, metric: str) -> str:
    """The question a comparison answers, within which Holm corrects: adding an ensemble must not
    change Table 1's verdicts. The first paper's Table 1 (pretraining) and Table 2 (task sets, and
    how their losses are weighted), its data-efficiency curves, the second paper (age heads, gender
    conditioning, ensembles) and the third (CelebA's attributes)."""
    if metric == "attr_acc":
        return "third paper: attributes"
    if question.startswith("data efficiency"):
        return "data efficiency"
    if "pretraining" in question:
        return "Table 1: pretraining"
    if question.startswith(("multi-task", "uncertainty weighting")):
        return "Table 2: task sets"
    return "second paper: age heads, gender conditioning, ensembles"


def compare(
    runs: Variants,
    pairs: Sequence[tuple[str, str, str, tuple[str, ...]]],
    cfg: EvaluateConfig,
    groups: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Paired bootstrap of each pair on the same test items, resampling the clusters ``groups``
    (None: images) and, where a variant has several seeds, the seeds too (two-level); each row's
    ``significant`` and ``p`` follow one rule, and ``significant_holm`` is Holm-corrected within
    the row's ``family`` (its question)."""
    rows: list[dict[str, Any]] = []
    todo = [(a, b, question, metric) for a, b, question, metrics in pairs for metric in metrics]
    for a, b, question, metric in tqdm(todo, desc="paired bootstraps", unit="test", leave=False):
        row: dict[str, Any] = {"a": a, "b": b, "question": question, "metric": metric}
        row["family"] = family(question, metric)
        if a in runs.not_run or b in runs.not_run:
            rows.append({**row, "status": "not run"})
            continue
        score, lower_better = METRICS[metric]
        sa, sb = runs.scores[a], runs.scores[b]
        if score not in next(iter(sa.values())) or score not in next(iter(sb.values())):
            continue
        xa = np.stack([sa[s][score] for s in sorted(sa)])  # (seeds, test images)
        xb = np.stack([sb[s][score] for s in sorted(sb)])
        if not (np.isfinite(_seed_mean(xa)) & np.isfinite(_seed_mean(xb))).any():
            continue
        res = paired_bootstrap(xa, xb, cfg.bootstrap, cfg.confidence, groups=groups)
        better = res["diff"] < 0 if lower_better else res["diff"] > 0
        rows.append({**row, **res, "status": "ok", "lower_is_better": lower_better, "a_better": bool(better)})
    tested = [r for r in rows if r["status"] == "ok"]
    for name in dict.fromkeys(r["family"] for r in tested):
        members = [r for r in tested if r["family"] == name]
        for r, keep in zip(members, holm([r["p"] for r in members], 1 - cfg.confidence), strict=True):
            r["significant_holm"] = keep
            r["holm_family_size"] = len(members)
    return rows


def data_efficiency(stats: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Metric vs training fraction for each family of variants listed at more than one fraction."""
    families: dict[str, list[Variant]] = {}
    for n in names:
        v = parse_variant(n)
        families.setdefault(v.family, []).append(v)
    out: dict[str, Any] = {}
    for family, members in families.items():
        if len(members) < 2:
            continue
        points: dict[str, list[dict[str, float]]] = {}
        for v in sorted(members, key=lambda v: v.fraction):
            for metric, s in stats.get(v.name, {}).items():
                if isinstance(s, dict) and "mean" in s:
                    points.setdefault(metric, []).append(
                        {"fraction": v.fraction / 100, "mean": s["mean"], "std": s["std"]}
                    )
        out[family] = points
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


def evaluate_variants(
    variants: Sequence[str],
    seeds: Sequence[int],
    model_dir: Path,
    store: Path,
    split_file: Path,
    cfg: EvaluateConfig,
    edges: Sequence[float],
    device: torch.device,
    predictions_dir: Path,
    half: bool = False,
) -> dict[str, Any]:
    """Everything the report states: per-run metrics, per-variant statistics, comparisons.

    ``half``: networks run under bf16 autocast (as ``finetune_multitask.accel.precision`` resolves
    on this machine), decoding and metrics in fp32."""
    data = {s: load_split(store, split_file, (s,)) for s in SPLITS}
    train = load_split(store, split_file, ("train",)).with_own_template()  # as finetune aligned to
    test = data["test"]
    results: dict[str, Any] = {
        "images": {s: len(d) for s, d in data.items()},
        "baseline": {s: baseline_metrics(train, d, cfg.cs_threshold) for s, d in data.items()},
        "protocol": {
            "seeds": list(seeds),
            "bootstrap": cfg.bootstrap,
            "confidence": cfg.confidence,
            "age_group_edges": list(edges),
            "std": "sample std over seeds (ddof 1)",
            "interval": cfg.interval,
            "ci": INTERVALS[cfg.interval],
            "cluster_unit": test.group_unit,
            "clusters": len(set(test.groups)),
            "precision": "bf16 autocast (network), fp32 (decoding, metrics)" if half else "fp32",
        },
    }
    val_runs = load_runs(variants, seeds, model_dir, data["val"], cfg, edges, device, half, "val")
    runs = load_runs(variants, seeds, model_dir, test, cfg, edges, device, half, "test")
    for r in (runs, val_runs):
        add_ensembles(r, cfg.ensemble_members, data["val"] if r is val_runs else test, edges, cfg.cs_threshold)
    results["runs"] = {
        run_name(name, seed): {
            "test": summarise(runs.scores[name][seed], cfg.cs_threshold),
            "val": summarise(val_runs.scores[name][seed], cfg.cs_threshold),
        }
        for name in runs.scores
        for seed in runs.scores[name]
    }
    stats: dict[str, Any] = {}
    for name in [*variants, *cfg.ensemble_members]:
        if name in runs.not_run:
            stats[name] = {"status": "not run", "reason": runs.not_run[name]}
            continue
        merged = {s: {**runs.scores[name][s], **runs.predictions[name][s]} for s in runs.scores[name]}
        stats[name] = {
            "status": "ok",
            **variant_statistics(runs.scores[name], cfg, test.groups),
            "breakdown": breakdowns(merged, test, edges, test.attribute_names, train),
        }
        if name in cfg.ensemble_members:
            stats[name]["members"] = list(cfg.ensemble_members[name])

    results["variants"] = stats
    results["comparisons"] = compare(runs, comparison_pairs(variants, cfg.ensemble_members), cfg, test.groups)
    results["data_efficiency"] = data_efficiency(stats, variants)
    save_predictions(runs, test, predictions_dir)
    for name in variants:
        if name in runs.scores and parse_variant(name).backbone == "attn_cnn":
            attention_figure(
                model_dir,
                run_name(name, min(runs.scores[name])),
                test,
                predictions_dir / "figures" / f"attention-{name}.png",
            )
    for name, s in stats.items():
        log.info("%s: %s", name, {k: round(v["mean"], 4) for k, v in s.items() if isinstance(v, dict) and "mean" in v})
    return results
