"""Two `metrics/evaluate.json` side by side: every paired comparison and every variant's means.

    python bench/compare_evaluations.py BEFORE.json AFTER.json
    python bench/compare_evaluations.py results/default_speed/evaluate_ef3bd1f.json metrics/evaluate.json

For a change that should leave the conclusions alone (a speed-up, a refactor): prints one
Markdown table of the comparisons (difference [CI], ``Holm`` where significant after Holm's
correction, ``*`` where significant before it only), one of the variants' test means ± std over
seeds, and a line counting the comparisons significant after Holm in each file, those lost and
those gained.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SCALE = {"gender_acc": 100.0, "age_group_acc": 100.0, "attr_acc": 100.0}  # shown in %


def _digits(metric: str) -> int:
    return 4 if metric.endswith("nme") else 2


def comparison_cell(c: dict[str, Any] | None) -> str:
    if c is None or c.get("status") != "ok":
        return "not run"
    k, d = SCALE.get(c["metric"], 1.0), _digits(c["metric"])
    text = f"{c['diff'] * k:+.{d}f} [{c['ci_low'] * k:+.{d}f}, {c['ci_high'] * k:+.{d}f}]"
    return text + (" **Holm**" if c.get("significant_holm") else " *" if c.get("significant") else "")


def variant_cell(stats: dict[str, Any] | None, metric: str) -> str:
    s = (stats or {}).get(metric)
    if not isinstance(s, dict) or "mean" not in s:
        return ""
    k, d = SCALE.get(metric, 1.0), _digits(metric)
    return f"{s['mean'] * k:.{d}f} ± {s['std'] * k:.{d}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    args = p.parse_args()
    for f in (args.before, args.after):
        if not f.is_file():
            p.error(f"'{f}' not found: give two metrics/evaluate.json files")
    before, after = (json.loads(f.read_text()) for f in (args.before, args.after))

    def key(c: dict[str, Any]) -> tuple[str, ...]:
        return (c["question"], c["a"], c["b"], c["metric"])

    cb, ca = {key(c): c for c in before["comparisons"]}, {key(c): c for c in after["comparisons"]}
    print("| question | a vs b | metric | before | after |\n|---|---|---|---|---|")
    for k in dict.fromkeys([*cb, *ca]):
        cells = f"{comparison_cell(cb.get(k))} | {comparison_cell(ca.get(k))}"
        print(f"| {k[0]} | `{k[1]}` vs `{k[2]}` | {k[3]} | {cells} |")
    holm_b = {k for k, c in cb.items() if c.get("significant_holm")}
    holm_a = {k for k, c in ca.items() if c.get("significant_holm")}
    flipped = {k for k in holm_b & holm_a if (cb[k]["diff"] > 0) != (ca[k]["diff"] > 0)}
    print(
        f"\nsignificant after Holm: {len(holm_b)} before, {len(holm_a)} after; lost {len(holm_b - holm_a)}, "
        f"gained {len(holm_a - holm_b)}, sign flipped {len(flipped)}\n"
    )
    metrics = ("gender_acc", "age_mae", "landmark_nme", "age_group_acc", "attr_acc")
    vb, va = before["variants"], after["variants"]
    shown = [m for m in metrics if any(m in (v or {}) for v in [*vb.values(), *va.values()])]
    print("| variant | " + " | ".join(f"{m} before | {m} after" for m in shown) + " |")
    print("|---|" + "---|---|" * len(shown))
    for name in dict.fromkeys([*vb, *va]):
        cells = [f"{variant_cell(vb.get(name), m)} | {variant_cell(va.get(name), m)}" for m in shown]
        print(f"| `{name}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
