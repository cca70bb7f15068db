"""align stage: warp every face onto the ArcFace template into the packed aligned-face store."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import faceattr

faceattr.short_openmp_spin()  # before torch loads: MTCNN's many small operations wait less (faceattr.threads)

from faceattr.config import AlignConfig, load_section, to_dict  # noqa: E402
from faceattr.data.aligning import align_dataset  # noqa: E402
from faceattr.device import pick_device  # noqa: E402
from faceattr.io import write_json  # noqa: E402
from faceattr.stage import parser, run  # noqa: E402
from faceattr.tracking import tracked_run  # noqa: E402

log = logging.getLogger("faceattr.stages.align")


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--raw", required=True, help="data set folder with manifest.csv")
    p.add_argument("--out", required=True, help="packed store folder (faces.npy, labels.csv)")
    p.add_argument("--dropped", required=True, help="CSV of dropped images and reasons")
    p.add_argument("--metrics", required=True, help="counts JSON")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "align", AlignConfig)
    with tracked_run("align", to_dict(cfg)) as tracker:
        try:
            counts = align_dataset(Path(args.raw), Path(args.out), Path(args.dropped), cfg, str(pick_device()))
        finally:  # the dropped list and counts are worth keeping when the stage fails on them
            tracker.log_artifact(args.dropped)
        write_json(counts, args.metrics)
        tracker.log_metrics(counts)
    log.info("align: %d aligned, %d dropped %s", counts["aligned"], counts["dropped"], counts["dropped_by_reason"])


if __name__ == "__main__":
    run(main)
