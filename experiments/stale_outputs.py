"""The outputs a `dvc exp run` did not write: those of stages whose dvc.lock entry is still
HEAD's (a run that stops at a target, as `full_size.sh select` stops at `evaluate`, leaves the
committed default's probe, export and report files in the workspace). Prints one path a line.

    python experiments/stale_outputs.py [--lock dvc.lock] [--rev HEAD]

experiments/lib.sh's run_recorded drops these from a results folder, so nothing there is another
run's file under this run's name.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import yaml


def stale(lock: dict, head: dict) -> list[str]:
    """Each output path of a stage whose lock entry is byte-for-byte HEAD's, unless a stage that
    did run writes it too (a lock may keep entries of stages dvc.yaml no longer has, whose files
    now lie inside a newer stage's output folder)."""
    ours, theirs = lock.get("stages", {}), head.get("stages", {})
    outs = {name: [out["path"] for out in entry.get("outs", [])] for name, entry in ours.items()}
    fresh = [p for name, paths in outs.items() if theirs.get(name) != ours[name] for p in paths]
    old = {p for name, paths in outs.items() if theirs.get(name) == ours[name] for p in paths}
    return sorted(p for p in old if not any(p == f or p.startswith(f.rstrip("/") + "/") for f in fresh))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lock", type=Path, default=Path("dvc.lock"))
    p.add_argument("--rev", default="HEAD")
    args = p.parse_args()
    shown = subprocess.run(["git", "show", f"{args.rev}:{args.lock.as_posix()}"], capture_output=True, text=True)
    head = yaml.safe_load(shown.stdout) if shown.returncode == 0 else {}
    for path in stale(yaml.safe_load(args.lock.read_text()) or {}, head or {}):
        print(path)


if __name__ == "__main__":
    main()
