"""split stage: pools for both data roles (pretrain/verify/pairs of the identity source,
train/val/test of the attribute source), no person in both, seed-deterministic."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from faceattr.config import BaseConfig, DatasetsConfig, SplitConfig, load_section, to_dict
from faceattr.data.manifest import read
from faceattr.data.pairs import pair_list_identities, pair_list_path
from faceattr.data.split import read_identity_map, split_roles
from faceattr.io import atomic_path, write_json
from faceattr.stage import parser, run
from faceattr.tracking import tracked_run

log = logging.getLogger("faceattr.stages.split")


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--pretrain-labels", required=True, help="labels.csv of the identity source's store")
    p.add_argument("--finetune-labels", required=True, help="labels.csv of the attribute source's store")
    p.add_argument("--pretrain-raw", required=True, help="the identity source's data set folder (pair list)")
    p.add_argument("--out", required=True, help="folder for pretrain.csv and finetune.csv (index, path, split)")
    p.add_argument("--metrics", required=True, help="per-pool counts JSON")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "split", SplitConfig)
    datasets = load_section(args.params, "datasets", DatasetsConfig)
    source = datasets.pretrain
    sources = (datasets.pretrain.source, datasets.finetune.source)
    seed = load_section(args.params, "base", BaseConfig).seed
    with tracked_run("split", to_dict(cfg)) as tracker:
        pairs = pair_list_path(Path(args.pretrain_raw), source.pairs)
        result = split_roles(
            read(args.pretrain_labels),
            read(args.finetune_labels),
            cfg,
            seed,
            pair_list_identities(pairs, source.pair_folds),
            sources=sources,
            identity_map=read_identity_map(cfg.identity_map, *sources) if cfg.identity_map else None,
        )
        for role, frame in (("pretrain", result.pretrain), ("finetune", result.finetune)):
            with atomic_path(Path(args.out) / f"{role}.csv") as tmp:
                frame.to_csv(tmp, index=False)
        write_json(result.metrics, args.metrics)
        tracker.log_metrics(result.metrics)
    log.info(
        "split: pretrain %s, finetune %s",
        {k: v["images"] for k, v in result.metrics["pretrain"].items()},
        {k: v["images"] for k, v in result.metrics["finetune"].items()},
    )


if __name__ == "__main__":
    run(main)
