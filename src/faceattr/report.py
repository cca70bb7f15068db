"""The report: the papers' tables filled from this run, with seeds, CIs and significance.

Reads only small metrics/plots files (``evaluate.json``, the pretraining metrics, the curves), so
it reruns in seconds when a ``report`` param changes. Every number carries its protocol: data
set, split, seeds and the bootstrap behind its interval.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.config import ReportConfig
from faceattr.io import atomic_path, write_rows_csv
from faceattr.metrics import LOWER_IS_BETTER, PERCENT
from faceattr.selection import best_on_validation, headline_metrics

# First paper (AgeDB, split not stated, one run; gender accuracy %, age MAE years).
PAPER_TABLE1 = {
    ("face_resnet18", "identity"): (98.13, 6.908),
    ("face_resnet18", "none"): (96.44, 7.955),
    ("resnet18", "imagenet"): (97.84, 7.186),
    ("resnet18", "none"): (95.47, 9.282),
}
PAPER_TABLE2 = {
    ("gender",): (97.98, None),
    ("gender", "landmarks"): (97.76, None),
    ("age",): (None, 6.535),
    ("age", "landmarks"): (None, 6.730),
    ("gender", "age"): (98.04, 6.871),
    ("gender", "age", "landmarks"): (98.13, 6.908),
}
# Second paper (UTKFace, random split, protocol unconfirmed): age-group acc %, gender acc %.
PAPER2 = {"ensemble": (91.3, 96.5), "resnet": (90.0, 96.5), "attentional CNN": (74.2, 55.2)}
PAPER3_CELEBA_MEAN_ACC = 87.0  # LNet+ANet, CelebA official test partition
PAPER_PRETRAIN_SCALE = "10,575 people and 494,414 images"  # CASIA-WebFace, the first paper's source
CASIA_PEOPLE, CASIA_IMAGES = 10_575, 494_414
TABLE1_QUESTIONS = ("identity pretraining", "imagenet pretraining", "dlib pretraining", "identity vs ImageNet")
PRETRAINING_LABEL = {
    "identity": "identity (this run's pretrain_identity)",
    "none": "none",
    "imagenet": "ImageNet",
    "dlib": "dlib's (7,485 people, about 3 million faces)",
}
MAIN_TASKS = ("gender", "age", "landmarks")
METRIC_LABEL = {
    "gender_acc": "gender acc. %",
    "age_mae": "age MAE (years)",
    "age_cs5": "CS@5 %",
    "age_group_acc": "age-group acc. %",
    "age_aabd": "AABD (groups)",
    "landmark_nme": "landmark NME",
    "attr_acc": "mean attribute acc. %",
}


def _fmt(value: float | None, decimals: int, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value * 100:.{decimals}f}" if percent else f"{value:.{decimals}f}"


def _dec(metric: str, d: int) -> int:
    return 4 if metric in ("landmark_nme",) else d


def cell(stat: Mapping[str, Any] | None, metric: str, d: int) -> str:
    """``mean ± std [CI low, CI high]`` of a metric over seeds; empty when absent."""
    if not stat:
        return ""
    pct, dd = metric in PERCENT, _dec(metric, d)
    return (
        f"{_fmt(stat['mean'], dd, pct)} ± {_fmt(stat['std'], dd, pct)} "
        f"[{_fmt(stat['ci_low'], dd, pct)}, {_fmt(stat['ci_high'], dd, pct)}]"
    )


def _variant(backbone: str, pretraining: str, tasks: Sequence[str]) -> str:
    return f"{backbone}-{pretraining}-{'+'.join(tasks)}"


def _cells(
    ev: Mapping[str, Any], name: str, metrics: Sequence[str], d: int, best: Mapping[str, float] | None = None
) -> list[str]:
    """A variant's cells; the mean of a metric is bold where it is ``best``'s value for that metric
    (the best test mean among the table's rows)."""
    st = ev["variants"].get(name)
    if st is None:
        return ["not in `finetune_multitask.variants`"] + [""] * (len(metrics) - 1)
    if st["status"] != "ok":
        return ["**not run**: " + _short_reason(st["reason"])] + [""] * (len(metrics) - 1)
    cells = []
    for m in metrics:
        text = cell(st.get(m), m, d)
        if text and best is not None and m in best and st[m]["mean"] == best[m]:
            mean, rest = text.split(" ± ", 1)
            text = f"**{mean}** ± {rest}"
        cells.append(text)
    return cells


def best_means(ev: Mapping[str, Any], names: Sequence[str], metrics: Sequence[str]) -> dict[str, float]:
    """Per metric, the best test mean over seeds among ``names`` that ran (highest accuracy,
    lowest error): what the tables mark bold and the summary names."""
    best: dict[str, float] = {}
    for m in metrics:
        values = [ev["variants"][n][m]["mean"] for n in names if m in ev["variants"].get(n, {})]
        if values:
            best[m] = min(values) if m in LOWER_IS_BETTER else max(values)
    return best


def _short_reason(reason: str) -> str:
    return reason.split(". ")[0].replace("|", "/") + "."


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


MAIN_METRICS = ("gender_acc", "age_mae", "landmark_nme")
MAIN_HEADER = ("Gender acc. %", "Age MAE (years)", "Landmark NME")
PAPER_HEADER = ("Paper gender % (AgeDB)", "Paper age MAE (AgeDB)")
NOT_COMPARABLE_HEADER = ("Paper gender % (AgeDB; not comparable)", "Paper age MAE (AgeDB; not comparable)")


def table1(ev: Mapping[str, Any], d: int, paper_header: Sequence[str] = PAPER_HEADER) -> str:
    """Pretraining comparison, all gender+age+landmarks; the best test mean per metric in bold."""
    paper = [_variant(b, p, MAIN_TASKS) for b, p in PAPER_TABLE1]
    others = [  # other trunks that ran on the same tasks (dlib_resnet): no paper row
        n for n in sorted(ev["variants"]) if n.split("-", 2)[2:] == ["+".join(MAIN_TASKS)] and n not in paper
    ]
    best = best_means(ev, [*paper, *others], MAIN_METRICS)
    rows = []
    for (backbone, pre), (p_g, p_a) in PAPER_TABLE1.items():
        name = _variant(backbone, pre, MAIN_TASKS)
        cells = _cells(ev, name, MAIN_METRICS, d, best)
        rows.append([backbone, PRETRAINING_LABEL[pre], *cells, f"{p_g:.2f}", f"{p_a:.3f}"])
    for name in others:
        backbone, pre, _ = name.split("-", 2)
        rows.append([backbone, PRETRAINING_LABEL.get(pre, pre), *_cells(ev, name, MAIN_METRICS, d, best), "", ""])
    return _table(["Architecture", "Pretraining", *MAIN_HEADER, *paper_header], rows)


def table2(ev: Mapping[str, Any], d: int, paper_header: Sequence[str] = PAPER_HEADER) -> str:
    """Task-set comparison on FaceResNet18 + identity pretraining."""
    rows = []
    best = best_means(ev, [_variant("face_resnet18", "identity", tasks) for tasks in PAPER_TABLE2], MAIN_METRICS)
    for tasks, (p_g, p_a) in PAPER_TABLE2.items():
        marks = ["✓" if t in tasks else "" for t in MAIN_TASKS]
        ours = _cells(ev, _variant("face_resnet18", "identity", tasks), MAIN_METRICS, d, best)
        rows.append([*marks, *ours, _fmt(p_g, 2), _fmt(p_a, 3)])
    return _table(["Gender", "Age", "Landmark", *MAIN_HEADER, *paper_header], rows)


def _signed(value: float, metric: str, d: int) -> str:
    """A difference with its sign and unit (pp for percentages); one that rounds to 0 has no sign."""
    pct, dd = metric in PERCENT, _dec(metric, d)
    text = _fmt(value, dd, pct)
    text = text.lstrip("-") if float(text) == 0 else text
    return f"{'' if text.startswith('-') else '+'}{text}{' pp' if pct else ''}"


def _p_text(c: Mapping[str, Any], bootstrap: int) -> str:
    # no resample on the far side of zero: the p-value is below the bootstrap's resolution
    return f"< {2 / bootstrap:.2g}" if c["p"] == 0 else f"{c['p']:.3f}"


def verdict(c: Mapping[str, Any]) -> str:
    """Significant after Holm within the comparison's family, before it only, or not at all."""
    if not c["significant"]:
        return "not significant"
    better = "first" if c["a_better"] else "second"
    if c.get("significant_holm"):
        return f"**significant after Holm**, {better} better"
    return f"significant before Holm only, {better} better"


def significance(ev: Mapping[str, Any], d: int, questions: Sequence[str] | None = None) -> list[str]:
    """The paired comparisons as one table: first and second variant, metric, difference (first
    minus second), its CI, p, and the verdict with Holm's family; pairs that did not run listed once."""
    rows, not_run = [], []
    families: dict[str, int] = {}
    for c in ev["comparisons"]:
        if questions is not None and not any(c["question"].startswith(q) for q in questions):
            continue
        if c["status"] != "ok":
            if (c["a"], c["b"]) not in not_run:
                not_run.append((c["a"], c["b"]))
            continue
        dd, pct = _dec(c["metric"], d), c["metric"] in PERCENT
        ci = f"[{_fmt(c['ci_low'], dd, pct)}, {_fmt(c['ci_high'], dd, pct)}]"
        families[c.get("family", "all comparisons")] = c.get("holm_family_size") or 0
        rows.append(
            [
                c["question"],
                f"`{c['a']}`",
                f"`{c['b']}`",
                METRIC_LABEL.get(c["metric"], c["metric"]),
                _signed(c["diff"], c["metric"], d),
                ci,
                _p_text(c, ev["protocol"]["bootstrap"]),
                verdict(c),
            ]
        )
    lines = []
    if rows:
        lines.append(_table(["Question", "First", "Second", "Metric", "Difference", "95 % CI", "p", "Verdict"], rows))
        unit = ev["protocol"].get("cluster_unit", "image")
        ok = [c for c in ev["comparisons"] if c["status"] == "ok"]
        first = next((c for c in ok if questions is None or c["question"].startswith(tuple(questions))), None)
        if first is not None:
            of = f" of {first['clusters']} {'people' if unit == 'person' else 'groups'}" if "clusters" in first else ""
            counts = sorted(set(first.get("seeds", ())))
            seeds = (
                f"; each model's {' or '.join(map(str, counts))} seeds resampled too"
                if first.get("resampled") == "seeds and clusters"
                else ""
            )
            holm = "; ".join(f"*{f}*, {n} tests" if n else f"*{f}*" for f, n in families.items())
            lines += ["", f"Paired on {first['images']} test images{of}{seeds}. Holm within {holm}."]
    if not_run and lines:
        lines.append("")
    for a, b in not_run:
        lines.append(f"- `{a}` vs `{b}`: **not run** (no statistics)")
    return lines or ["- (no such pairs among the variants run)"]


def _question(c: Mapping[str, Any]) -> str:
    """A comparison's question without its fraction: the data-efficiency points answer one question."""
    q = c["question"]
    return q.split(" at ", 1)[0] if q.startswith("data efficiency") else q


def _at(c: Mapping[str, Any]) -> str:
    q = c["question"]
    return f" at {q.split(' at ', 1)[1].split(' of ', 1)[0]}" if q.startswith("data efficiency") and " at " in q else ""


def _finding(c: Mapping[str, Any], d: int) -> str:
    dd, pct = _dec(c["metric"], d), c["metric"] in PERCENT
    return (
        f"{METRIC_LABEL.get(c['metric'], c['metric'])}{_at(c)} {_signed(c['diff'], c['metric'], d)} "
        f"[{_fmt(c['ci_low'], dd, pct)}, {_fmt(c['ci_high'], dd, pct)}]"
    )


def answers(ev: Mapping[str, Any], d: int) -> list[list[str]]:
    """One row per question the comparisons ask: how many of its paired tests are significant
    after Holm, those findings (first minus second), or the one closest to significance."""
    by_question: dict[str, list[Mapping[str, Any]]] = {}
    for c in ev["comparisons"]:
        by_question.setdefault(_question(c), []).append(c)
    rows = []
    families = list(dict.fromkeys(c.get("family", "") for c in ev["comparisons"]))  # in the report's order
    order = sorted(by_question, key=lambda q: families.index(by_question[q][0].get("family", "")))
    for question in order:
        cs = by_question[question]
        ok = [c for c in cs if c["status"] == "ok"]
        family = cs[0].get("family", "all comparisons")
        if not ok:
            rows.append([question, family, "—", "**not run** (a variant of each pair did not train)"])
            continue
        held = [c for c in ok if c.get("significant_holm")]
        if held:
            shown = sorted(held, key=lambda c: c["p"])[:3]
            more = f"; {len(held) - 3} more" if len(held) > 3 else ""
            answer = (
                "; ".join(f"{_finding(c, d)} ({'first' if c['a_better'] else 'second'} better)" for c in shown) + more
            )
        else:
            closest = min(ok, key=lambda c: c["p"])
            answer = f"no difference; closest: {_finding(closest, d)}, p = {closest['p']:.3f}"
        rows.append([question, family, f"{len(held)} of {len(ok)}", answer])
    return rows


def summary_section(ev: Mapping[str, Any], d: int) -> list[str]:
    """The report's first screen: per question its answer, the best variant per metric, what the
    numbers were computed in, and which model the export stage ships."""
    lines = ["## Summary", ""]
    proto = ev["protocol"]
    machine = proto.get("machine")
    on = f" on {machine}" if machine else ""
    lines += [
        f"Computed in **{proto.get('precision', 'unrecorded precision')}**{on}; on another CPU or precision the "
        "numbers differ within their intervals (training is deterministic for one seed, machine and precision). "
        f"{ev['images']['test']} test images, {len(proto['seeds'])} seeds per variant; every comparison is paired "
        "on the same test images, first minus second.",
        "",
    ]
    rows = answers(ev, d)
    if rows:
        lines += [_table(["Question", "Holm family", "Significant after Holm", "Answer"], rows), ""]
    ran = [n for n, st in ev["variants"].items() if st["status"] == "ok"]
    compared = {m for n in ran for m in headline_metrics(n)}  # age groups only where a group head ran
    metrics = [m for m in ("gender_acc", "age_mae", "age_group_acc", "landmark_nme", "attr_acc") if m in compared]
    best = best_means(ev, ran, metrics)
    if best:
        parts = []
        for m, value in best.items():
            name = next(n for n in ran if ev["variants"][n].get(m, {}).get("mean") == value)
            parts.append(f"{METRIC_LABEL[m]} {cell(ev['variants'][name][m], m, d)} `{name}`")
        lines += ["**Best test mean per metric** (bold in the tables): " + "; ".join(parts) + ".", ""]
    chosen = best_on_validation(ev["runs"])
    if chosen:
        tasks = max(chosen, key=lambda t: len(t.split("+")))
        run, metric = chosen[tasks]
        lines += [
            f"**The exported model** (`export.tasks: auto`, the largest task set, {tasks}) is run `{run}`, the best "
            f"on **validation** {METRIC_LABEL.get(metric, metric)}: chosen without the test split, so it can differ "
            "from the best test mean above, which is a ranking on test, not a selection.",
            "",
        ]
    return lines


def read_curves(directory: Path) -> dict[str, list[dict[str, float]]]:
    """Per-run learning curves written by finetune_multitask (``<variant>-s<seed>.csv``)."""
    return {path.stem: read_curve(path) for path in sorted(directory.glob("*.csv"))}


def read_curve(path: Path) -> list[dict[str, float]]:
    """One per-epoch CSV as rows of floats (empty cells left out)."""
    with path.open() as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def mean_curves(curves: Mapping[str, list[dict[str, float]]]) -> dict[str, list[dict[str, float]]]:
    """Each variant's curve averaged over its seeds (runs ``<variant>-s<seed>``), per epoch."""
    grouped: dict[str, list[list[dict[str, float]]]] = {}
    for run, rows in curves.items():
        if rows:
            grouped.setdefault(re.sub(r"-s\d+$", "", run), []).append(rows)
    out = {}
    for variant, runs in grouped.items():
        epochs = min(len(r) for r in runs)
        out[variant] = [
            {k: sum(r[e][k] for r in runs) / len(runs) for k in runs[0][e] if all(k in r[e] for r in runs)}
            for e in range(epochs)
        ]
    return out


CURVE_COLUMNS = ("epoch", "variant", "train_loss", "val_gender_acc", "val_age_mae", "val_age_cs5", "val_landmark_nme")


def write_dvc_curves(curves: Mapping[str, list[dict[str, float]]], path: Path) -> None:
    """Seed-averaged curves in one long CSV (a row per variant and epoch, empty where a task is absent).

    The top-level plots in dvc.yaml draw one chart per metric from it, a line per variant, with
    the ``by_variant`` template in ``.dvc/plots``.
    """
    rows = [
        {c: {**row, "variant": name}.get(c, "") for c in CURVE_COLUMNS} for name, rs in curves.items() for row in rs
    ]
    write_rows_csv(rows, path)


def write_data_efficiency(ev: Mapping[str, Any], path: Path) -> None:
    """Data-efficiency points in one long CSV for ``dvc plots`` (x fraction, a line per family)."""
    rows = []
    for family, metrics in ev["data_efficiency"].items():
        for metric, points in metrics.items():
            for p in points:
                rows.append({"variant": family, "metric": metric, "fraction": p["fraction"], metric: p["mean"]})
    columns = ("fraction", "variant", "metric", "gender_acc", "age_mae", "landmark_nme")
    write_rows_csv([{c: r.get(c, "") for c in columns} for r in rows], path, columns)


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


def _breakdown_lines(name: str, st: Mapping[str, Any], d: int) -> list[str]:
    b = st.get("breakdown", {})
    lines = []
    if "age_mae_by_band" in b:
        bands = b["age_mae_by_band"]
        lines += [
            f"Age MAE by true age band (years; a-b means [a, b)), `{name}` (mean over seeds):",
            "",
            _table(
                ["Band", *(v["band"] for v in bands)],
                [
                    ["MAE (years)", *(_fmt(v["mae"], d) for v in bands)],
                    ["test images", *(str(v["images"]) for v in bands)],
                ],
            ),
            "",
        ]
    for label in ("gender", "race"):
        rows = b.get(f"by_{label}")
        if rows:
            lines += [
                f"By {label}, `{name}`:",
                "",
                _table(
                    [label.capitalize(), "images", "gender acc. %", "age MAE"],
                    [
                        [k, str(v["images"]), _fmt(v.get("gender_acc"), d, True), _fmt(v.get("age_mae"), d)]
                        for k, v in rows.items()
                    ],
                ),
                "",
            ]
    return lines


def _has(ev: Mapping[str, Any], metric: str) -> list[str]:
    return [n for n, st in ev["variants"].items() if st["status"] == "ok" and metric in st]


def build_report(
    evaluation: Mapping[str, Any],
    pretrain: Mapping[str, Any],
    curves: Mapping[str, list[dict[str, float]]],
    cfg: ReportConfig,
    out_md: Path,
    figures_dir: Path,
    data: Mapping[str, Any],
    attention_dir: Path | None = None,
    pretrain_curve: Sequence[Mapping[str, float]] = (),
    probe: Mapping[str, Any] | None = None,
) -> None:
    """Write the Markdown report and its figures.

    ``data`` describes the two data roles (``pretrain``/``finetune``: ``dataset``, ``source``),
    with the split stage's metrics (``split``) and the fine-tuning role's align metrics (``align``):
    the report names its protocol from them, never assumes it.
    """
    d, ev = cfg.decimals, evaluation
    mean = mean_curves(curves)
    base, n, proto = ev["baseline"]["test"], ev["images"], ev["protocol"]
    lines = [f"# {cfg.title}", "", *summary_section(ev, d), "## Protocol", ""]
    lines += [protocol_paragraph(data, n, proto, ev["comparisons"])]
    lines += protocol_notes(data)
    lines += [
        "",
        f"**Baselines that ignore the image** (same test images): "
        f"{_baselines(base, d, [m for m in ('gender_acc', 'age_mae', 'landmark_nme', 'attr_acc') if _has(ev, m)])}.",
        "",
        f"**Identity pretraining** (`pretrain_identity`, margin-softmax head): {pretrain.get('verify_folds', 10)}-fold "
        f"verification accuracy on held-out identities {_fmt(pretrain.get('verify_acc'), d, True)} % ± "
        f"{_fmt(pretrain.get('verify_acc_std'), d, True)} ({pretrain.get('identities', '?')} training identities"
        f"{_images(pretrain)}, "
        f"{pretrain.get('verify_pairs', '?')} pairs; the first paper pretrained on CASIA-WebFace's "
        f"{PAPER_PRETRAIN_SCALE}{_casia_share(pretrain)}).{_pair_list_text(pretrain, d)}"
        f"{_pretrain_trend(pretrain_curve, d)}",
        "",
    ]
    figure = plot_pretraining(pretrain_curve, figures_dir / "pretrain_identity.png")
    if figure is not None:
        lines += [_link(figure, out_md), ""]
    lines += [
        "## Table 1: pretraining (gender + age + landmarks)",
        "",
        table1(ev, d, _paper_header(data)),
        "",
        "Significance:",
        "",
        *significance(ev, d, TABLE1_QUESTIONS),
        "",
        "## Table 2: task sets (FaceResNet18, identity pretraining)",
        "",
        table2(ev, d, _paper_header(data)),
        "",
        "Significance (each multi-task variant against each variant with a subset of its tasks, on the "
        "smaller set's tasks):",
        "",
        *significance(ev, d, ("multi-task",)),
        "",
    ]
    lines += _efficiency_section(ev, figures_dir, out_md, d)
    others = ("dldl", "group", "gender-conditioned", "uncertainty", "ensemble")
    if any(c["question"].startswith(others) for c in ev["comparisons"]):
        lines += ["## Other comparisons", "", *significance(ev, d, others), ""]
    lines += _paper2_section(ev, figures_dir, out_md, d, attention_dir)
    lines += _attribute_section(ev, d)
    if probe:
        lines += probe_section(probe, d)
    main = next(
        (
            v
            for v in (_variant("face_resnet18", "identity", MAIN_TASKS), *_has(ev, "age_mae"))
            if ev["variants"].get(v, {}).get("status") == "ok"
        ),
        None,
    )
    if main:
        lines += ["## Breakdowns", "", *_breakdown_lines(main, ev["variants"][main], d)]
    metrics = [m for m in ("gender_acc", "age_mae", "age_group_acc", "landmark_nme", "attr_acc") if _has(ev, m)]
    lines += [
        "## All variants (test)",
        "",
        _table(
            ["Variant", *(METRIC_LABEL[m] for m in metrics)],
            [
                [f"`{v}`", *_cells(ev, v, metrics, d, best_means(ev, list(ev["variants"]), metrics))]
                for v in ev["variants"]
            ],
        ),
        "",
        "## Learning curves (validation, mean over seeds)",
        "",
    ]
    full = {k: v for k, v in mean.items() if "-frac" not in k}
    lines += [_link(p, out_md) for p in plot_curves(full, figures_dir)]
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _probe_cell(task: Mapping[str, Any], d: int) -> str:
    full = task.get("full")
    if full is None:
        return "n/a"
    percent = task["metric"] == "acc"
    lo, hi = full["ci"]
    return f"{_fmt(full['test'], d, percent)} [{_fmt(lo, d, percent)}, {_fmt(hi, d, percent)}]"


def _units_cell(task: Mapping[str, Any]) -> str:
    sparse = task.get("sparse")
    if not sparse:
        return ""
    acc, gain = sparse["of_accuracy"], sparse["of_gain"]
    return f"{'—' if acc is None else acc['units']} / {'—' if gain is None else gain['units']}"


def probe_section(probe: Mapping[str, Any], d: int) -> list[str]:
    """What each frozen trunk already knows (the probe stage): the full linear probe's test score
    with its CI, and the units an L1-sparse probe needs, per task and trunk."""
    probed = {n: t for n, t in probe["trunks"].items() if t["status"] == "probed"}
    lines = [
        "## What a frozen trunk already knows (linear probes)",
        "",
        f"Each trunk the variants start from, frozen: its features of the {probe['images']['train']} training crops "
        "standardised, a logistic (gender, attributes) or ridge (age) probe with its L2 strength chosen on the "
        f"{probe['images']['val']} validation crops, scored on the {probe['images']['test']} test crops (95 % "
        f"cluster-bootstrap CI, clusters: {probe['cluster_unit']}). `none` is the random initialisation the "
        "trunks from scratch start from: the floor an embedding must clear.",
        "",
    ]
    for name, t in probe["trunks"].items():
        if t["status"] != "probed":
            lines.append(f"- `{name}`: **not run**: {_short_reason(t.get('reason', ''))}")
    if len(probed) < len(probe["trunks"]):
        lines.append("")
    if not probed:
        return lines
    named = sorted({k for t in probed.values() for k in t["tasks"]})
    tasks = [k for k in ("gender", "age") if k in named] + [k for k in named if k not in ("gender", "age")]
    base = next(iter(probed.values()))["tasks"]
    rows = []
    for task in tasks:
        first = base.get(task, {})
        unit = "%" if first.get("metric") == "acc" else "MAE"
        majority = first.get("majority", {}).get("test")
        rows.append(
            [
                f"{task} ({unit})",
                _fmt(majority, d, unit == "%"),
                *(_probe_cell(t["tasks"][task], d) if task in t["tasks"] else "" for t in probed.values()),
            ]
        )
    lines += [
        _table(["Task (test)", "Majority / mean", *(f"`{n}`" for n in probed)], rows),
        "",
        f"**Sparse probes** (L1 logistic, along a path of strengths): the fewest units of the embedding whose probe "
        f"reaches {probe['share'] * 100:.0f} % of the full probe's validation accuracy / {probe['share'] * 100:.0f} % "
        "of its gain over the training majority (— : no point of the path does; 0: the majority already does). "
        "The third paper found attributes live in a few units.",
        "",
    ]
    binary = [k for k in tasks if base.get(k, {}).get("kind") == "binary"]
    features = ", ".join(f"`{n}` {t['features']}" for n, t in probed.items())
    lines += [
        _table(
            ["Task", *(f"`{n}`" for n in probed)],
            [[k, *(_units_cell(t["tasks"].get(k, {})) for t in probed.values())] for k in binary],
        ),
        "",
        f"Units per trunk: {features}.",
        "",
    ]
    return lines


def _efficiency_section(ev: Mapping[str, Any], figures_dir: Path, out_md: Path, d: int) -> list[str]:
    fig = plot_data_efficiency(ev, figures_dir / "data_efficiency.png")
    if fig is None:
        return ["## Data efficiency", "", "No variant is listed at more than one training fraction (`frac<P>`).", ""]
    fractions = sorted({p["fraction"] for ms in ev["data_efficiency"].values() for ps in ms.values() for p in ps})
    rows = []
    for family, metrics in ev["data_efficiency"].items():
        for metric, points in metrics.items():
            if metric in MAIN_METRICS:
                pct, dd = metric in PERCENT, _dec(metric, d)
                at = {p["fraction"]: f"{_fmt(p['mean'], dd, pct)} ± {_fmt(p['std'], dd, pct)}" for p in points}
                rows.append([f"`{family}`", METRIC_LABEL[metric], *(at.get(f, "") for f in fractions)])
    budget = ev["protocol"].get("fraction_budget")
    how = {
        "steps": "Every fraction trained for the optimizer steps of the whole training pool (cycling through its "
        "images; `finetune_multitask.fraction_budget: steps`), so the curve varies the data, not the optimisation.",
        "epochs": "Every fraction trained for the same epochs over its images (`finetune_multitask.fraction_budget: "
        "epochs`), so P % of the images also had P % of the optimizer steps: the curve mixes less data with "
        "less training.",
    }.get(budget, "How many optimizer steps each fraction took is not recorded in this evaluation.")
    return [
        "## Data efficiency (metric vs share of labelled training images)",
        "",
        how,
        "",
        _link(fig, out_md),
        "",
        _table(["Variant", "Metric", *(f"{_percent_label(f)} of the images" for f in fractions)], rows),
        "",
        "Significance at each training fraction (paired, same test images):",
        "",
        *significance(ev, d, ("data efficiency",)),
        "",
    ]


def _paper2_section(
    ev: Mapping[str, Any], figures_dir: Path, out_md: Path, d: int, attention_dir: Path | None
) -> list[str]:
    names = _has(ev, "age_group_acc")
    ensembles = [n for n in names if "members" in ev["variants"][n]]
    show = [n for n in names if "-group" in n and n not in ensembles] + ensembles
    if not show:
        return []
    edges = ev["protocol"]["age_group_edges"]
    lines = [
        "## Second paper: age groups, gender and the ensemble",
        "",
        f"Age groups: <{edges[0]:g}, "
        + ", ".join(f"{a:g}–{b:g}" for a, b in itertools.pairwise(edges))
        + f", {edges[-1]:g}+ years; AABD = mean |predicted − true group index|. The paper's numbers are "
        "UTKFace with its own (unconfirmed) buckets and a random split: not comparable with ours.",
        "",
        _table(
            ["Variant", "Age-group acc. %", "AABD", "Gender acc. %"],
            [[f"`{v}`", *_cells(ev, v, ("age_group_acc", "age_aabd", "gender_acc"), d)] for v in show],
        ),
        "",
        "Paper (UTKFace): " + "; ".join(f"{k} {a} % / {g} %" for k, (a, g) in PAPER2.items()) + " (group / gender).",
        "",
    ]
    target = (ensembles or show)[0]
    conf = ev["variants"][target]["breakdown"].get("age_group_confusion")
    if conf:
        fig = plot_confusion(
            conf["bands"], conf["counts"], f"age groups, {target} (all seeds)", figures_dir / "confusion.png"
        )
        lines += [_link(fig, out_md), ""]
    if attention_dir is not None and attention_dir.is_dir():
        lines += [_link(p, out_md) for p in sorted(attention_dir.glob("attention-*.png"))] + [""]
    return lines


def val_mean(ev: Mapping[str, Any], name: str, metric: str) -> float:
    """A variant's validation metric, averaged over its seeds (how a "best variant" is chosen)."""
    values = [
        r["val"][metric]
        for run, r in ev["runs"].items()
        if run.rsplit("-s", 1)[0] == name and metric in r.get("val", {})
    ]
    return float(np.mean(values)) if values else float("-inf")


def _baselines(base: Mapping[str, Any], d: int, metrics: Sequence[str] | None = None) -> str:
    """The image-blind baselines of the metrics the variants report (all the data set has labels
    for when ``metrics`` is None): no attribute baseline in a report without an attribute task."""

    def shown(m: str) -> bool:
        return base.get(m) is not None and (metrics is None or m in metrics)

    parts = []
    if shown("gender_acc"):
        parts.append(f"majority gender {_fmt(base['gender_acc'], d, True)} %")
    if shown("age_mae"):
        parts.append(f"training-mean age MAE {_fmt(base['age_mae'], d)} years")
    if shown("landmark_nme"):
        parts.append(f"template landmarks NME {_fmt(base['landmark_nme'], 4)}")
    if shown("attr_acc"):
        parts.append(f"per-attribute training majority {_fmt(base['attr_acc'], d, True)} % mean attribute accuracy")
    return ", ".join(parts) or "none (no labels)"


def _casia_share(pretrain: Mapping[str, Any]) -> str:
    """This run's identity set as a share of CASIA-WebFace's people and images."""
    people, images = pretrain.get("identities"), pretrain.get("images")
    if not isinstance(people, int) or not isinstance(images, int):
        return ""
    people_share, image_share = people / CASIA_PEOPLE, images / CASIA_IMAGES
    return f": this run's set is {people_share:.1%} of its people and {image_share:.1%} of its images"


def _images(pretrain: Mapping[str, Any]) -> str:
    return f" and {pretrain['images']:,} images" if "images" in pretrain else ""


def _pretrain_trend(rows: Sequence[Mapping[str, float]], d: int) -> str:
    """Where verification stood at the last epochs: still rising or flat (the curve is the figure)."""
    pts = [r for r in rows if "verify_acc" in r]
    if len(pts) < 2:
        return ""
    last, best = pts[-1], max(pts, key=lambda r: r["verify_acc"])
    train = f", training identity accuracy {_fmt(last['train_id_acc'], d, True)} %" if "train_id_acc" in last else ""
    return (
        f" After {int(last['epoch'])} epochs{train}; verification peaked at "
        f"{_fmt(best['verify_acc'], d, True)} % in epoch {int(best['epoch'])} (figure below)."
    )


def _pair_list_text(pretrain: Mapping[str, Any], d: int) -> str:
    listed = pretrain.get("pair_list")
    if not listed:
        return ""
    return (
        f" On the external list `{listed['file']}` ({listed['list_pairs']} pairs, {listed['list_pairs_missing']} "
        f"left out: an image not in the aligned store; threshold chosen on the other folds): "
        f"{_fmt(listed['list_acc'], d, True)} % ± {_fmt(listed['list_acc_std'], d, True)}; none of its people was "
        "trained on."
    )


def _paper_header(data: Mapping[str, Any]) -> Sequence[str]:
    return PAPER_HEADER if data["finetune"]["source"] == "agedb" else NOT_COMPARABLE_HEADER


# Published on AgeDB's subject-exclusive 5-split protocol (Paplhám & Franc, CVPR 2024) [quoted].
AGEDB_PROTOCOL_MAE = {"FaRL + linear head": 5.64, "ResNet-50, cross-entropy (ImageNet)": 5.81}


def on_agedb_protocol(data: Mapping[str, Any]) -> bool:
    """Whether this run used AgeDB's published subject-exclusive folds, the only protocol on which
    the report sets our age MAE beside published numbers."""
    split = data.get("split", {})
    return data["finetune"]["source"] == "agedb" and split.get("finetune_protocol") == "folds"


def protocol_paragraph(
    data: Mapping[str, Any],
    n: Mapping[str, int],
    proto: Mapping[str, Any],
    ev_comparisons: Sequence[Mapping[str, Any]] = (),
) -> str:
    """What the numbers were measured on: both data roles, what the split groups by, the statistics."""
    pre, fin, split = data["pretrain"], data["finetune"], data.get("split", {})
    unit = split.get("finetune_unit", "identity")
    grouping = "identity-disjoint" if unit == "identity" else f"grouped by {unit}"
    how = {
        "identity": "pools drawn over the groups",
        "official": "the data set's official partition",
        "file": "a published split file",
        "folds": f"the published folds of `{split.get('finetune_protocol_file', '')}`, split "
        f"{split.get('finetune_protocol_index')}",
    }[split.get("finetune_protocol", "identity")]
    seeds = proto["seeds"]
    people = split.get("pretrain", {}).get("pretrain", {}).get("identities", "?")
    return (
        f"**Data and protocol.** Identity pretraining on `{pre['dataset']}` (source `{pre['source']}`, {people} "
        f"people); fine-tuning and test on `{fin['dataset']}` (source `{fin['source']}`): split {grouping}, "
        f"{how}; no person is in both roles{_mapping(split)}. {n['test']} test and {n['val']} validation images. "
        "Every cell is "
        f"**mean ± std over {len(seeds)} seeds** ({', '.join(map(str, seeds))}; sample std) "
        f"**[{proto['confidence']:.0%} CI]**, {_interval_text(proto)}. Seeds vary initialisation, batch order and "
        "augmentation; split and identity pretraining are fixed. Metrics: gender accuracy, age MAE (years), landmark "
        "NME (mean point error / inter-ocular distance of the five aligned points). Comparisons are paired "
        f"bootstraps on the same test images, resampling the same {_unit(proto)} for both models"
        f"{_seed_level(ev_comparisons)}; *significant* means the CI of the difference excludes 0, which is the same "
        f"as p < {1 - proto['confidence']:.2g} (p inverts that interval), and the Holm correction is made within "
        "each question (Table 1, Table 2, data efficiency, second paper, third paper), named beside each verdict."
    )


def _mapping(split: Mapping[str, Any]) -> str:
    """Which people the roles were known to share (identities are named per data set)."""
    text = split.get("identity_mapping")
    return f" (people shared by the two data sets: {text})" if text else ""


def _seed_level(comparisons: Sequence[Mapping[str, Any]]) -> str:
    """How the comparisons treated seeds: resampled too (two-level) where variants had several."""
    kinds = {c.get("resampled") for c in comparisons if c.get("status") == "ok"}
    if kinds == {"seeds and clusters"}:
        return " and, independently for each model, its training seeds (two-level: a claim about the method)"
    if "seeds and clusters" in kinds:
        return " and, where a variant has several, its training seeds (two-level)"
    return " (one seed per variant: seeds are not resampled)"


def _unit(proto: Mapping[str, Any]) -> str:
    unit = proto.get("cluster_unit", "image")
    plural = {"person": "people", "person or byte-identical image group": "people or byte-identical image groups"}
    return f"{proto['clusters']} {plural.get(unit, unit + 's')}" if "clusters" in proto else "images"


def _interval_text(proto: Mapping[str, Any]) -> str:
    """Which bootstrap the CIs are, and over what unit: images of one person are not independent."""
    unit = _unit(proto)
    if proto.get("interval") == "seeds_and_clusters":
        how = f"a two-level bootstrap that draws the seeds and the test set's {unit} (all images of each)"
    else:
        how = f"a bootstrap over the test set's {unit} (all images of each), of the seed-averaged metric"
    clusters = "" if proto.get("cluster_unit", "image") == "image" else " (a cluster's images are not independent)"
    return f"{how}{clusters}; expanded percentile interval, {proto['bootstrap']} resamples"


def protocol_notes(data: Mapping[str, Any]) -> list[str]:
    """Warnings a reader needs: synthetic faces, landmark targets from MTCNN, incomparable paper columns."""
    fin = data["finetune"]
    notes = []
    if fin["source"] == "synthetic":
        notes.append(
            "These faces are the embedded **synthetic** sets (two sets of different people and styles: a studio-like "
            "identity set and a wilder attribute set): the numbers show that every stage learns and how the "
            "statistics read, not how well a method works on real faces."
        )
    mtcnn = data.get("align", {}).get("landmarks_from", {}).get("mtcnn", 0)
    if mtcnn:
        notes.append(
            f"Landmark targets of {mtcnn} fine-tuning crops come from MTCNN: there, **NME measures agreement with "
            "MTCNN**, not landmark accuracy."
        )
    if fin["source"] != "agedb":
        notes.append(
            f"The paper columns are the first paper's AgeDB numbers (split not stated, one run): **not comparable** "
            f"with ours on `{fin['dataset']}`; they are shown for orientation only."
        )
    elif on_agedb_protocol(data):
        published = "; ".join(f"{k} {v:.2f}" for k, v in AGEDB_PROTOCOL_MAE.items())
        notes.append(
            "AgeDB on its published subject-exclusive protocol: this run is one of its 5 splits; the protocol's "
            f"result is the mean over the 5 splits' test folds (`faceattr protocol-summary`). Published age MAE on "
            f"it, mean over the 5 splits: {published} (Paplhám & Franc, CVPR 2024, quoted)."
        )
    else:
        notes.append(
            "AgeDB on a split other than its published subject-exclusive protocol: no published number is "
            "comparable (the first paper does not state its split)."
        )
    return [line for note in notes for line in ("", f"> {note}")]


def _attribute_section(ev: Mapping[str, Any], d: int) -> list[str]:
    names = _has(ev, "attr_acc")
    if not names:
        return []
    best = max(names, key=lambda n: val_mean(ev, n, "attr_acc"))  # chosen on validation, never on test
    per = ev["variants"][best]["breakdown"].get("attributes", {})
    lines = [
        "## Attributes (third paper's table)",
        "",
        f"Mean attribute accuracy at threshold 0.5 (not tuned on val) of `{best}`, the variant best on "
        "**validation** mean attribute accuracy, on test: "
        f"{cell(ev['variants'][best]['attr_acc'], 'attr_acc', d)}; LNet+ANet reported {PAPER3_CELEBA_MEAN_ACC:g} % "
        "on the full CelebA test partition (ours is this run's split).",
        "",
        _table(
            ["Attribute", "accuracy %", "majority baseline %", "balanced accuracy %", "positive share %"],
            [
                [
                    a,
                    _fmt(v["acc"], d, True),
                    _fmt(v.get("majority_acc"), d, True),
                    _fmt(v["balanced_acc"], d, True),
                    _fmt(v["positive_rate"], d, True),
                ]
                for a, v in per.items()
            ],
        ),
        "",
    ]
    majority = [v["majority_acc"] for v in per.values() if "majority_acc" in v]
    if majority:
        beaten = sum(v["acc"] > v["majority_acc"] for v in per.values() if "majority_acc" in v)
        lines[4:4] = [
            f"Predicting each attribute's majority value in the training split, for every image, scores "
            f"{_fmt(float(np.mean(majority)), d, True)} % mean accuracy on the same test images; "
            f"`{best}` beats that baseline on {beaten} of {len(majority)} attributes (balanced accuracy, "
            "50 % for a constant answer, shows what the rare attributes' accuracies hide).",
            "",
        ]
    return lines


OFFLINE_PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>faceattr plots</title>
    <script>%s</script>
    <style>table { border-spacing: 15px; }</style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def write_offline_template(path: Path) -> None:
    """An HTML template for ``dvc plots show`` with Vega, Vega-Lite and Vega-Embed inlined.

    DVC's default page loads them from a CDN and renders blank offline; ``.dvc/config`` points
    ``plots.html_template`` here. The ``{scripts}`` placeholder is left out on purpose, so DVC's
    CDN script tags are never inserted.
    """
    import vl_convert

    bundle = vl_convert.javascript_bundle().replace("</script", "<\\/script")
    with atomic_path(path) as tmp:
        tmp.write_text(OFFLINE_PAGE.replace("%s", bundle, 1), encoding="utf-8")
