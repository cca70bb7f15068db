"""Test-set evaluation of every fine-tuned variant, beside trivial baselines on the same images."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from faceattr.config import EvaluateConfig
from faceattr.data.align import template
from faceattr.models.checkpoint import load_multitask
from faceattr.train.data import FaceTensors, LabelCodec, load_split
from faceattr.train.finetune import Batches, evaluate

log = logging.getLogger(__name__)
SPLITS = ("val", "test")


def baseline_metrics(train: FaceTensors, data: FaceTensors, cs_threshold: float) -> dict[str, float]:
    """What a model that ignores the image scores: majority gender, mean training age, template."""
    out: dict[str, float] = {}
    g_train, g = train.gender[train.gender >= 0], data.gender[data.gender >= 0]
    if len(g_train) and len(g):
        majority = int(torch.mode(g_train).values)
        out["gender_acc"] = float((g == majority).float().mean())
    a_train, a = train.age[torch.isfinite(train.age)], data.age[torch.isfinite(data.age)]
    if len(a_train) and len(a):
        err = (a - a_train.mean()).abs()
        out["age_mae"] = float(err.mean())
        out[f"age_cs{cs_threshold:g}"] = float((err <= cs_threshold).float().mean())
    lm = data.landmarks[torch.isfinite(data.landmarks).flatten(1).all(1)]
    if len(lm):
        tpl = torch.tensor(template(data.size), dtype=torch.float32)
        iod = (lm[:, 0] - lm[:, 1]).norm(dim=1)
        out["landmark_nme"] = float(((lm - tpl).norm(dim=2).mean(1) / iod).mean())
    return out


def evaluate_variants(
    variants: tuple[str, ...],
    model_dir: Path,
    store: Path,
    split_file: Path,
    cfg: EvaluateConfig,
    device: torch.device,
) -> dict[str, dict]:
    """Metrics per variant and split, plus ``baseline`` and image counts per split."""
    data = {s: load_split(store, split_file, (s,)) for s in SPLITS}
    train = load_split(store, split_file, ("train",))
    results: dict[str, dict] = {"images": {s: len(d) for s, d in data.items()}, "variants": {}}
    results["baseline"] = {s: baseline_metrics(train, d, cfg.cs_threshold) for s, d in data.items()}
    for name in variants:
        path = model_dir / name / "model.pt"
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint for variant '{name}' at '{path}'; run finetune_multitask")
        model, meta = load_multitask(path)
        model.to(device)
        codec = LabelCodec(meta["input_size"], meta["age_mean"], meta["age_std"])
        results["variants"][name] = {
            s: evaluate(
                model,
                Batches(d, codec, tuple(meta["mean"]), tuple(meta["std"]), device),
                cfg.batch_size,
                cfg.cs_threshold,
            )
            for s, d in data.items()
        }
        log.info("%s test %s", name, results["variants"][name]["test"])
    return results
