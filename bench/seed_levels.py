"""The default's comparisons with seeds resampled (two-level, what evaluate does) and without
(each variant's seed-averaged per-image scores, one level, what evaluate did before): what the
seed level changes in the verdicts, on the same trained models and test images.

    python bench/seed_levels.py                  # models/finetune, the finetune store and split

Prints one Markdown row per comparison (difference [CI] for both, **Holm** where significant after
Holm within the comparison's question, * where significant before it only) and a count of each.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from faceattr.config import EvaluateConfig, FinetuneConfig, load_section
from faceattr.evaluation.comparisons import comparison_pairs, family
from faceattr.evaluation.runs import load_runs
from faceattr.evaluation.scoring import METRICS
from faceattr.statistics import holm, paired_bootstrap
from faceattr.train.data import load_split
from faceattr.train.loop import bf16

SCALE = {"gender_acc": 100.0}


def cell(r: dict, k: float, d: int) -> str:
    mark = " **Holm**" if r["holm"] else " *" if r["significant"] else ""
    return f"{r['diff'] * k:+.{d}f} [{r['ci_low'] * k:+.{d}f}, {r['ci_high'] * k:+.{d}f}]{mark}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--models", default="models/finetune")
    p.add_argument("--store", default="data/aligned/finetune")
    p.add_argument("--split", default="data/splits/finetune.csv")
    args = p.parse_args()
    cfg = load_section(args.params, "evaluate", EvaluateConfig)
    ft = load_section(args.params, "finetune_multitask", FinetuneConfig)
    test = load_split(args.store, args.split, ("test",))
    device = torch.device("cpu")
    runs = load_runs(ft.variants, ft.seeds, Path(args.models), test, cfg, ft.age_head.group_edges, device,
                     bf16(device, ft.accel))  # fmt: skip
    rows = []
    for a, b, question, metrics in comparison_pairs(ft.variants, cfg.ensemble_members):
        if a in runs.not_run or b in runs.not_run:
            continue
        for metric in metrics:
            score = METRICS[metric][0]
            xa = np.stack([runs.scores[a][s][score] for s in sorted(runs.scores[a])])
            xb = np.stack([runs.scores[b][s][score] for s in sorted(runs.scores[b])])
            one = paired_bootstrap(xa.mean(0), xb.mean(0), cfg.bootstrap, cfg.confidence, groups=test.groups)
            two = paired_bootstrap(xa, xb, cfg.bootstrap, cfg.confidence, groups=test.groups)
            rows.append({"q": question, "a": a, "b": b, "metric": metric, "one": one, "two": two,
                         "family": family(question, metric)})  # fmt: skip
    for level in ("one", "two"):
        for name in dict.fromkeys(r["family"] for r in rows):
            members = [r for r in rows if r["family"] == name]
            for r, keep in zip(members, holm([r[level]["p"] for r in members], 1 - cfg.confidence), strict=True):
                r[level]["holm"] = keep
    print("| question | a vs b | metric | seeds averaged (one level) | seeds resampled (two-level) |")
    print("|---|---|---|---|---|")
    for r in rows:
        k, d = SCALE.get(r["metric"], 1.0), 4 if r["metric"].endswith("nme") else 2
        print(
            f"| {r['q']} | `{r['a']}` vs `{r['b']}` | {r['metric']} | {cell(r['one'], k, d)} | {cell(r['two'], k, d)} |"
        )
    for level, label in (("one", "one level"), ("two", "two-level")):
        sig = sum(r[level]["significant"] for r in rows)
        kept = sum(r[level]["holm"] for r in rows)
        print(f"\n{label}: {sig} of {len(rows)} significant, {kept} after Holm within each question")


if __name__ == "__main__":
    main()
