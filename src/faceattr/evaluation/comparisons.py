"""The comparison design: which pairs of variants each question compares, on which metrics, the
Holm family each belongs to, and the paired bootstrap of each pair; the data-efficiency points."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import permutations
from typing import Any

import numpy as np
from tqdm import tqdm

from faceattr.config import EvaluateConfig
from faceattr.evaluation.runs import (
    Variants,
)
from faceattr.evaluation.scoring import (
    COMPARED,
    METRICS,
    _seed_mean,
)
from faceattr.evaluation.selection import TASK_METRICS
from faceattr.statistics import holm, paired_bootstrap
from faceattr.variants import Variant, parse_variant


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
