"""The fine-tuning matrix: every variant x seed of params, run one after another in one process.

A run whose finished resume state was written for the same inputs (variant, params, seed, data,
trunk, precision, code: :func:`faceattr.train.finetune.run_key`) is not trained again: its
outputs are rewritten from that state, and its MLflow run is the one that trained it. So adding a
variant or a seed to params trains only the new runs, as separate DVC stages per run would, while
the runs pay Python's, DVC's and MLflow's start-up once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from faceattr.config import FinetuneConfig, to_dict
from faceattr.io import atomic_path, write_json, write_rows_csv
from faceattr.machine import describe_machine
from faceattr.models.checkpoint import save_checkpoint
from faceattr.tracking import RUN_LINK, tracked_run, write_run_link
from faceattr.train.finetune import finetune, missing_weights, run_key, write_not_run
from faceattr.train.loop import bf16, nhwc, precision_name
from faceattr.variants import Variant, run_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPaths:
    """Where one run's outputs go."""

    out: Path  # model checkpoint; meta.json and mlflow_run.json go beside it
    resume: Path  # resume state (a DVC persist output); ``<resume>.run.json`` beside it
    metrics: Path
    curve: Path

    @property
    def record(self) -> Path:
        """What the last finished execution of this run was: its key, status and MLflow run."""
        return self.resume.with_suffix(".run.json")


def previous(paths: RunPaths, key: str, status: str) -> str | None:
    """Whether a finished execution of this run with the same key and status left its result in
    the resume state: its MLflow run id if so ("" where it ran with tracking off), else None."""
    if not paths.record.is_file() or not paths.resume.is_file():
        return None
    try:
        record = json.loads(paths.record.read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != key or record.get("status") != status:
        return None
    return record.get("mlflow_run_id") or ""


def train_run(
    cfg: FinetuneConfig,
    variant: Variant,
    seed: int,
    paths: RunPaths,
    *,
    store: Path,
    split: Path,
    identity: Path,
    provenance: dict[str, str],
    device: torch.device,
    main_rank: bool,
) -> str:
    """Train (or take from its finished resume state) one run and write its outputs; returns
    "trained", "reused" or "not run"."""
    name = run_name(variant.name, seed)
    machine = describe_machine(device)
    recipe = {k: v for k, v in to_dict(cfg).items() if k not in ("variants", "seeds", "runs_per_device")}
    # what the accel switches came to on this device, not what was asked (channels-last is CUDA-only)
    recipe["accel"] = {**recipe["accel"], "channels_last": nhwc(device, cfg.accel)}
    params = {
        **recipe,
        "variant": variant.name,
        "backbone": variant.backbone,
        "pretraining": variant.pretraining,
        "tasks": "+".join(variant.tasks),
        "age_head_kind": variant.age_head,
        "gender_conditioned": variant.gender_conditioned,
        "uncertainty_weighting": variant.uncertainty_weighting,
        "train_fraction": variant.fraction,
        "seed": seed,
        "precision_used": precision_name(bf16(device, cfg.accel)),  # what accel.precision came to here
        **provenance,
    }
    # a tag, not a param: a reused run reopened on another machine keeps its params
    tags = {"faceattr.seed": str(seed), "faceattr.variant_family": variant.name, "faceattr.machine": machine}
    reason = missing_weights(variant, cfg)
    status = "not run" if reason is not None else "finished"
    key = run_key(variant, cfg, seed, store=store, split_file=split, identity_checkpoint=identity, device=device)
    earlier = previous(paths, key, status)
    if main_rank and earlier is None:
        paths.record.unlink(missing_ok=True)  # this execution's record is written when it finishes
    with tracked_run("finetune_multitask", params, variant=name, tags=tags, reopen=earlier) as tracker:
        fresh = not tracker.reopened  # a reopened run already holds the params, curves and meta
        if main_rank:  # the run id travels with the model, so evaluate finds this run by id
            write_run_link(tracker, paths.out.with_name(RUN_LINK))
        if reason is not None:  # finetune_multitask.imagenet_missing: not_run
            log.error("%s not run: %s", name, reason)
            if fresh:
                tracker.set_tags({"faceattr.status": "not run", "faceattr.reason": reason[:5000]})
            tracker.final_status = "KILLED"  # not a green "Finished": nothing was trained
            if main_rank:
                write_not_run(reason, paths.out, paths.resume, paths.metrics, paths.curve)
        else:
            model, meta, history = finetune(
                variant,
                cfg,
                seed=seed,
                store=store,
                split_file=split,
                identity_checkpoint=identity,
                device=device,
                resume_path=paths.resume,
                on_epoch=(lambda row: tracker.log_curve([row])) if fresh else (lambda row: None),
            )
            if not main_rank:  # under torchrun only rank 0 writes
                return "trained"
            save_checkpoint(paths.out, model.state_dict(), meta)
            final = {k: v for k, v in history[-1].items() if k != "epoch"}
            write_json(final, paths.metrics)
            write_rows_csv(history, paths.curve)
            meta_path = paths.out.with_name("meta.json")
            with atomic_path(meta_path) as tmp:
                tmp.write_text(json.dumps(meta, indent=2) + "\n")
            if fresh:
                tracker.log_artifact(meta_path)
            log.info("%s: %s", name, " ".join(f"{k}={v:.4g}" for k, v in final.items()))
        if main_rank:
            record: dict[str, Any] = {"key": key, "status": status, "mlflow_run_id": tracker.run_id}
            write_json(record, paths.record)
    if reason is not None:
        return "not run"
    return "trained" if earlier is None else "reused"


def in_folders(name: str, out: Path, resume: Path, metrics: Path, curve: Path) -> RunPaths:
    """Run ``name``'s outputs in the stage's folders (``--all``): ``<out>/<name>/model.pt``,
    ``<resume>/<name>.pt``, ``<metrics>/<name>.json``, ``<curve>/<name>.csv``."""
    return RunPaths(out / name / "model.pt", resume / f"{name}.pt", metrics / f"{name}.json", curve / f"{name}.csv")
