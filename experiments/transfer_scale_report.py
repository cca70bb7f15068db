"""Collect experiments/transfer_scale.sh's points into one table, figure and report per target.

    python experiments/transfer_scale_report.py --runs results/transfer_scale/runs --out results/transfer_scale

reads ``<runs>/<target>/<point>/`` (each point's metrics, params and RUN.txt, as the script copied
them) and writes ``<out>/<target>.md`` (the table, the probes, each run's command, wall time and
machine), ``<out>/<target>.json`` (the rows) and ``<out>/figures/gain_vs_people_<target>.png``.
The comparisons are each point's own paired bootstrap against the same `none` runs (evaluate), Holm-
corrected here across every point and metric of the target: one question, "does identity
pretraining on N people help", asked at every N.

With ``--probe-store`` and ``--probe-split`` (the scratch clone's fine-tuning store and split) and
``--trunks`` (where the script left each point's trunk), it first runs the probe stage on every
point's trunk, writing ``<point>/probe.json`` (``--probe-target``: only that target's points, the
one the store and split belong to).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from faceattr.statistics import holm  # noqa: E402

CASIA = {"people": 10_575, "images": 494_414}
QUESTION = "identity pretraining vs none"
METRICS = {  # metric: (label, percent, decimals)
    "gender_acc": ("gender %", True, 2),
    "age_mae": ("age MAE (years)", False, 2),
    "landmark_nme": ("landmark NME", False, 4),
    "attr_acc": ("mean attribute %", True, 2),
}
ORDER = ("lfw100", "lfw400", "lfw1680", "celeba112")
# dlib's trunk: its own pair of arms (dlib's network pretrained, and from scratch), not trained here
# dlib's published people and faces; verification measured here (docs/results.md, dlib section): the port on
# faceattr's 150-px chips, 10 folds of LFW-style pairs over all 1,680 LFW people (bench/dlib_lfw_verification.py)
DLIB = {"people": 7_485, "images": 3_000_000, "verify": (0.9658, 0.0078)}


def read_run(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(": ")
        out[key] = value
    return out


def load_point(folder: Path) -> dict[str, Any]:
    metrics = folder / "metrics"
    point = {
        "name": folder.name,
        "evaluate": json.loads((metrics / "evaluate.json").read_text()),
        "pretrain": json.loads((metrics / "pretrain_identity.json").read_text()),
        "params": yaml.safe_load((folder / "params.yaml").read_text()),
        "run": read_run(folder / "RUN.txt"),
        "split": json.loads((metrics / "split.json").read_text()),
    }
    # the probes of the point's trunk (experiments' run_probes), else those of its own probe stage
    probe = next((f for f in (folder / "probe.json", metrics / "probe.json") if f.is_file()), None)
    point["probe"] = json.loads(probe.read_text()) if probe else None
    return point


def variant(ev: Mapping[str, Any], pretraining: str) -> str:
    names = [v for v in ev["variants"] if f"-{pretraining}-" in v]
    if len(names) != 1:
        raise ValueError(f"expected one {pretraining} variant, found {names}")
    return names[0]


def comparison(ev: Mapping[str, Any], metric: str, question: str = QUESTION) -> dict[str, Any] | None:
    for c in ev["comparisons"]:
        if c["question"] == question and c["metric"] == metric and c.get("status") == "ok":
            return c
    return None


def fmt(x: float | None, percent: bool, d: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.{d}f}" if percent else f"{x:.{d}f}"


def mfmt(x: float | None, metric: str) -> str:
    _, percent, d = METRICS[metric]
    return fmt(x, percent, d)


def stat(ev: Mapping[str, Any], name: str, metric: str) -> str:
    s = ev["variants"][name].get(metric)
    if not s:
        return ""
    return f"{mfmt(s['mean'], metric)} ± {mfmt(s['std'], metric)}"


def rows(
    points: Sequence[Mapping[str, Any]], dlib: Mapping[str, Any] | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per point (and `none` first), then dlib's pair of arms where it ran, with the Holm
    verdicts across every test of the target (one question: does pretraining help)."""
    first = points[0]["evaluate"]
    metrics = [m for m in METRICS if m in first["variants"][variant(first, "none")]]
    none = variant(first, "none")
    for p in points[1:]:  # every point must compare against the same none runs
        a = first["variants"][none]
        b = p["evaluate"]["variants"][variant(p["evaluate"], "none")]
        if any(a[m]["seeds"] != b[m]["seeds"] for m in metrics):
            raise ValueError(f"point {p['name']}'s none runs differ from {points[0]['name']}'s: not one experiment")
    stats = {m: stat(first, none, m) for m in metrics}
    out = [{"arm": "none (from scratch)", "people": 0, "images": 0, "stats": stats}]
    tests = []
    for p in points:
        ev, pre = p["evaluate"], p["pretrain"]
        name = variant(ev, "identity")
        row = {
            "arm": p["name"],
            "source": p["params"]["datasets"]["pretrain"]["source"],
            "people": pre["identities"],
            "images": pre["images"],
            "held_out_people": p["split"]["pretrain"]["verify"]["identities"],
            "verify": (pre["verify_acc"], pre["verify_acc_std"], pre.get("verify_folds")),
            "stats": {m: stat(ev, name, m) for m in metrics},
            "diff": {},
        }
        for m in metrics:
            c = comparison(ev, m)
            if c is not None:
                row["diff"][m] = {k: c[k] for k in ("diff", "ci_low", "ci_high", "p", "resampled", "seeds", "clusters")}
                tests.append((row, m, c["p"]))
        out.append(row)
    if dlib is not None:
        ev = dlib["evaluate"]
        none_name, dlib_name = variant(ev, "none"), variant(ev, "dlib")
        trained = ev.get("train_images")
        out.append(
            {
                "arm": "dlib network from scratch",
                "group": "dlib",
                "people": 0,
                "images": 0,
                "stats": {m: stat(ev, none_name, m) for m in metrics},
                "train_images": trained,
            }
        )
        row = {
            "arm": "dlib",
            "group": "dlib",
            "source": "dlib",
            "people": DLIB["people"],
            "images": DLIB["images"],
            "held_out_people": None,
            "verify": None,
            "stats": {m: stat(ev, dlib_name, m) for m in metrics},
            "diff": {},
            "train_images": trained,
        }
        for m in metrics:
            c = comparison(ev, m, "dlib pretraining vs none")
            if c is not None:
                row["diff"][m] = {k: c[k] for k in ("diff", "ci_low", "ci_high", "p", "resampled", "seeds", "clusters")}
                tests.append((row, m, c["p"]))
        out.append(row)
    verdicts = holm([p for _, _, p in tests], 0.05)
    for (row, m, _), v in zip(tests, verdicts, strict=True):
        row["diff"][m]["holm"] = bool(v)
    return out, metrics


