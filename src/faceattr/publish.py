"""Copy a run's aggregate results (what papers publish) into a results folder, and nothing else.

The data sets' terms allow publishing tables of metrics and curves, never the faces or anything
made from them. So this copies an explicit list of aggregate files: the report and its plot
figures, the metrics JSONs and curve CSVs, ``params.yaml`` and ``dvc.lock`` (the run's
provenance). Crops, checkpoints, predictions and figures drawn on faces (the attention maps) are
never copied; the report's links to face figures are replaced by a note.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

# (source glob relative to the workspace, destination folder relative to the results folder)
AGGREGATE = (
    ("reports/report.md", "."),
    ("reports/figures/*.png", "figures"),
    ("metrics/*.json", "metrics"),
    ("metrics/download/*.json", "metrics/download"),
    ("metrics/align/*.json", "metrics/align"),
    ("metrics/finetune/*.json", "metrics/finetune"),
    ("plots/*.csv", "plots"),
    ("plots/finetune/*.csv", "plots/finetune"),
    ("params.yaml", "."),
    ("dvc.lock", "."),
)
FACE_LINK = re.compile(r"!\[(attention-[^\]]*)\]\([^)]*\)")


def publish(workspace: Path, dest: Path) -> list[Path]:
    """Copy ``workspace``'s aggregate results into ``dest``; returns the files written."""
    report = workspace / "reports" / "report.md"
    if not report.is_file():
        raise FileNotFoundError(f"'{report}' not found: run the pipeline (dvc repro) in '{workspace}' first")
    written = []
    for pattern, folder in AGGREGATE:
        for src in sorted(workspace.glob(pattern)):
            if src.name.startswith("attention-"):  # drawn on test faces
                continue
            target = dest / folder / src.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            written.append(target)
    md = dest / "report.md"
    md.write_text(FACE_LINK.sub(r"(\1: not published, it shows faces; `dvc repro` draws it locally)", md.read_text()))
    return written
