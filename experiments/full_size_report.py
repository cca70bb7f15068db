"""Collect experiments/full_size.sh's candidates and final runs into one table.

    python experiments/full_size_report.py --out results/full_size [--target utkface|celeba]

reads ``<out>/select/<candidate>/`` and ``<out>/final/<candidate>/`` (each run's metrics, params
and RUN.txt, as the script copied them) and writes ``<out>/README.md`` and ``<out>/select.json``.
The selection rule is the script's, per target, on seed 0's validation metrics, among the
candidates that trained in at most 60 minutes: UTKFace, the lowest
``val_age_mae / 5.0 + (1 − val_gender_acc) / 0.06``; CelebA, the lowest mean attribute error on
validation (``1 − val_attr_acc``). The test columns are shown beside it and never used by it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GOAL_MAE, GOAL_GENDER = 5.0, 0.94
BUDGET_S = 60 * 60


@dataclass(frozen=True)
class Column:
    header: str
    key: str  # a metric: val_* in metrics/finetune/*.json, else summary.json's per-variant key
    unit: str  # pct | years


@dataclass(frozen=True)
class Target:
    """What one target's report selects on and shows."""

    title: str
    protocol: str  # the split, named beside every number
    score: Callable[[dict[str, float]], float]  # lower wins; reads ``val`` columns
    rule: str
    val: tuple[Column, ...]
    test: tuple[Column, ...]
    goal: Callable[[dict[str, Any]], str] | None = None  # on the final's test summary: which goals it met
    published: str = ""


def utkface_score(val: dict[str, float]) -> float:
    """Distance to the goal in units of the goal: age MAE over 5.0 years plus gender error over 6 %."""
    return val["val_age_mae"] / GOAL_MAE + (1 - val["val_gender_acc"]) / (1 - GOAL_GENDER)


TARGETS = {
    "utkface": Target(
        title="All of UTKFace: the best CPU recipe (issue 24)",
        protocol="Gender + DLDL age on all of UTKFace: the default split (60/20/20, seeded, grouped by "
        "byte-identical images, all ages kept), {test} test images; not the split of any published number.",
        score=utkface_score,
        rule=f"the lowest `val_age_mae / {GOAL_MAE}` + `(1 − val_gender_acc) / {1 - GOAL_GENDER:.2f}`",
        val=(Column("Val gender %", "val_gender_acc", "pct"), Column("Val age MAE", "val_age_mae", "years")),
        test=(Column("Test gender %", "gender_acc", "pct"), Column("Test age MAE", "age_mae", "years")),
        goal=lambda t: (
            f"age ≤ {GOAL_MAE:g}: {'met' if t['age_mae']['mean'] <= GOAL_MAE else 'not met'}; "
            f"gender ≥ {100 * GOAL_GENDER:g} %: {'met' if t['gender_acc']['mean'] >= GOAL_GENDER else 'not met'}"
        ),
    ),
    "celeba": Target(
        title="All 6,000 CelebA images: the best CPU recipe for the 40 attributes (issue 24)",
        protocol="CelebA's 40 attributes on the shared 6,000 images (200 people), CelebA's official partition "
        "(4,560 / 780 / 660 train / val / test images, people disjoint), {test} test images, all of them for "
        "fine-tuning (identity pretraining on LFW's people, not CelebA's); mean over the 40 attributes of each "
        "one's accuracy at 0.5, thresholds not tuned. Not the published protocol: CelebA's official test set "
        "is 19,962 images of 1,000 people.",
        score=lambda val: 1 - val["val_attr_acc"],
        rule="the lowest mean attribute error on validation, `1 − val_attr_acc`",
        val=(Column("Val mean attribute %", "val_attr_acc", "pct"),),
        test=(Column("Test mean attribute %", "attr_acc", "pct"),),
        published="Published on CelebA's official test set (19,962 images of the full 202,599; not the same "
        "split): 87 % LNet+ANet (the third paper), 91.29 % MCNN-AUX, 91.70 % DMM-CNN, 92.12 % APS (PROTOCOLS.md).",
    ),
}


