"""The evaluate stage's work: every run scored on val and test, per-variant statistics, the
papers' comparisons, ensembles and data-efficiency points, in one result."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceattr.config import INTERVALS, EvaluateConfig
from faceattr.evaluation.comparisons import compare, comparison_pairs, data_efficiency
from faceattr.evaluation.runs import (
    add_ensembles,
    attention_figure,
    load_runs,
    save_predictions,
    variant_statistics,
)
from faceattr.evaluation.scoring import (
    SPLITS,
    baseline_metrics,
    breakdowns,
    calibration_metrics,
    summarise,
)
from faceattr.statistics import mean_std
from faceattr.train.data import load_split
from faceattr.variants import parse_variant, run_name

log = logging.getLogger(__name__)


def calibration_statistics(by_seed: Mapping[int, Mapping[str, np.ndarray]]) -> dict[str, Any]:
    """Per calibration metric (``calibration_metrics``) on test: mean ± std over seeds and the
    per-seed values."""
    per_seed = [calibration_metrics(by_seed[s]) for s in sorted(by_seed)]
    out: dict[str, Any] = {}
    for metric in per_seed[0] if per_seed else ():
        values = [v[metric] for v in per_seed]
        mean, std = mean_std(values)
        out[metric] = {"mean": mean, "std": std, "seeds": values}
    return out


def evaluate_variants(
    variants: Sequence[str],
    seeds: Sequence[int],
    model_dir: Path,
    store: Path,
    split_file: Path,
    cfg: EvaluateConfig,
    edges: Sequence[float],
    device: torch.device,
    predictions_dir: Path,
    half: bool = False,
) -> dict[str, Any]:
    """Everything the report states: per-run metrics, per-variant statistics, comparisons.

    ``half``: networks run under bf16 autocast (as ``finetune_multitask.accel.precision`` resolves
    on this machine), decoding and metrics in fp32."""
    data = {s: load_split(store, split_file, (s,)) for s in SPLITS}
    train = load_split(store, split_file, ("train",)).with_own_template()  # as finetune aligned to
    test = data["test"]
    results: dict[str, Any] = {
        "images": {s: len(d) for s, d in data.items()},
        "baseline": {s: baseline_metrics(train, d, cfg.cs_threshold) for s, d in data.items()},
        "protocol": {
            "seeds": list(seeds),
            "bootstrap": cfg.bootstrap,
            "confidence": cfg.confidence,
            "age_group_edges": list(edges),
            "std": "sample std over seeds (ddof 1)",
            "interval": cfg.interval,
            "ci": INTERVALS[cfg.interval],
            "cluster_unit": test.group_unit,
            "clusters": len(set(test.groups)),
            "precision": "bf16 autocast (network), fp32 (decoding, metrics)" if half else "fp32",
        },
    }
    val_runs = load_runs(variants, seeds, model_dir, data["val"], cfg, edges, device, half, "val")
    runs = load_runs(variants, seeds, model_dir, test, cfg, edges, device, half, "test")
    for r in (runs, val_runs):
        add_ensembles(r, cfg.ensemble_members, data["val"] if r is val_runs else test, edges, cfg.cs_threshold)
    results["runs"] = {
        run_name(name, seed): {
            "test": summarise(runs.scores[name][seed], cfg.cs_threshold),
            "val": summarise(val_runs.scores[name][seed], cfg.cs_threshold),
            "calibration": calibration_metrics(runs.scores[name][seed]),  # test
        }
        for name in runs.scores
        for seed in runs.scores[name]
    }
    stats: dict[str, Any] = {}
    for name in [*variants, *cfg.ensemble_members]:
        if name in runs.not_run:
            stats[name] = {"status": "not run", "reason": runs.not_run[name]}
            continue
        merged = {s: {**runs.scores[name][s], **runs.predictions[name][s]} for s in runs.scores[name]}
        stats[name] = {
            "status": "ok",
            **variant_statistics(runs.scores[name], cfg, test.groups),
            "calibration": calibration_statistics(runs.scores[name]),
            "breakdown": breakdowns(merged, test, edges, test.attribute_names, train),
        }
        if name in cfg.ensemble_members:
            stats[name]["members"] = list(cfg.ensemble_members[name])

    results["variants"] = stats
    results["comparisons"] = compare(runs, comparison_pairs(variants, cfg.ensemble_members), cfg, test.groups)
    results["data_efficiency"] = data_efficiency(stats, variants)
    save_predictions(runs, test, predictions_dir)
    for name in variants:
        if name in runs.scores and parse_variant(name).backbone == "attn_cnn":
            attention_figure(
                model_dir,
                run_name(name, min(runs.scores[name])),
                test,
                predictions_dir / "figures" / f"attention-{name}.png",
            )
    for name, s in stats.items():
        log.info("%s: %s", name, {k: round(v["mean"], 4) for k, v in s.items() if isinstance(v, dict) and "mean" in v})
    return results
