"""evaluate stage: test and validation metrics of every variant, keyed by variant and split."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from faceattr.config import EvaluateConfig, FinetuneConfig, load_section, to_dict
from faceattr.device import pick_device
from faceattr.evaluation import evaluate_variants
from faceattr.io import write_json
from faceattr.stage import parser, run
from faceattr.tracking import find_variant_run, tracked_run

log = logging.getLogger("faceattr.stages.evaluate")


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--models", required=True, help="folder with <variant>/model.pt")
    p.add_argument("--store", required=True, help="packed aligned-face store")
    p.add_argument("--split", required=True, help="split CSV")
    p.add_argument("--out", required=True, help="metrics JSON")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "evaluate", EvaluateConfig)
    variants = load_section(args.params, "finetune_multitask", FinetuneConfig).variants
    with tracked_run("evaluate", to_dict(cfg)) as tracker:
        results = evaluate_variants(variants, Path(args.models), Path(args.store), Path(args.split), cfg, pick_device())
        write_json(results, args.out)
        tracker.log_metrics(results)
        for name, by_split in results["variants"].items():  # test metrics join the variant's own run
            find_variant_run(name).log_metrics({f"{s}_{k}": v for s, m in by_split.items() for k, v in m.items()})
    log.info("evaluate: %d variants on %d test images", len(variants), results["images"]["test"])


if __name__ == "__main__":
    run(main)