def fmt(x: float, unit: str) -> str:
    return f"{100 * x:.2f}" if unit == "pct" else f"{x:.2f}"


def run_info(folder: Path) -> dict[str, str]:
    lines = (folder / "RUN.txt").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def load(folder: Path, target: Target) -> dict[str, Any]:
    """One run: per variant (arm) its seed runs' mean validation metrics, seeds and test summary; the
    candidate's own variant (the first its params list: a final may add the arm it is compared with)
    as ``val``/``test``/``seeds``; the RUN.txt and the paired comparisons evaluate made."""
    import yaml

    summary = json.loads((folder / "metrics" / "summary.json").read_text())
    params = yaml.safe_load((folder / "params.yaml").read_text())
    arms = {}
    for variant, test in summary["variants"].items():
        val = [json.loads(p.read_text()) for p in sorted((folder / "metrics" / "finetune").glob(f"{variant}-s*.json"))]
        mean = {c.key: sum(v[c.key] for v in val) / len(val) for c in target.val}
        arms[variant] = {"val": mean, "seeds": len(val), "test": test}
    variant = params["finetune_multitask"]["variants"][0]
    evaluation = folder / "metrics" / "evaluate.json"
    comparisons = json.loads(evaluation.read_text()).get("comparisons", []) if evaluation.is_file() else []
    info = run_info(folder)
    return {
        "name": folder.name,
        "variant": variant,
        **arms[variant],
        "arms": arms,
        "comparisons": [c for c in comparisons if c.get("status") == "ok"],
        "test_images": summary["images"],
        "recipe": recipe(params),
        "wall_s": int(info["wall_s"]),
        "run": info,
    }


def recipe(params: dict[str, Any]) -> str:
    """What a run trains, read from the params it ran with."""
    ft, align = params["finetune_multitask"], params["align"]
    crop = "own crop" if align["crop"] == "resize" else f"{align['template']} template"
    if align.get("fit", "mtcnn") != "mtcnn":
        crop += f" fitted to {align['fit']}'s own five points"
    variants = " and ".join(f"`{v}`" for v in ft["variants"])
    parts = [variants, f"{align['size']} px {crop}", f"{ft['optim']['epochs']} epochs"]
    if ft.get("ema"):
        parts.append(f"EMA {ft['ema']}")
    if ft.get("tta", "none") != "none":
        parts.append(f"{ft['tta']} TTA")
    return ", ".join(parts)


def notes(rows: list[dict[str, Any]]) -> list[str]:
    """What ran beside a run, or anything else its RUN.txt notes."""
    return [f"- `{r['name']}`: {r['run']['note']}" for r in rows if r["run"].get("note")]


def cpu_name(run: dict[str, str]) -> str:
    """A RUN.txt's CPU model, short: "AMD EPYC", "Intel Xeon"."""
    return run["cpu"].split(";")[0].replace("(R)", "").replace(" Processor", "").strip()


