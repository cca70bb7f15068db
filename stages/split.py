"""split stage: identity-disjoint pretrain/verify/train/val/test pools, seed-deterministic."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from faceattr.config import BaseConfig, SplitConfig, load_section, to_dict
from faceattr.data.manifest import read
from faceattr.data.split import split_pools, split_summary
from faceattr.io import atomic_path, write_json
from faceattr.stage import parser, run
from faceattr.tracking import tracked_run

log = logging.getLogger("faceattr.stages.split")


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--labels", required=True, help="labels.csv of the packed store")
    p.add_argument("--out", required=True, help="split CSV (index, split)")
    p.add_argument("--metrics", required=True, help="per-pool counts JSON")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "split", SplitConfig)
    seed = load_section(args.params, "base", BaseConfig).seed
    with tracked_run("split", to_dict(cfg)) as tracker:
        labels = read(args.labels)
        pools = split_pools(labels, cfg.fractions, seed, cfg.protocol, cfg.stratify, cfg.file)

        with atomic_path(args.out) as tmp:
            pd.DataFrame({"index": range(len(labels)), "path": labels["path"], "split": pools}).to_csv(tmp, index=False)
        summary = split_summary(labels, pools)
        write_json(summary, args.metrics)
        tracker.log_metrics(summary)
    log.info("split: %s", {k: v["images"] for k, v in summary.items()})


if __name__ == "__main__":
    run(main)
