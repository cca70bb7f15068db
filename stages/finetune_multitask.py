"""finetune_multitask stage: train the runs of the matrix, each a variant (backbone × pretraining ×
task set × age head × options) at one seed: every run of params with ``--all`` (what dvc.yaml
runs; finished runs with unchanged inputs are reused, see :mod:`faceattr.train.matrix`), one
after another in this process, or ``finetune_multitask.runs_per_device`` at a time per device,
each in a process of its own (:mod:`faceattr.train.concurrent`); or one run with ``--variant``
and ``--seed`` (what a cluster's array job runs, see docs/scale.md)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from faceattr.config import FinetuneConfig, PretrainIdentityConfig, check_same_trunk, load_section
from faceattr.device import pick_device
from faceattr.distributed import init_distributed
from faceattr.stage import parser, run
from faceattr.tracking import data_provenance
from faceattr.train.concurrent import Job, run_jobs, slots
from faceattr.train.matrix import RunPaths, in_folders, train_run
from faceattr.variants import Variant, parse_variant, run_name

log = logging.getLogger("faceattr.stages.finetune_multitask")


def eta(started: float, done: int, total: int) -> str:
    """Elapsed time and, from the pace of the runs so far, the time the remaining runs will take
    (a run reused from its finished state counts as done; a wider network's runs take longer)."""
    if done == 0:
        return ""
    elapsed = time.monotonic() - started
    left = elapsed / done * (total - done)
    return f" ({_clock(elapsed)} elapsed, about {_clock(left)} left at this pace)"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def one_run(args: argparse.Namespace, variant: Variant, seed: int, paths: RunPaths) -> Job:
    """This stage's one-run command for a run of ``--all``, writing the files ``--all`` would."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--params", args.params]
    argv += ["--variant", variant.name, "--seed", str(seed)]
    argv += ["--store", args.store, "--split", args.split, "--identity", args.identity]
    argv += [
        "--out",
        str(paths.out),
        "--resume",
        str(paths.resume),
        "--metrics",
        str(paths.metrics),
        "--curve",
        str(paths.curve),
    ]
    return Job(run_name(variant.name, seed), tuple(argv))


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument(
        "--all",
        action="store_true",
        help="train every variant x seed of finetune_multitask; --out, --resume, --metrics and --curve are then "
        "folders holding <run>/model.pt, <run>.pt, <run>.json and <run>.csv",
    )
    p.add_argument(
        "--index",
        type=int,
        help="with --all: train only run INDEX of the matrix (0-based, the order `faceattr matrix` lists), "
        "into the files --all writes: what one task of a cluster's array job runs",
    )
    p.add_argument("--variant", help="one run: <backbone>-<pretraining>-<task>+<task>[-<option>...]")
    p.add_argument("--seed", type=int, help="one run: its training seed")
    p.add_argument("--store", required=True, help="packed aligned-face store")
    p.add_argument("--split", required=True, help="split CSV")
    p.add_argument("--identity", required=True, help="pretrain_identity trunk checkpoint")
    p.add_argument("--out", required=True, help="model checkpoint to write (--all: the models folder)")
    p.add_argument("--resume", required=True, help="resume state, kept between runs (--all: its folder)")
    p.add_argument("--metrics", required=True, help="final validation metrics JSON (--all: its folder)")
    p.add_argument("--curve", required=True, help="per-epoch CSV (--all: its folder)")
    args = p.parse_args(argv)
    if args.all == (args.variant is not None) or (args.variant is None) != (args.seed is None):
        p.error("give either --all, or both --variant and --seed")
    if args.index is not None and not args.all:
        p.error("--index picks a run of --all's matrix: give it with --all")
    cfg = load_section(args.params, "finetune_multitask", FinetuneConfig)
    check_same_trunk(load_section(args.params, "pretrain_identity", PretrainIdentityConfig), cfg)
    if args.all:  # every name is checked before the first run trains
        runs = [(parse_variant(v), s) for v in cfg.variants for s in cfg.seeds]
        folders = (Path(args.out), Path(args.resume), Path(args.metrics), Path(args.curve))
        targets = [in_folders(run_name(v.name, s), *folders) for v, s in runs]
        if args.index is not None:
            if not 0 <= args.index < len(runs):
                raise ValueError(
                    f"--index {args.index}: the matrix of '{args.params}' has {len(runs)} runs (0 to {len(runs) - 1})"
                )
            runs, targets = [runs[args.index]], [targets[args.index]]
    else:
        runs = [(parse_variant(args.variant), args.seed)]
        targets = [RunPaths(Path(args.out), Path(args.resume), Path(args.metrics), Path(args.curve))]
    info = init_distributed()  # one process unless started by torchrun
    device = pick_device()
    envs = slots(cfg.runs_per_device, device) if args.all and info.world == 1 else [{}]
    started = time.monotonic()
    if len(envs) > 1 and len(runs) > 1:
        log.info(
            "finetune_multitask: %d runs, %d at once (runs_per_device: %s)", len(runs), len(envs), cfg.runs_per_device
        )
        jobs = [one_run(args, variant, seed, paths) for (variant, seed), paths in zip(runs, targets, strict=True)]
        run_jobs(jobs, envs, progress=lambda done, total: eta(started, done, total))
        return
    provenance = data_provenance(args.params, "finetune", args.store)
    done: Counter[str] = Counter()
    for i, ((variant, seed), paths) in enumerate(zip(runs, targets, strict=True), 1):
        log.info(
            "finetune_multitask run %d/%d: %s%s",
            i,
            len(runs),
            run_name(variant.name, seed),
            eta(started, i - 1, len(runs)),
        )
        outcome = train_run(
            cfg,
            variant,
            seed,
            paths,
            store=Path(args.store),
            split=Path(args.split),
            identity=Path(args.identity),
            provenance=provenance,
            device=device,
            main_rank=info.main,
        )
        done[outcome] += 1
    log.info("finetune_multitask: %d runs: %s", len(runs), ", ".join(f"{n} {k}" for k, n in done.items()))


if __name__ == "__main__":
    run(main)
