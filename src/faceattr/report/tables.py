"""The report's tables: cells as mean ± std [CI] with the best mean in bold, the papers' Tables 1
and 2, the paired comparisons as a table and the one-line answer to each question."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from faceattr.metrics import LOWER_IS_BETTER, PERCENT

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


def _has(ev: Mapping[str, Any], metric: str) -> list[str]:
    return [n for n, st in ev["variants"].items() if st["status"] == "ok" and metric in st]
