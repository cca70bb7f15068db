"""download stage: materialise the configured data source under data/raw/<dataset>/."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from faceattr.config import BaseConfig, DownloadConfig, load_section, to_dict
from faceattr.data.download import download
from faceattr.io import write_json
from faceattr.stage import parser, run
from faceattr.tracking import tracked_run

log = logging.getLogger("faceattr.stages.download")


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--out", required=True, help="data set folder to (re)create")
    p.add_argument("--metrics", required=True, help="counts JSON")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "download", DownloadConfig)
    seed = load_section(args.params, "base", BaseConfig).seed
    with tracked_run("download", to_dict(cfg)) as tracker:
        counts = download(cfg, Path(args.out), seed)
        write_json(counts, args.metrics)
        tracker.log_metrics(counts)
    log.info("download: %s -> %s %s", cfg.source, args.out, counts)


if __name__ == "__main__":
    run(main)
