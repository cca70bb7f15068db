"""pretrain_identity stage: ArcFace identity training; saves a trunk-only, self-describing checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from faceattr.config import BaseConfig, DatasetsConfig, PretrainIdentityConfig, load_section, to_dict
from faceattr.data.pairs import pair_list_path
from faceattr.device import pick_device
from faceattr.distributed import init_distributed
from faceattr.io import write_json, write_rows_csv
from faceattr.machine import describe_machine
from faceattr.models.checkpoint import save_checkpoint
from faceattr.stage import parser, run
from faceattr.tracking import tracked_run
from faceattr.train.loop import bf16, precision_name
from faceattr.train.pretrain import pretrain_identity

log = logging.getLogger("faceattr.stages.pretrain_identity")


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--store", required=True, help="packed aligned-face store")
    p.add_argument("--split", required=True, help="the identity source's split CSV")
    p.add_argument("--raw", required=True, help="the identity source's data set folder (for its pair list)")
    p.add_argument("--out", required=True, help="trunk checkpoint to write")
    p.add_argument("--resume", required=True, help="resume state (kept between runs)")
    p.add_argument("--metrics", required=True, help="final metrics JSON")
    p.add_argument("--curve", required=True, help="per-epoch CSV")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "pretrain_identity", PretrainIdentityConfig)
    seed = load_section(args.params, "base", BaseConfig).seed
    source = load_section(args.params, "datasets", DatasetsConfig).pretrain
    pair_list = pair_list_path(Path(args.raw), source.pairs)
    info = init_distributed()  # one process unless started by torchrun
    device = pick_device()
    params = {
        **to_dict(cfg),
        "seed": seed,
        "precision_used": precision_name(bf16(device, cfg.accel)),
        "machine": describe_machine(device),
    }
    with tracked_run("pretrain_identity", params) as tracker:
        trunk, meta, history = pretrain_identity(
            cfg,
            seed=seed,
            store=Path(args.store),
            split_file=Path(args.split),
            device=device,
            resume_path=Path(args.resume),
            on_epoch=lambda row: tracker.log_curve([row]),
            pair_list=pair_list,
            pair_folds=source.pair_folds,
        )
        if not info.main:  # under torchrun only rank 0 writes
            return
        final = {k: v for k, v in history[-1].items() if k != "epoch"}
        metrics = {**final, **{k: meta[k] for k in ("identities", "images", "verify_pairs", "verify_folds")}}
        if meta["pair_list"]:  # beside the held-out-identity figure, under the list's name
            metrics["pair_list"] = meta["pair_list"]
        save_checkpoint(args.out, trunk.state_dict(), meta)
        write_json(metrics, args.metrics)
        write_rows_csv(history, args.curve)
        tracker.log_metrics(metrics)
    log.info("pretrain_identity: verification %.4f ± %.4f", metrics["verify_acc"], metrics["verify_acc_std"])
    if meta["pair_list"]:
        log.info("pretrain_identity: on %s %s", pair_list, meta["pair_list"])


if __name__ == "__main__":
    run(main)