def people_note(first: Mapping[str, Any], dlib: Mapping[str, Any] | None) -> list[str]:
    """Which people the arms share, and what dlib's arms fine-tuned on, as lines above the table."""
    fin = first["params"]["datasets"]["finetune"]["dataset"]
    lines = []
    if fin == "celeba":
        lines.append(
            "People: CelebA names its people by number only, so whether any of them is among LFW's 1,680 (both are "
            "sets of public figures) or dlib's 7,485 cannot be checked; the LFW and dlib points are taken as "
            "other people. CelebA's own people are not a point here: pretraining on some of them would take their "
            "images out of fine-tuning, and that arm's `none` would train on other images than every other arm's."
        )
    if dlib is not None:
        n = dlib["evaluate"]["images"]
        sub = dlib["params"]["datasets"]["finetune"].get("max_images") or 0
        what = f"the seeded {sub:,}-image subset" if sub else "the same images as the other arms"
        lines.append(
            f"dlib: dlib's network (150-px chips) pretrained by dlib and from scratch, both fine-tuned on {what} "
            f"({', '.join(f'{v:,} {k}' for k, v in n.items())} images); its Δ is against its own from-scratch arm, "
            "so it measures dlib's pretraining within one architecture, not against the IResNet-18 rows."
        )
    return [*(f"{line}\n" for line in lines)] if lines else []


