"""export stage: the ONNX file of the run best on validation for one task set (export.tasks), so
that `dvc repro` leaves a deployable model (`faceattr predict PHOTOS --model models/export/model.onnx`),
checked against PyTorch on test crops."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from faceattr.config import ExportConfig, load_section, to_dict
from faceattr.evaluation.selection import best_on_validation
from faceattr.io import read_json, write_json
from faceattr.stage import parser, run
from faceattr.tracking import tracked_run

log = logging.getLogger("faceattr.stages.export")


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--evaluation", required=True, help="evaluate stage's metrics JSON (validation metrics per run)")
    p.add_argument("--models", required=True, help="folder with <variant>-s<seed>/model.pt")
    p.add_argument("--store", required=True, help="packed aligned-face store (test crops for the parity check)")
    p.add_argument("--split", required=True, help="split CSV")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--metrics", required=True, help="which run was exported, and the parity check")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "export", ExportConfig)
    best = best_on_validation(read_json(args.evaluation)["runs"])
    if not best:
        raise ValueError("evaluate scored no run with validation metrics: nothing to export")
    tasks = max(best, key=lambda t: len(t.split("+"))) if cfg.tasks == "auto" else cfg.tasks
    if tasks not in best:
        raise ValueError(f"export.tasks '{tasks}': no evaluated run has that task set; evaluated: {sorted(best)}")
    name, metric = best[tasks]
    with tracked_run("export", to_dict(cfg)) as tracker:
        from faceattr.export import export_checked

        out = Path(args.out)
        out.unlink(missing_ok=True)  # a failed check must not leave an earlier export in its place
        diff = export_checked(
            Path(args.models) / name, out, Path(args.store), Path(args.split), cfg.opset, cfg.parity_tolerance
        )
        result = {"run": name, "tasks": tasks, "chosen_by": f"validation {metric}", **diff}
        write_json(result, args.metrics)
        tracker.log_metrics(diff)
        tracker.set_tags({"faceattr.exported_run": name})
    log.info("export: %s (best validation %s for %s) -> %s; %s", name, metric, tasks, out, diff)


if __name__ == "__main__":
    run(main)