def select_table(rows: list[dict[str, Any]], chosen: str | None, complete: bool, target: Target) -> list[str]:
    headers = ["Candidate", "Recipe", "Wall (min)", *(c.header for c in target.val), "Score (lower wins)"]
    headers += [c.header for c in target.test]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    won = " **chosen**" if complete else " **best so far**"
    machines = len({cpu_name(r["run"]) for r in rows}) > 1  # then each wall time names its CPU
    for r in sorted(rows, key=lambda r: target.score(r["val"])):
        mark = won if r["name"] == chosen else ("" if r["wall_s"] <= BUDGET_S else " (over 60 min)")
        wall = f"{r['wall_s'] / 60:.1f}" + (f" ({cpu_name(r['run'])})" if machines else "")
        cells = [f"`{r['name']}`{mark}", r["recipe"], wall]
        cells += [fmt(r["val"][c.key], c.unit) for c in target.val] + [f"{target.score(r['val']):.3f}"]
        cells += [fmt(r["test"][c.key]["mean"], c.unit) for c in target.test]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def final_table(rows: list[dict[str, Any]], target: Target) -> list[str]:
    headers = ["Recipe", "Variant", "Seeds", "Wall (min, all runs)", *(f"{c.header} [95 % CI]" for c in target.test)]
    headers += ["Goal"] if target.goal else []
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        for variant, arm in r["arms"].items():
            cells = [f"`{r['name']}`", f"`{variant}`", str(arm["seeds"]), f"{r['wall_s'] / 60:.1f}"]
            for c in target.test:
                m = arm["test"][c.key]
                cells.append(
                    f"{fmt(m['mean'], c.unit)} ± {fmt(m['std'], c.unit)} "
                    f"[{fmt(m['ci_low'], c.unit)}, {fmt(m['ci_high'], c.unit)}]"
                )
            if target.goal:
                cells.append(target.goal(arm["test"]))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def comparison_lines(rows: list[dict[str, Any]], target: Target) -> list[str]:
    """The paired tests evaluate made between a final's arms, on the same test images."""
    units = {c.key: c.unit for c in target.test}
    lines = []
    for r in rows:
        for c in r["comparisons"]:
            unit = units.get(c["metric"], "pct")
            verdict = "significant after Holm" if c["significant_holm"] else "not significant after Holm"
            lines.append(
                f"- `{r['name']}`, {c['question']}: `{c['a']}` − `{c['b']}` on {c['metric']}: "
                f"{fmt(c['diff'], unit)} [{fmt(c['ci_low'], unit)}, {fmt(c['ci_high'], unit)}]"
                f"{' pp' if unit == 'pct' else ' years'}, p = {c['p']:.3f}, {verdict} "
                f"(family of {c['holm_family_size']}; resampling {c['resampled']}, {c['images']} test images)"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("results/full_size"))
    ap.add_argument("--target", choices=sorted(TARGETS), default="utkface", help="what the runs fine-tuned on")
    ap.add_argument("--candidates", nargs="*", default=[], help="every candidate of the script (to list those not run)")
    args = ap.parse_args()
    target = TARGETS[args.target]
    done = lambda stage: [load(f, target) for f in sorted((args.out / stage).glob("*")) if (f / "done").is_file()]  # noqa: E731
    candidates, finals = done("select"), done("final")
    within = [r for r in candidates if r["wall_s"] <= BUDGET_S]
    chosen = min(within, key=lambda r: target.score(r["val"]))["name"] if within else None
    missing = [c for c in args.candidates if c not in {r["name"] for r in candidates}]
    machines = sorted({f"{r['run']['cpu']}; {r['run']['jobs']}" for r in (*candidates, *finals)})
    lines = [
        f"# {target.title}",
        "",
        target.protocol.format(test=f"{candidates[0]['test_images']:,}" if candidates else "its")
        + " Made by `experiments/full_size.sh`; each run's command, commit, wall time and machine are in its "
        "folder's `RUN.txt`.",
        "",
        f"Machine: {' | '.join(machines) or 'none yet'}; no GPU.",
        "",
        "## Selection (seed 0, validation only)",
        "",
        f"Rule: {target.rule} among the candidates that trained in at most 60 minutes (wall time of the whole "
        "`dvc exp run`, alignment included where it ran; a candidate on an earlier one's crops reuses them). "
        "Test metrics are shown, not used.",
        "",
        *select_table(candidates, chosen, not missing, target),
    ]
    if missing:
        lines += ["", "Not run yet: " + ", ".join(f"`{c}`" for c in missing) + " (the choice can still change)."]
    if notes(candidates):
        lines += ["", "Beside the runs:", "", *notes(candidates)]
    if finals:
        lines += ["", "## Final runs (3 seeds; 95 % CI: two-level bootstrap over seeds and test clusters)",
                  "", *final_table(finals, target)]  # fmt: skip
        if notes(finals):
            lines += ["", *notes(finals)]
        if comparison_lines(finals, target):
            lines += ["", "Paired on the same test images:", "", *comparison_lines(finals, target)]
    if target.published:
        lines += ["", target.published]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    rows = {"chosen": chosen, "complete": not missing, "not_run": missing, "candidates": candidates, "final": finals}
    (args.out / "select.json").write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out / 'README.md'}" + (f" (chosen: {chosen})" if chosen else ""))


if __name__ == "__main__":
    main()