def diff_cell(d: Mapping[str, Any] | None, metric: str) -> str:
    if not d:
        return ""
    unit = " pp" if METRICS[metric][1] else ""
    mark = " ✓" if d["holm"] else ""
    return f"{mfmt(d['diff'], metric)}{unit} [{mfmt(d['ci_low'], metric)}, {mfmt(d['ci_high'], metric)}]{mark}"


def table(rs: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> str:
    head = ["Arm", "People (trained + held out)", "Images trained", "Held-out verification %"]
    head += [METRICS[m][0] for m in metrics] + [f"Δ {METRICS[m][0]} vs none" for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rs:
        v = r.get("verify")
        dlib = r["arm"] == "dlib"
        cells = [
            f"`{r['arm']}`" + (" (Δ vs the dlib network from scratch)" if dlib else ""),
            "7,485 (dlib's)" if dlib else f"{r['people']:,} + {r['held_out_people']:,}" if r["people"] else "0",
            "about 3 million (dlib's)" if dlib else f"{r['images']:,}" if r["images"] else "0",
            f"{100 * DLIB['verify'][0]:.2f} ± {100 * DLIB['verify'][1]:.2f} (LFW-style pairs of all 1,680 people)"
            if dlib
            else f"{100 * v[0]:.2f} ± {100 * v[1]:.2f}"
            if v
            else "",
            *(r["stats"].get(m, "") for m in metrics),
            *(diff_cell(r.get("diff", {}).get(m), m) for m in metrics),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(rs: Sequence[Mapping[str, Any]], metrics: Sequence[str], target: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m in metrics if m in ("gender_acc", "age_mae", "attr_acc")]
    fig, axes = plt.subplots(
        1, len(shown), figsize=(max(5.5 * len(shown), 7.5), 4.8 if len(shown) > 1 else 5.6), squeeze=False
    )
    for ax, m in zip(axes[0], shown, strict=True):
        label, percent, _ = METRICS[m]
        scale = 100 if percent else 1
        for source, marker in (("lfw", "o-"), ("celeba", "s"), ("dlib", "D")):
            pts = sorted((r for r in rs if r.get("source") == source and m in r["diff"]), key=lambda r: r["people"])
            if not pts:
                continue
            x = [r["people"] for r in pts]
            y = [scale * r["diff"][m]["diff"] for r in pts]
            err = [
                [scale * (r["diff"][m]["diff"] - r["diff"][m]["ci_low"]) for r in pts],
                [scale * (r["diff"][m]["ci_high"] - r["diff"][m]["diff"]) for r in pts],
            ]
            label_of = {
                "lfw": "LFW people",
                "celeba": "CelebA people",
                "dlib": "dlib's trunk (its own network" + ("; the 4,000-image subset)" if target == "utkface" else ")"),
            }
            ax.errorbar(x, y, yerr=err, fmt=marker, capsize=4, label=label_of[source])
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(CASIA["people"], color="grey", ls=":", label="CASIA-WebFace (the first paper)")
        ax.set_xscale("log")
        ticks = sorted({r["people"] for r in rs if r["people"]} | {CASIA["people"]})
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks], rotation=45, ha="right")
        ax.minorticks_off()
        ax.set_xlabel("people the trunk was pretrained on (log)")
        ax.set_ylabel(f"Δ {label} vs from scratch" + (" (pp)" if percent else ""))
        ax.set_title(f"{target}: {label}")
    handles, labels = axes[0][0].get_legend_handles_labels()  # one legend for all panels, below them
    wide = len(shown) > 1
    fig.legend(handles, labels, loc="lower center", ncol=2 if wide else 1, frameon=False)
    fig.tight_layout(rect=(0, 0.16 if wide else 0.24, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def dlib_probe_table(dlib: Mapping[str, Any] | None) -> list[str]:
    """The dlib point's own probes: dlib's trunk and the same network at random init, on that
    point's test images (the UTKFace subset), so a table of their own."""
    trunks = (dlib or {}).get("probe", {}) or {}
    trunks = trunks.get("trunks", {})
    cols = [("dlib network (random init)", trunks.get("dlib_resnet-none")), ("dlib", trunks.get("dlib_resnet-dlib"))]
    if not all(t and t.get("tasks") for _, t in cols):
        return []
    lines = [
        "",
        f"dlib's trunk, on the dlib point's own test images ({dlib['evaluate']['images']['test']:,}):",
        "",
        "| Task (test) | majority / mean | " + " | ".join(f"`{n}`" for n, _ in cols) + " |",
        "|---|---|---|---|",
    ]
    tasks = cols[1][1]["tasks"]
    for t in [t for t in ("gender", "age") if t in tasks] + sorted(t for t in tasks if t not in ("gender", "age")):
        percent = tasks[t]["metric"] == "acc"
        cells = [f"{t} ({'%' if percent else 'MAE'})", fmt(tasks[t]["majority"]["test"], percent)]
        cells += [_probe_cell(trunk["tasks"].get(t, {}), percent) for _, trunk in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _probe_cell(e: Mapping[str, Any], percent: bool) -> str:
    if "full" not in e:
        return ""
    units = ""
    if e.get("sparse"):
        a, g = e["sparse"]["of_accuracy"], e["sparse"]["of_gain"]
        units = f"; {'—' if a is None else a['units']} / {'—' if g is None else g['units']} units"
    lo, hi = (fmt(x, percent) for x in e["full"]["ci"])
    return f"{fmt(e['full']['test'], percent)} [{lo}, {hi}]{units}"


def probe_table(points: Sequence[Mapping[str, Any]]) -> list[str]:
    probed = [(p["name"], p["probe"]) for p in points if p["probe"]]
    if not probed:
        return ["Probes: not run yet for this target."]
    none = probed[0][1]["trunks"].get("face_resnet18-none")
    cols = [("none (random init)", none)] + [(n, pr["trunks"].get("face_resnet18-identity")) for n, pr in probed]
    tasks = list(cols[1][1]["tasks"])
    tasks = [t for t in ("gender", "age") if t in tasks] + sorted(t for t in tasks if t not in ("gender", "age"))
    head = ["Task (test)", "majority / mean", *(f"`{n}`" for n, _ in cols)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in tasks:
        ref = cols[1][1]["tasks"][t]
        percent = ref["metric"] == "acc"
        cells = [f"{t} ({'%' if percent else 'MAE'})", fmt(ref["majority"]["test"], percent)]
        for _, trunk in cols:
            e = (trunk or {}).get("tasks", {}).get(t, {})
            if "full" not in e:
                cells.append("")
                continue
            units = ""
            if e.get("sparse"):
                a, g = e["sparse"]["of_accuracy"], e["sparse"]["of_gain"]
                units = f"; {'—' if a is None else a['units']} / {'—' if g is None else g['units']} units"
            cells.append(
                f"{fmt(e['full']['test'], percent)} [{fmt(e['full']['ci'][0], percent)}, "
                f"{fmt(e['full']['ci'][1], percent)}]{units}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def run_probes(folder: Path, trunks: Path, store: Path, split: Path) -> None:
    """The probe stage on this point's trunk, with main's probe params over the point's params."""
    out = folder / "probe.json"
    if out.is_file():
        return
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["probe"] = yaml.safe_load((ROOT / "params.yaml").read_text())["probe"]
    merged = folder / "probe_params.yaml"
    merged.write_text(yaml.safe_dump(params, sort_keys=False))
    cmd = [sys.executable, str(ROOT / "stages" / "probe.py"), "--params", str(merged), "--store", str(store)]
    cmd += ["--split", str(split), "--identity", str(trunks / f"{folder.name}.pt"), "--out", str(out)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=ROOT / "results/transfer_scale/runs")
    ap.add_argument("--out", type=Path, default=ROOT / "results/transfer_scale")
    ap.add_argument("--trunks", type=Path, help="folder of <point>.pt trunks (transfer_scale.sh's TRUNKS)")
    ap.add_argument("--probe-store", type=Path, help="the points' fine-tuning store (data/aligned/finetune)")
    ap.add_argument("--probe-split", type=Path, help="the points' fine-tuning split (data/splits/finetune.csv)")
    ap.add_argument("--probe-target", help="probe this target's points only (the one whose store and split are given)")
    args = ap.parse_args()
    for target_dir in sorted(p for p in args.runs.iterdir() if p.is_dir()):
        folders = [target_dir / n for n in ORDER if (target_dir / n / "done").is_file()]
        if not folders:
            continue
        dlib = load_point(target_dir / "dlib") if (target_dir / "dlib" / "done").is_file() else None
        if args.trunks and args.probe_store and args.probe_split and args.probe_target in (None, target_dir.name):
            for f in folders:
                run_probes(f, args.trunks, args.probe_store, args.probe_split)
        points = [load_point(f) for f in folders]
        target = target_dir.name
        rs, metrics = rows(points, dlib)
        fig = figure(rs, metrics, target, args.out / "figures" / f"gain_vs_people_{target}.png")
        ev = points[0]["evaluate"]
        seeds = len(ev["variants"][variant(ev, "none")][metrics[0]]["seeds"])
        largest = max((r for r in rs[1:] if r.get("group") != "dlib"), key=lambda r: r["people"])
        runs = [p["run"] for p in (*points, *([dlib] if dlib else []))]
        cpus = sorted({f"{r['cpu']}" + (f"; {r['jobs']}" if "jobs" in r else "") for r in runs})
        lines = [
            f"# Transfer against the number of people: {target}",
            "",
            f"Fine-tuned on {points[0]['params']['datasets']['finetune']['dataset']}: "
            f"{', '.join(f'{v:,} {k}' for k, v in ev['images'].items())} images and the training pool; "
            f"{seeds} seed(s) per arm; Δ is each arm against the same `none` runs, paired on the same test images, "
            f"95 % bootstrap CI resampling {rs[1]['diff'][metrics[0]]['resampled']}; ✓: significant after Holm "
            f"across all {sum(len(r.get('diff', {})) for r in rs)} tests of this table.",
            "",
            f"Machine: {' | '.join(cpus)}; no GPU. Other work ran beside the runs: their wall times are not timings.",
            "",
            *people_note(points[0], dlib),
            table(rs, metrics),
            "",
            f"![gain against people]({fig.relative_to(args.out)})",
            "",
            f"The largest point, {largest['people']:,} people and {largest['images']:,} images, is "
            f"{100 * largest['people'] / CASIA['people']:.1f} % of CASIA-WebFace's {CASIA['people']:,} people and "
            f"{100 * largest['images'] / CASIA['images']:.1f} % of its {CASIA['images']:,} images.",
            "",
            "## What a frozen embedding already knows (linear probes, test)",
            "",
            "Full probe: score [95 % CI over test clusters]; units: the fewest an L1 probe needs for 95 % of the "
            "full probe's validation accuracy / of its gain over the majority.",
            "",
            *probe_table(points),
            *dlib_probe_table(dlib),
            "",
            "## Runs",
            "",
        ]
        for p in (*points, *([dlib] if dlib else [])):
            r = p["run"]
            minutes = int(r["wall_s"]) / 60
            lines += [f"- `{p['name']}`: `{r['command']}` at `{r['commit'][:7]}`; {minutes:.1f} min; {r['cpu']}"]
        (args.out / f"{target}.md").write_text("\n".join(lines) + "\n")
        (args.out / f"{target}.json").write_text(json.dumps(rs, indent=2, default=str) + "\n")
        print(f"wrote {args.out / f'{target}.md'}")


if __name__ == "__main__":
    main()
