"""report stage: Markdown report with the papers' tables (mean ± std, CIs, significance), the
data-efficiency figure, breakdowns and learning curves."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from faceattr.config import DatasetsConfig, ReportConfig, load_section, to_dict
from faceattr.io import read_json
from faceattr.report import (
    build_report,
    mean_curves,
    read_curve,
    read_curves,
    write_data_efficiency,
    write_dvc_curves,
    write_offline_template,
)
from faceattr.stage import parser, run
from faceattr.tracking import tracked_run

log = logging.getLogger("faceattr.stages.report")


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--evaluation", required=True, help="evaluate stage's metrics JSON")
    p.add_argument("--pretrain", required=True, help="pretrain_identity's metrics JSON")
    p.add_argument("--pretrain-curve", required=True, help="pretrain_identity's per-epoch CSV")
    p.add_argument("--curves", required=True, help="folder of per-variant curve CSVs")
    p.add_argument("--out", required=True, help="Markdown report to write")
    p.add_argument("--figures", required=True, help="folder for PNG figures")
    p.add_argument("--vega-template", required=True, help="offline HTML template for `dvc plots show`")
    p.add_argument("--dvc-curves", required=True, help="CSV of seed-averaged curves for `dvc plots show`")
    p.add_argument("--dvc-efficiency", required=True, help="CSV of data-efficiency points for `dvc plots show`")
    p.add_argument("--attention", required=True, help="folder of attention-map figures from evaluate")
    p.add_argument("--split-metrics", required=True, help="split stage's metrics JSON (what the split groups by)")
    p.add_argument("--align-metrics", required=True, help="the fine-tuning role's align metrics JSON")
    p.add_argument("--probe", default="", help="probe stage's JSON (the linear-probe section); empty: none")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "report", ReportConfig)
    datasets = load_section(args.params, "datasets", DatasetsConfig)
    data = {
        **{
            role: {"dataset": d.dataset, "source": d.source}
            for role, d in (("pretrain", datasets.pretrain), ("finetune", datasets.finetune))
        },
        "split": read_json(args.split_metrics),
        "align": read_json(args.align_metrics),
    }
    with tracked_run("report", to_dict(cfg)) as tracker:
        out = Path(args.out)
        evaluation = read_json(args.evaluation)
        # only the runs evaluated now: a variant dropped from params may have left its curve behind
        curves = {k: v for k, v in read_curves(Path(args.curves)).items() if k in evaluation["runs"]}

        build_report(
            evaluation,
            read_json(args.pretrain),
            curves,
            cfg,
            out,
            Path(args.figures),
            data,
            Path(args.attention),
            read_curve(Path(args.pretrain_curve)),
            read_json(args.probe) if args.probe else None,
        )
        write_offline_template(Path(args.vega_template))
        write_dvc_curves(mean_curves(curves), Path(args.dvc_curves))
        write_data_efficiency(evaluation, Path(args.dvc_efficiency))

        tracker.log_artifact(out)
        tracker.log_artifact(args.figures, "figures")
    log.info("report: wrote %s", out)


if __name__ == "__main__":
    run(main)
