"""The report: the first paper's two tables filled from this run, beside the paper's own numbers.

Reads only small metrics/plots files, so it reruns in seconds when a ``report`` param changes.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from faceattr.config import ReportConfig
from faceattr.io import atomic_path

# First paper (AgeDB, split not stated; gender accuracy %, age MAE years).
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
PRETRAINING_LABEL = {"identity": "identity (this run's pretrain_identity)", "none": "none", "imagenet": "ImageNet"}
ALL_TASKS = ("gender", "age", "landmarks")
METRIC_HEADER = ("Gender acc. %", "Age MAE", "CS@5 %", "Landmark NME")  # the columns of _row
PAPER_HEADER = ("Paper gender %", "Paper age MAE")


def _fmt(value: float | None, decimals: int, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value * 100:.{decimals}f}" if percent else f"{value:.{decimals}f}"


def _variant(backbone: str, pretraining: str, tasks: Sequence[str]) -> str:
    return f"{backbone}-{pretraining}-{'+'.join(tasks)}"


def _row(ev: Mapping[str, Any], name: str, d: int) -> list[str]:
    test = ev["variants"].get(name, {}).get("test")
    if test is None:
        return ["not run"] * 4
    return [
        _fmt(test.get("gender_acc"), d, True),
        _fmt(test.get("age_mae"), d),
        _fmt(test.get("age_cs5"), d, True),
        _fmt(test.get("landmark_nme"), 4),
    ]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def table1(ev: Mapping[str, Any], d: int) -> str:
    """Pretraining comparison, all gender+age+landmarks."""
    rows = []
    for (backbone, pre), (p_g, p_a) in PAPER_TABLE1.items():
        name = _variant(backbone, pre, ALL_TASKS)
        rows.append([backbone, PRETRAINING_LABEL[pre], *_row(ev, name, d), f"{p_g:.2f}", f"{p_a:.3f}"])
    return _table(["Architecture", "Pretraining", *METRIC_HEADER, *PAPER_HEADER], rows)


def table2(ev: Mapping[str, Any], d: int) -> str:
    """Task-set comparison on FaceResNet18 + identity pretraining (plus this run's other task sets)."""
    task_sets = list(PAPER_TABLE2)
    for name in ev["variants"]:
        tasks = tuple(name.split("-")[2].split("+"))
        if name.startswith("face_resnet18-identity-") and tasks not in task_sets:
            task_sets.append(tasks)
    rows = []
    for tasks in task_sets:
        p_g, p_a = PAPER_TABLE2.get(tasks, (None, None))
        marks = ["✓" if t in tasks else "" for t in ALL_TASKS]
        ours = _row(ev, _variant("face_resnet18", "identity", tasks), d)
        rows.append([*marks, *ours, _fmt(p_g, 2), _fmt(p_a, 3)])
    return _table(["Gender", "Age", "Landmark", *METRIC_HEADER, *PAPER_HEADER], rows)


def read_curves(directory: Path) -> dict[str, list[dict[str, float]]]:
    """Per-variant learning curves written by finetune_multitask."""
    out = {}
    for path in sorted(directory.glob("*.csv")):
        with path.open() as fh:
            out[path.stem] = [
                {k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)
            ]
    return out


CURVE_COLUMNS = ("epoch", "variant", "train_loss", "val_gender_acc", "val_age_mae", "val_age_cs5", "val_landmark_nme")


def write_dvc_curves(curves: Mapping[str, list[dict[str, float]]], path: Path) -> None:
    """All variants' curves in one long CSV (a row per variant and epoch, empty where a task is absent).

    The top-level plots in dvc.yaml draw one chart per metric from it, a line per variant, with
    the ``by_variant`` template in ``.dvc/plots``.
    """
    from faceattr.io import write_rows_csv

    rows = [
        {c: {**row, "variant": name}.get(c, "") for c in CURVE_COLUMNS} for name, rs in curves.items() for row in rs
    ]
    write_rows_csv(rows, path)


def plot_curves(curves: Mapping[str, list[dict[str, float]]], out_dir: Path) -> list[Path]:
    """One PNG per validation metric, a line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for metric, label in (
        ("val_gender_acc", "validation gender accuracy"),
        ("val_age_mae", "validation age MAE (years)"),
        ("val_landmark_nme", "validation landmark NME"),
        ("train_loss", "training loss"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for name, rows in curves.items():
            pts = [(r["epoch"], r[metric]) for r in rows if metric in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=name)
        if not ax.lines:
            plt.close(fig)
            continue
        ax.set_xlabel("epoch"), ax.set_ylabel(label), ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
        fig.tight_layout()
        path = out_dir / f"{metric}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def build_report(
    evaluation: Mapping[str, Any],
    pretrain: Mapping[str, Any],
    curves: Mapping[str, list[dict[str, float]]],
    cfg: ReportConfig,
    out_md: Path,
    figures_dir: Path,
    dataset: str,
) -> None:
    """Write the Markdown report and its figures."""
    d = cfg.decimals
    figures = plot_curves(curves, figures_dir)
    base = evaluation["baseline"]["test"]
    n = evaluation["images"]
    lines = [
        f"# {cfg.title}",
        "",
        f"**Data and protocol.** Data set `{dataset}`; identity-disjoint split (`split` stage); "
        f"{n['test']} test and {n['val']} validation images. Metrics: gender accuracy, age MAE (years), "
        "CS@5 (share of ages within 5 years), landmark NME (mean point error / inter-ocular distance of "
        "the five aligned points). All numbers are on the **test** split, one seed.",
    ]
    if dataset == "synthetic":
        lines += [
            "",
            "> These faces are the embedded **synthetic** set: the numbers show that every stage "
            "learns, not how well a method works on real faces. The paper's columns are AgeDB numbers "
            "(split not stated) and are not comparable with ours.",
        ]
    lines += [
        "",
        "**Baselines that ignore the image** (same test images): majority gender "
        f"{_fmt(base.get('gender_acc'), d, True)} %, training-mean age MAE {_fmt(base.get('age_mae'), d)} "
        f"years (CS@5 {_fmt(base.get('age_cs5'), d, True)} %), template landmarks NME "
        f"{_fmt(base.get('landmark_nme'), 4)}.",
        "",
        f"**Identity pretraining** (`pretrain_identity`): 10-fold verification accuracy on held-out "
        f"identities {_fmt(pretrain.get('verify_acc'), d, True)} % ± {_fmt(pretrain.get('verify_acc_std'), d, True)} "
        f"({pretrain.get('identities', '?')} training identities, {pretrain.get('verify_pairs', '?')} pairs).",
        "",
        "## Table 1: pretraining (gender + age + landmarks)",
        "",
        table1(evaluation, d),
        "",
        "Rows marked *not run* are not in `finetune_multitask.variants` (ImageNet needs torchvision's "
        "weights in the local cache; see the README).",
        "",
        "## Table 2: task sets (FaceResNet18, identity pretraining)",
        "",
        table2(evaluation, d),
        "",
        "## All variants (test)",
        "",
        _table(
            ["Variant", *METRIC_HEADER],
            [[name, *_row(evaluation, name, d)] for name in evaluation["variants"]],
        ),
        "",
        "## Learning curves",
        "",
    ]
    lines += [f"![{p.stem}]({p.relative_to(out_md.parent).as_posix()})" for p in figures]
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


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
