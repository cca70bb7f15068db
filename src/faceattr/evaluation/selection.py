"""Which metrics a variant is compared on, and which run of a task set is chosen (on validation)
for the registry and the export stage: the model-selection rules, in one module that needs no
network, so the export stage and the report import it without the evaluation code."""

from __future__ import annotations

from faceattr.metrics import LOWER_IS_BETTER
from faceattr.variants import parse_variant

TASK_METRICS = {
    "gender": ("gender_acc",),
    "age": ("age_mae",),
    "landmarks": ("landmark_nme",),
    "attributes": ("attr_acc",),
}

HEADLINE = ("gender_acc", "age_mae", "landmark_nme", "age_group_acc", "attr_acc")


def headline_metrics(name: str) -> tuple[str, ...]:
    """The metrics a variant is compared on: one per task it trains (age-group accuracy for the
    group head, where age MAE is the secondary number); an ensemble's or an unknown name's: all."""
    try:
        v = parse_variant(name)
    except ValueError:
        return HEADLINE
    metrics = [m for task in v.tasks for m in TASK_METRICS[task]]
    if v.age_head == "group":
        metrics.insert(metrics.index("age_mae"), "age_group_acc")
    return tuple(metrics)


# the validation metric that picks the registered model of a task set, by its first task
SELECT_BY = (("gender", "gender_acc"), ("age", "age_mae"), ("attributes", "attr_acc"))  # task: metric, in order


def best_on_validation(runs: dict[str, dict[str, dict[str, float]]]) -> dict[str, tuple[str, str]]:
    """Per task set, the run (variant and seed) best on **validation**, and the metric that chose it:
    gender accuracy where the set has gender, else age MAE, else attribute accuracy, else NME."""
    best: dict[str, tuple[str, str, float]] = {}
    for name, by_split in runs.items():
        if name.startswith("ensemble("):  # no single network to register
            continue
        tasks = parse_variant(name.rsplit("-s", 1)[0]).tasks
        metric = next((m for t, m in SELECT_BY if t in tasks), "landmark_nme")
        value = by_split.get("val", {}).get(metric)
        if value is None:
            continue
        key = "+".join(tasks)
        score = -value if metric in LOWER_IS_BETTER else value
        if key not in best or score > best[key][2]:
            best[key] = (name, metric, score)
    return {k: (name, metric) for k, (name, metric, _) in best.items()}
