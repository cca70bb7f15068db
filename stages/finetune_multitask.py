"""finetune_multitask stage: train one run of the matrix: a variant (backbone × pretraining × task
set × age head × options) at one seed."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from faceattr.config import FinetuneConfig, PretrainIdentityConfig, check_same_trunk, load_section, to_dict
from faceattr.device import pick_device
from faceattr.distributed import init_distributed
from faceattr.io import atomic_path, write_json, write_rows_csv
from faceattr.models.checkpoint import save_checkpoint
from faceattr.stage import parser, run
from faceattr.tracking import RUN_LINK, data_provenance, tracked_run, write_run_link
from faceattr.train.finetune import finetune, missing_weights, write_not_run
from faceattr.variants import parse_variant, run_name

log = logging.getLogger("faceattr.stages.finetune_multitask")


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--variant", required=True, help="<backbone>-<pretraining>-<task>+<task>[-<option>...]")
    p.add_argument("--seed", required=True, type=int, help="training seed (one of finetune_multitask.seeds)")
    p.add_argument("--store", required=True, help="packed aligned-face store")
    p.add_argument("--split", required=True, help="split CSV")
    p.add_argument("--identity", required=True, help="pretrain_identity trunk checkpoint")
    p.add_argument("--out", required=True, help="model checkpoint to write")
    p.add_argument("--resume", required=True, help="resume state (kept between runs)")
    p.add_argument("--metrics", required=True, help="final validation metrics JSON")
    p.add_argument("--curve", required=True, help="per-epoch CSV")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "finetune_multitask", FinetuneConfig)
    check_same_trunk(load_section(args.params, "pretrain_identity", PretrainIdentityConfig), cfg)
    variant = parse_variant(args.variant)
    name = run_name(variant.name, args.seed)
    params = {
        **{k: v for k, v in to_dict(cfg).items() if k not in ("variants", "seeds")},
        "variant": variant.name,
        "backbone": variant.backbone,
        "pretraining": variant.pretraining,
        "tasks": "+".join(variant.tasks),
        "age_head_kind": variant.age_head,
        "gender_conditioned": variant.gender_conditioned,
        "uncertainty_weighting": variant.uncertainty_weighting,
        "train_fraction": variant.fraction,
        "seed": args.seed,
        **data_provenance(args.params, "finetune", args.store),
    }
    info = init_distributed()  # one process unless started by torchrun
    tags = {"faceattr.seed": str(args.seed), "faceattr.variant_family": variant.name}
    with tracked_run("finetune_multitask", params, variant=name, tags=tags) as tracker:
        if info.main:  # the run id travels with the model, so evaluate finds this run by id
            write_run_link(tracker, Path(args.out).with_name(RUN_LINK))
        reason = missing_weights(variant, cfg)
        if reason is not None:  # finetune_multitask.imagenet_missing: not_run
            log.error("%s not run: %s", name, reason)
            tracker.set_tags({"faceattr.status": "not run", "faceattr.reason": reason[:5000]})
            if info.main:
                write_not_run(reason, Path(args.out), Path(args.resume), Path(args.metrics), Path(args.curve))
            return
        model, meta, history = finetune(
            variant,
            cfg,
            seed=args.seed,
            store=Path(args.store),
            split_file=Path(args.split),
            identity_checkpoint=Path(args.identity),
            device=pick_device(),
            resume_path=Path(args.resume),
            on_epoch=lambda row: tracker.log_curve([row]),
        )
        if not info.main:  # under torchrun only rank 0 writes
            return
        save_checkpoint(args.out, model.state_dict(), meta)
        final = {k: v for k, v in history[-1].items() if k != "epoch"}
        write_json(final, args.metrics)
        write_rows_csv(history, args.curve)
        meta_path = Path(args.out).with_name("meta.json")
        with atomic_path(meta_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
        tracker.log_artifact(meta_path)
    log.info("finetune_multitask %s: %s", name, final)


if __name__ == "__main__":
    run(main)
