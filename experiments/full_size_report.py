"""Collect experiments/full_size.sh's candidates and final runs into one table.

    python experiments/full_size_report.py --out results/full_size

reads ``<out>/select/<candidate>/`` and ``<out>/final/<candidate>/`` (each run's metrics, params
and RUN.txt, as the script copied them) and writes ``<out>/README.md`` and ``<out>/select.json``.
The selection rule is the script's: the lowest ``val_age_mae / 5.0 + (1 − val_gender_acc) / 0.06``
among the candidates that trained in at most 60 minutes, on seed 0's validation metrics; the test
columns are shown beside it and never used by it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

GOAL_MAE, GOAL_GENDER = 5.0, 0.94
BUDGET_S = 60 * 60


def score(val: dict[str, float]) -> float:
    """Distance to the goal in units of the goal: age MAE over 5.0 years plus gender error over 6 %."""
    return val["val_age_mae"] / GOAL_MAE + (1 - val["val_gender_acc"]) / (1 - GOAL_GENDER)


def run_info(folder: Path) -> dict[str, str]:
    lines = (folder / "RUN.txt").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def load(folder: Path) -> dict[str, Any]:
    """One candidate: its seed runs' validation metrics, the test summary per variant, the run."""
    finetune = sorted((folder / "metrics" / "finetune").glob("*.json"))
    val = [json.loads(p.read_text()) for p in finetune]
    summary = json.loads((folder / "metrics" / "summary.json").read_text())
    (variant,) = summary["variants"]  # one variant per candidate
    info = run_info(folder)
    return {
        "name": folder.name,
        "variant": variant,
        "val": {k: sum(v[k] for v in val) / len(val) for k in ("val_gender_acc", "val_age_mae")},
        "seeds": len(val),
        "test": summary["variants"][variant],
        "test_images": summary["images"],
        "recipe": recipe(folder),
        "wall_s": int(info["wall_s"]),
        "run": info,
    }


def recipe(folder: Path) -> str:
    """What a candidate trains, read from the params it ran with."""
    import yaml

    params = yaml.safe_load((folder / "params.yaml").read_text())
    ft, align = params["finetune_multitask"], params["align"]
    (variant,) = ft["variants"]
    crop = "own crop" if align["crop"] == "resize" else f"{align['template']} template"
    parts = [f"`{variant}`", f"{align['size']} px {crop}", f"{ft['optim']['epochs']} epochs"]
    if ft.get("ema"):
        parts.append(f"EMA {ft['ema']}")
    if ft.get("tta", "none") != "none":
        parts.append(f"{ft['tta']} TTA")
    return ", ".join(parts)


def notes(rows: list[dict[str, Any]]) -> list[str]:
    """What ran beside a run, or anything else its RUN.txt notes."""
    return [f"- `{r['name']}`: {r['run']['note']}" for r in rows if r["run"].get("note")]


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def select_table(rows: list[dict[str, Any]], chosen: str | None, complete: bool) -> list[str]:
    lines = [
        "| Candidate | Recipe | Wall (min) | Val gender % | Val age MAE | Score (lower wins) | Test gender % "
        "| Test age MAE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    won = " **chosen**" if complete else " **best so far**"
    for r in sorted(rows, key=lambda r: score(r["val"])):
        mark = won if r["name"] == chosen else ("" if r["wall_s"] <= BUDGET_S else " (over 60 min)")
        t = r["test"]
        lines.append(
            f"| `{r['name']}`{mark} | {r['recipe']} | {r['wall_s'] / 60:.1f} | {pct(r['val']['val_gender_acc'])} | "
            f"{r['val']['val_age_mae']:.2f} | {score(r['val']):.3f} | {pct(t['gender_acc']['mean'])} | "
            f"{t['age_mae']['mean']:.2f} |"
        )
    return lines


def final_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| Recipe | Seeds | Wall (min, all seeds) | Test gender % [95 % CI] | Test age MAE [95 % CI] | Goal |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        g, a = r["test"]["gender_acc"], r["test"]["age_mae"]
        met = g["mean"] >= GOAL_GENDER and a["mean"] <= GOAL_MAE
        lines.append(
            f"| `{r['name']}` | {r['seeds']} | {r['wall_s'] / 60:.1f} | {pct(g['mean'])} ± {pct(g['std'])} "
            f"[{pct(g['ci_low'])}, {pct(g['ci_high'])}] | {a['mean']:.2f} ± {a['std']:.2f} "
            f"[{a['ci_low']:.2f}, {a['ci_high']:.2f}] | {'met' if met else 'not met'} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("results/full_size"))
    ap.add_argument("--candidates", nargs="*", default=[], help="every candidate of the script (to list those not run)")
    args = ap.parse_args()
    done = lambda stage: [load(f) for f in sorted((args.out / stage).glob("*")) if (f / "done").is_file()]  # noqa: E731
    candidates, finals = done("select"), done("final")
    within = [r for r in candidates if r["wall_s"] <= BUDGET_S]
    chosen = min(within, key=lambda r: score(r["val"]))["name"] if within else None
    missing = [c for c in args.candidates if c not in {r["name"] for r in candidates}]
    machines = sorted({f"{r['run']['cpu']}; {r['run']['jobs']}" for r in (*candidates, *finals)})
    lines = [
        "# All of UTKFace: the best CPU recipe (issue 24)",
        "",
        "Gender + DLDL age on all of UTKFace: the default split (60/20/20, seeded, grouped by byte-identical "
        "images, all ages kept), "
        + (f"{candidates[0]['test_images']:,} test images; " if candidates else "")
        + "not the split of any published number. Made by `experiments/full_size.sh`; each run's command, "
        "commit, wall time and machine are in its folder's `RUN.txt`.",
        "",
        f"Machine: {' | '.join(machines) or 'none yet'}; no GPU.",
        "",
        "## Selection (seed 0, validation only)",
        "",
        f"Rule: the lowest `val_age_mae / {GOAL_MAE}` + `(1 − val_gender_acc) / {1 - GOAL_GENDER:.2f}` among the "
        "candidates that trained in at most 60 minutes (wall time of the whole `dvc exp run`, alignment included "
        "where it ran; a candidate on an earlier one's crops reuses them). Test metrics are shown, not used.",
        "",
        *select_table(candidates, chosen, complete=not missing),
    ]
    if missing:
        lines += ["", "Not run yet: " + ", ".join(f"`{c}`" for c in missing) + " (the choice can still change)."]
    if notes(candidates):
        lines += ["", "Beside the runs:", "", *notes(candidates)]
    if finals:
        lines += ["", "## Final runs (3 seeds; 95 % CI: two-level bootstrap over seeds and test clusters)",
                  "", *final_table(finals)]  # fmt: skip
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    rows = {"chosen": chosen, "complete": not missing, "not_run": missing, "candidates": candidates, "final": finals}
    (args.out / "select.json").write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out / 'README.md'}" + (f" (chosen: {chosen})" if chosen else ""))


if __name__ == "__main__":
    main()
