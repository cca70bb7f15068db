"""Where the default pipeline's time goes: a clean-clone `dvc repro` with every stage profiled.

    python bench/profile_default.py [--keep DIR]          # clone HEAD, run, print the breakdown
    python bench/profile_default.py --summarise FILE      # the breakdown of an earlier profile

Clones this repository's HEAD into a temporary folder (or ``--keep DIR``), runs `dvc repro` there
with ``FACEATTR_PROFILE`` set (every stage process appends its timings, see
``faceattr.profile``), MLflow at the clone's own ``sqlite:///mlflow.db`` as a user gets it, and
prints one row per stage kind: processes, wall seconds summed over them, and how those split into
process start-up and imports, data loading, training steps, validation, resume states, MLflow
tracking, evaluation and the rest. The line "DVC" is the wall time no stage process accounts for
(DVC's own hashing, locking and process launches). Baseline: the whole `dvc repro` wall time,
against which every row prints its share.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("data loading", "train steps", "validation", "resume state", "tracking", "evaluation")


def summarise(lines: list[dict], wall: float | None) -> str:
    groups: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for line in lines:
        g = groups[line["script"]]
        g["processes"] += 1
        g["start-up + imports"] += line["startup_s"] or 0.0
        g["main"] += line["main_s"]
        for name in PHASES:
            g[name] += line["phases"].get(name, 0.0)
    total = {"processes": 0.0}
    cols = ("start-up + imports", *PHASES, "other")
    header = f"{'stage':20} {'procs':>5} {'wall s':>8} " + " ".join(f"{c[:12]:>12}" for c in cols)
    rows = [header, "-" * len(header)]
    order = sorted(groups, key=lambda s: -(groups[s]["start-up + imports"] + groups[s]["main"]))
    for script in order:
        g = groups[script]
        stage_wall = g["start-up + imports"] + g["main"]
        # phases may nest (validation inside tracking never happens; train steps inside main always)
        g["other"] = g["main"] - sum(g[p] for p in PHASES)
        rows.append(
            f"{script:20} {int(g['processes']):5d} {stage_wall:8.1f} " + " ".join(f"{g[c]:12.1f}" for c in cols)
        )
        for c in ("processes", *cols):
            total[c] = total.get(c, 0.0) + g[c]
    stage_sum = total["start-up + imports"] + sum(total[c] for c in (*PHASES, "other"))
    rows.append("-" * len(header))
    cells = " ".join(f"{total[c]:12.1f}" for c in cols)
    rows.append(f"{'all stages':20} {int(total['processes']):5d} {stage_sum:8.1f} {cells}")
    if wall is not None:
        rows.append(f"{'DVC (the rest)':20} {'':5} {wall - stage_sum:8.1f}")
        rows.append(f"{'dvc repro wall':20} {'':5} {wall:8.1f}")
        rows.append("")
        shares = {c: total[c] / wall for c in cols}
        shares["DVC (the rest)"] = (wall - stage_sum) / wall
        rows.append(
            "share of the wall time (ratio to the baseline, the whole `dvc repro`): "
            + ", ".join(f"{k} {v:.2f}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))
        )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--summarise", metavar="FILE", help="print the breakdown of an existing profile file")
    p.add_argument("--wall", type=float, help="with --summarise: the run's wall seconds")
    p.add_argument("--keep", metavar="DIR", help="clone into DIR (kept) instead of a temporary folder")
    args = p.parse_args()
    if args.summarise:
        lines = [json.loads(x) for x in Path(args.summarise).read_text().splitlines() if x.strip()]
        print(summarise(lines, args.wall))
        return
    with tempfile.TemporaryDirectory(prefix="faceattr-profile-") as tmp:
        clone = Path(args.keep) if args.keep else Path(tmp) / "faceattr"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        profile = clone / "profile.jsonl"
        # the clone's own code, whatever faceattr this interpreter has installed
        env = {**os.environ, "FACEATTR_PROFILE": str(profile), "DVC_NO_ANALYTICS": "1"}
        env["PYTHONPATH"] = str(clone / "src")
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("FACEATTR_TRACKING", None)  # tracking on, as a user runs it
        print(f"dvc repro in a clean clone of HEAD at {clone} ...", flush=True)
        start = time.perf_counter()
        subprocess.run(["dvc", "repro"], cwd=clone, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        lines = [json.loads(x) for x in profile.read_text().splitlines() if x.strip()]
        print(summarise(lines, wall))
        print(f"\nprofile lines: {profile if args.keep else '(temporary, removed)'}")


if __name__ == "__main__":
    sys.exit(main())
