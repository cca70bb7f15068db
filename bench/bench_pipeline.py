"""Pipeline overhead: a `dvc repro` with nothing to do, and one after a report-only param change.

    python bench/bench_pipeline.py

Run in an up-to-date workspace (after `dvc repro`). Works on a copy of the repository in a
temporary folder (git clone + the DVC cache shared), so the workspace is never touched.
Baseline: `dvc version`, the start-up cost of any DVC command.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, out.stdout + out.stderr


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
        subprocess.run(["dvc", "cache", "dir", str(ROOT / ".dvc" / "cache")], cwd=work, check=True)
        subprocess.run(["dvc", "checkout", "-q"], cwd=work, check=True)
        t_version, _ = timed(["dvc", "version"], work)
        t_noop, out = timed(["dvc", "repro"], work)
        if "Running stage" in out:
            raise SystemExit("the workspace was not up to date: run `dvc repro` first")
        params = work / "params.yaml"
        params.write_text(re.sub(r"(?m)^  decimals: 2", "  decimals: 3", params.read_text()))
        t_report, out = timed(["dvc", "repro"], work)
        ran = sorted(set(re.findall(r"Running stage '([^']+)'", out)))
    print("\npipeline overhead (times in seconds; ratio = baseline / time, so < 1 is slower)")
    table(
        "",
        [
            ("dvc version (start-up)", 1 / t_version, f"{t_version:.2f} s"),
            ("dvc repro, nothing changed", 1 / t_noop, f"{t_noop:.2f} s (goal < 5 s)"),
            ("dvc repro after report.decimals 2 -> 3", 1 / t_report, f"{t_report:.2f} s, ran {ran}"),
        ],
        baseline="dvc version (start-up)",
    )


if __name__ == "__main__":
    main()
