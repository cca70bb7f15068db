"""download stage: materialise one data role's source (datasets.<role>) under data/raw/<role>/."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from faceattr.config import ROLES, BaseConfig, DatasetsConfig, load_section, to_dict
from faceattr.data.download import download
from faceattr.io import write_json
from faceattr.stage import parser, run
from faceattr.tracking import tracked_run

log = logging.getLogger("faceattr.stages.download")


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--role", required=True, choices=ROLES, help="which data role to materialise")
    p.add_argument("--out", required=True, help="data set folder to (re)create")
    p.add_argument("--metrics", required=True, help="counts JSON")
    args = p.parse_args(argv)
    # the whole section is parsed, so a pretraining source without identities stops here, first
    cfg = load_section(args.params, "datasets", DatasetsConfig).role(args.role)
    seed = load_section(args.params, "base", BaseConfig).seed
    with tracked_run("download", {**to_dict(cfg), "role": args.role}, variant=args.role) as tracker:
        counts = download(cfg, Path(args.out), seed)
        write_json(counts, args.metrics)
        tracker.log_metrics(counts)
    log.info("download %s: %s -> %s %s", args.role, cfg.source, args.out, counts)


if __name__ == "__main__":
    run(main)
