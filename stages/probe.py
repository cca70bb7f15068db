"""probe stage: what each frozen trunk of the fine-tuning variants already knows, as linear and
L1-sparse probes on its features (faceattr.probes), for the report's probe section."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from faceattr.config import BaseConfig, FinetuneConfig, ProbeConfig, load_section, to_dict
from faceattr.device import pick_device
from faceattr.io import write_json
from faceattr.stage import parser, run
from faceattr.tracking import tracked_run

log = logging.getLogger("faceattr.stages.probe")


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--store", required=True, help="packed aligned-face store of the fine-tuning role")
    p.add_argument("--split", required=True, help="split CSV of the fine-tuning role")
    p.add_argument("--identity", required=True, help="pretrain_identity's trunk checkpoint")
    p.add_argument("--out", required=True, help="probe metrics JSON to write")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "probe", ProbeConfig)
    finetune = load_section(args.params, "finetune_multitask", FinetuneConfig)
    seed = load_section(args.params, "base", BaseConfig).seed
    from tqdm import tqdm

    from faceattr.probes import run_probes, summary

    with tracked_run("probe", to_dict(cfg)) as tracker, tqdm(desc="probing", unit="img") as bar:

        def progress(name: str, done: int, total: int) -> None:  # one trunk's crops embedded so far
            bar.set_description(f"embedding for {name}")
            bar.total, bar.n = total, done
            bar.refresh()

        result = run_probes(
            cfg,
            finetune,
            store=Path(args.store),
            split=Path(args.split),
            identity_checkpoint=Path(args.identity),
            device=pick_device(),
            seed=seed,
            progress=progress,
        )
        write_json(result, args.out)
        tracker.log_metrics(
            {
                f"{name}.{k}": v
                for name, entry in result["trunks"].items()
                if entry["status"] == "probed"
                for k, v in summary(entry).items()
                if v == v  # NaN: the task is absent
            }
        )


if __name__ == "__main__":
    run(main)
