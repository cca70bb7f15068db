"""evaluate stage: every run's test predictions, per-variant statistics over seeds (mean ± std,
bootstrap CIs), paired comparisons, ensembles and data-efficiency points."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from faceattr.config import EvaluateConfig, FinetuneConfig, load_section, to_dict
from faceattr.device import pick_device
from faceattr.evaluation.pipeline import evaluate_variants
from faceattr.evaluation.scoring import headline, summarise_results
from faceattr.evaluation.selection import best_on_validation
from faceattr.io import write_json
from faceattr.machine import describe_machine
from faceattr.profile import phase
from faceattr.serving import log_model, register
from faceattr.stage import parser, run
from faceattr.tracking import RUN_LINK, Run, linked_run, times_kept, tracked_run, variant_run
from faceattr.train.loop import bf16, precision_name

log = logging.getLogger("faceattr.stages.evaluate")


def _restore(run: Run, model_dir: Path) -> None:
    """What a recreated run shows of a model restored from DVC's cache: its params and meta."""
    meta = model_dir / "meta.json"
    if meta.is_file():
        m = json.loads(meta.read_text())
        run.log_params({**m.get("params", {}), "variant": m.get("variant"), "seed": m.get("seed")})
        run.log_artifact(meta)


def write_variant_metrics(per_variant: dict[str, dict[str, float]], folder: Path) -> None:
    """One small JSON per variant (``dvc metrics show`` prints one row each); files of variants
    no longer evaluated are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.json"):
        if stale.stem not in per_variant:
            stale.unlink()
    for name, row in per_variant.items():
        write_json(row, folder / f"{name}.json")


def log_variant_runs(results: dict, run_ids: dict[str, str], params: dict[str, str]) -> None:
    """One ``faceattr-variants`` run per evaluated variant: mean and std over seeds of each test
    metric, named by the variant, its seeds' fine-tuning runs as a tag."""
    for variant, stats in results["variants"].items():
        if stats.get("status") != "ok":
            continue
        children = {r: run_ids[r] for r in results["runs"] if r.rsplit("-s", 1)[0] == variant and r in run_ids}
        metrics = {}
        for metric, st in {**stats, **stats.get("calibration", {})}.items():
            if isinstance(st, dict) and "mean" in st:
                metrics[f"test_{metric}"] = st["mean"]
                metrics[f"test_{metric}_std"] = st["std"]
        variant_run(variant, children, metrics, params)


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--models", required=True, help="folder with <variant>-s<seed>/model.pt")
    p.add_argument("--store", required=True, help="packed aligned-face store")
    p.add_argument("--split", required=True, help="split CSV")
    p.add_argument("--out", required=True, help="everything evaluated (JSON, read by report)")
    p.add_argument("--summary", required=True, help="per variant mean, std and CI of each metric (JSON)")
    p.add_argument("--headline", help="DVC metrics: the best mean per metric and the test set (JSON)")
    p.add_argument("--variant-metrics", help="DVC metrics: folder of <variant>.json, its test means")
    p.add_argument("--predictions", required=True, help="folder for per-run test predictions and figures")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "evaluate", EvaluateConfig)
    ft = load_section(args.params, "finetune_multitask", FinetuneConfig)
    device = pick_device()
    half = bf16(device, ft.accel)  # as training and validation ran on this machine
    machine = describe_machine(device)
    params = {**to_dict(cfg), "precision_used": precision_name(half), "machine": machine}
    with tracked_run("evaluate", params) as tracker:
        with phase("evaluation"):
            results = evaluate_variants(
                ft.variants,
                ft.seeds,
                Path(args.models),
                Path(args.store),
                Path(args.split),
                cfg,
                ft.age_head.group_edges,
                device,
                Path(args.predictions),
                half,
            )
            results["protocol"]["fraction_budget"] = ft.fraction_budget  # what a data-efficiency point varies
            results["protocol"]["machine"] = machine  # the report names it beside the precision
            write_json(results, args.out)
            summary = summarise_results(results)
        write_json(summary, args.summary)
        best, per_variant = headline(results)
        if args.headline:
            write_json(best, args.headline)
        if args.variant_metrics:
            write_variant_metrics(per_variant, Path(args.variant_metrics))
        tracker.log_metrics(summary)

        models = Path(args.models)
        run_ids, model_uris = {}, {}  # run -> its MLflow run id, its logged model's URI
        for name, by_split in results["runs"].items():  # test metrics join the run that trained the model
            with phase("tracking"):
                # test only: the validation curve is the run's own, logged per epoch while it trained
                linked = linked_run(models / name / RUN_LINK, name, lambda r, n=name: _restore(r, models / n))
                # rounded for the runs table's narrow columns; the exact values are evaluate.json's
                test = {**by_split.get("test", {}), **by_split.get("calibration", {})}
                linked.log_metrics({f"test_{k}": round(v, 5) for k, v in test.items()})
                if linked.run_id:
                    run_ids[name] = linked.run_id
                if linked.active and (models / name / "model.pt").is_file():
                    with times_kept(linked):
                        model_uris[name] = log_model(linked.run_id, models / name)
        with phase("tracking"):
            log_variant_runs(results, run_ids, {"precision_used": precision_name(half)})
        for task_set, (name, metric) in best_on_validation(results["runs"]).items():
            if name in model_uris:
                with phase("tracking"):
                    description = (
                        f"faceattr's {task_set} model: run {name}, the best of the evaluated runs with these tasks on "
                        f"validation {metric} (the export stage picks the same way). Chosen on validation, never on "
                        "test: the report's tables rank variants by their test means over seeds, so the variant best "
                        "there can differ from this one."
                    )
                    version = register(model_uris[name], f"faceattr-{task_set}", description)
                log.info(
                    "registered %s as faceattr-%s version %s (best validation %s)", name, task_set, version, metric
                )
    ok = sum(s["status"] == "ok" for s in results["variants"].values())
    log.info(
        "evaluate: %d variants (%d not run) × %d seeds on %d test images; %d comparisons",
        len(results["variants"]),
        len(results["variants"]) - ok,
        len(ft.seeds),
        results["images"]["test"],
        len(results["comparisons"]),
    )


if __name__ == "__main__":
    run(main)
