"""The report's sections beyond the tables: the summary, the protocol paragraph and its notes,
data efficiency, the second and third papers, the probes, the breakdowns."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.evaluation.selection import best_on_validation, headline_metrics
from faceattr.metrics import PERCENT
from faceattr.report.figures import (
    _link,
    _percent_label,
    plot_confusion,
    plot_data_efficiency,
)
from faceattr.report.tables import (
    CASIA_IMAGES,
    CASIA_PEOPLE,
    MAIN_METRICS,
    METRIC_LABEL,
    NOT_COMPARABLE_HEADER,
    PAPER2,
    PAPER3_CELEBA_MEAN_ACC,
    PAPER_HEADER,
    _cells,
    _dec,
    _fmt,
    _has,
    _short_reason,
    _table,
    answers,
    best_means,
    cell,
    significance,
)


def summary_section(ev: Mapping[str, Any], d: int) -> list[str]:
    """The report's first screen: per question its answer, the best variant per metric, what the
    numbers were computed in, and which model the export stage ships."""
    lines = ["## Summary", ""]
    proto = ev["protocol"]
    machine = proto.get("machine")
    on = f" on {machine}" if machine else ""
    lines += [
        f"Computed in **{proto.get('precision', 'unrecorded precision')}**{on}; on another CPU or precision the "
        "numbers differ within their intervals (training is deterministic for one seed, machine and precision). "
        f"{ev['images']['test']} test images, {len(proto['seeds'])} seeds per variant; every comparison is paired "
        "on the same test images, first minus second.",
        "",
    ]
    rows = answers(ev, d)
    if rows:
        lines += [_table(["Question", "Holm family", "Significant after Holm", "Answer"], rows), ""]
    ran = [n for n, st in ev["variants"].items() if st["status"] == "ok"]
    compared = {m for n in ran for m in headline_metrics(n)}  # age groups only where a group head ran
    metrics = [m for m in ("gender_acc", "age_mae", "age_group_acc", "landmark_nme", "attr_acc") if m in compared]
    best = best_means(ev, ran, metrics)
    if best:
        parts = []
        for m, value in best.items():
            name = next(n for n in ran if ev["variants"][n].get(m, {}).get("mean") == value)
            parts.append(f"{METRIC_LABEL[m]} {cell(ev['variants'][name][m], m, d)} `{name}`")
        lines += ["**Best test mean per metric** (bold in the tables): " + "; ".join(parts) + ".", ""]
    chosen = best_on_validation(ev["runs"])
    if chosen:
        tasks = max(chosen, key=lambda t: len(t.split("+")))
        run, metric = chosen[tasks]
        lines += [
            f"**The exported model** (`export.tasks: auto`, the largest task set, {tasks}) is run `{run}`, the best "
            f"on **validation** {METRIC_LABEL.get(metric, metric)}: chosen without the test split, so it can differ "
            "from the best test mean above, which is a ranking on test, not a selection.",
            "",
        ]
    return lines


def _breakdown_lines(name: str, st: Mapping[str, Any], d: int) -> list[str]:
    b = st.get("breakdown", {})
    lines = []
    if "age_mae_by_band" in b:
        bands = b["age_mae_by_band"]
        lines += [
            f"Age MAE by true age band (years; a-b means [a, b)), `{name}` (mean over seeds):",
            "",
            _table(
                ["Band", *(v["band"] for v in bands)],
                [
                    ["MAE (years)", *(_fmt(v["mae"], d) for v in bands)],
                    ["test images", *(str(v["images"]) for v in bands)],
                ],
            ),
            "",
        ]
    for label in ("gender", "race"):
        rows = b.get(f"by_{label}")
        if rows:
            lines += [
                f"By {label}, `{name}`:",
                "",
                _table(
                    [label.capitalize(), "images", "gender acc. %", "age MAE"],
                    [
                        [k, str(v["images"]), _fmt(v.get("gender_acc"), d, True), _fmt(v.get("age_mae"), d)]
                        for k, v in rows.items()
                    ],
                ),
                "",
            ]
    return lines


def _probe_cell(task: Mapping[str, Any], d: int) -> str:
    full = task.get("full")
    if full is None:
        return "n/a"
    percent = task["metric"] == "acc"
    lo, hi = full["ci"]
    return f"{_fmt(full['test'], d, percent)} [{_fmt(lo, d, percent)}, {_fmt(hi, d, percent)}]"


def _units_cell(task: Mapping[str, Any]) -> str:
    sparse = task.get("sparse")
    if not sparse:
        return ""
    acc, gain = sparse["of_accuracy"], sparse["of_gain"]
    return f"{'—' if acc is None else acc['units']} / {'—' if gain is None else gain['units']}"


def probe_section(probe: Mapping[str, Any], d: int) -> list[str]:
    """What each frozen trunk already knows (the probe stage): the full linear probe's test score
    with its CI, and the units an L1-sparse probe needs, per task and trunk."""
    probed = {n: t for n, t in probe["trunks"].items() if t["status"] == "probed"}
    lines = [
        "## What a frozen trunk already knows (linear probes)",
        "",
        f"Each trunk the variants start from, frozen: its features of the {probe['images']['train']} training crops "
        "standardised, a logistic (gender, attributes) or ridge (age) probe with its L2 strength chosen on the "
        f"{probe['images']['val']} validation crops, scored on the {probe['images']['test']} test crops (95 % "
        f"cluster-bootstrap CI, clusters: {probe['cluster_unit']}). `none` is the random initialisation the "
        "trunks from scratch start from: the floor an embedding must clear.",
        "",
    ]
    for name, t in probe["trunks"].items():
        if t["status"] != "probed":
            lines.append(f"- `{name}`: **not run**: {_short_reason(t.get('reason', ''))}")
    if len(probed) < len(probe["trunks"]):
        lines.append("")
    if not probed:
        return lines
    named = sorted({k for t in probed.values() for k in t["tasks"]})
    tasks = [k for k in ("gender", "age") if k in named] + [k for k in named if k not in ("gender", "age")]
    base = next(iter(probed.values()))["tasks"]
    rows = []
    for task in tasks:
        first = base.get(task, {})
        unit = "%" if first.get("metric") == "acc" else "MAE"
        majority = first.get("majority", {}).get("test")
        rows.append(
            [
                f"{task} ({unit})",
                _fmt(majority, d, unit == "%"),
                *(_probe_cell(t["tasks"][task], d) if task in t["tasks"] else "" for t in probed.values()),
            ]
        )
    lines += [
        _table(["Task (test)", "Majority / mean", *(f"`{n}`" for n in probed)], rows),
        "",
        f"**Sparse probes** (L1 logistic, along a path of strengths): the fewest units of the embedding whose probe "
        f"reaches {probe['share'] * 100:.0f} % of the full probe's validation accuracy / {probe['share'] * 100:.0f} % "
        "of its gain over the training majority (— : no point of the path does; 0: the majority already does). "
        "The third paper found attributes live in a few units.",
        "",
    ]
    binary = [k for k in tasks if base.get(k, {}).get("kind") == "binary"]
    features = ", ".join(f"`{n}` {t['features']}" for n, t in probed.items())
    lines += [
        _table(
            ["Task", *(f"`{n}`" for n in probed)],
            [[k, *(_units_cell(t["tasks"].get(k, {})) for t in probed.values())] for k in binary],
        ),
        "",
        f"Units per trunk: {features}.",
        "",
    ]
    return lines


def _efficiency_section(ev: Mapping[str, Any], figures_dir: Path, out_md: Path, d: int) -> list[str]:
    fig = plot_data_efficiency(ev, figures_dir / "data_efficiency.png")
    if fig is None:
        return ["## Data efficiency", "", "No variant is listed at more than one training fraction (`frac<P>`).", ""]
    fractions = sorted({p["fraction"] for ms in ev["data_efficiency"].values() for ps in ms.values() for p in ps})
    rows = []
    for family, metrics in ev["data_efficiency"].items():
        for metric, points in metrics.items():
            if metric in MAIN_METRICS:
                pct, dd = metric in PERCENT, _dec(metric, d)
                at = {p["fraction"]: f"{_fmt(p['mean'], dd, pct)} ± {_fmt(p['std'], dd, pct)}" for p in points}
                rows.append([f"`{family}`", METRIC_LABEL[metric], *(at.get(f, "") for f in fractions)])
    budget = ev["protocol"].get("fraction_budget")
    how = {
        "steps": "Every fraction trained for the optimizer steps of the whole training pool (cycling through its "
        "images; `finetune_multitask.fraction_budget: steps`), so the curve varies the data, not the optimisation.",
        "epochs": "Every fraction trained for the same epochs over its images (`finetune_multitask.fraction_budget: "
        "epochs`), so P % of the images also had P % of the optimizer steps: the curve mixes less data with "
        "less training.",
    }.get(budget, "How many optimizer steps each fraction took is not recorded in this evaluation.")
    return [
        "## Data efficiency (metric vs share of labelled training images)",
        "",
        how,
        "",
        _link(fig, out_md),
        "",
        _table(["Variant", "Metric", *(f"{_percent_label(f)} of the images" for f in fractions)], rows),
        "",
        "Significance at each training fraction (paired, same test images):",
        "",
        *significance(ev, d, ("data efficiency",)),
        "",
    ]


def _paper2_section(
    ev: Mapping[str, Any], figures_dir: Path, out_md: Path, d: int, attention_dir: Path | None
) -> list[str]:
    names = _has(ev, "age_group_acc")
    ensembles = [n for n in names if "members" in ev["variants"][n]]
    show = [n for n in names if "-group" in n and n not in ensembles] + ensembles
    if not show:
        return []
    edges = ev["protocol"]["age_group_edges"]
    lines = [
        "## Second paper: age groups, gender and the ensemble",
        "",
        f"Age groups: <{edges[0]:g}, "
        + ", ".join(f"{a:g}–{b:g}" for a, b in itertools.pairwise(edges))
        + f", {edges[-1]:g}+ years; AABD = mean |predicted − true group index|. The paper's numbers are "
        "UTKFace with its own (unconfirmed) buckets and a random split: not comparable with ours.",
        "",
        _table(
            ["Variant", "Age-group acc. %", "AABD", "Gender acc. %"],
            [[f"`{v}`", *_cells(ev, v, ("age_group_acc", "age_aabd", "gender_acc"), d)] for v in show],
        ),
        "",
        "Paper (UTKFace): " + "; ".join(f"{k} {a} % / {g} %" for k, (a, g) in PAPER2.items()) + " (group / gender).",
        "",
    ]
    target = (ensembles or show)[0]
    conf = ev["variants"][target]["breakdown"].get("age_group_confusion")
    if conf:
        fig = plot_confusion(
            conf["bands"], conf["counts"], f"age groups, {target} (all seeds)", figures_dir / "confusion.png"
        )
        lines += [_link(fig, out_md), ""]
    if attention_dir is not None and attention_dir.is_dir():
        lines += [_link(p, out_md) for p in sorted(attention_dir.glob("attention-*.png"))] + [""]
    return lines


def val_mean(ev: Mapping[str, Any], name: str, metric: str) -> float:
    """A variant's validation metric, averaged over its seeds (how a "best variant" is chosen)."""
    values = [
        r["val"][metric]
        for run, r in ev["runs"].items()
        if run.rsplit("-s", 1)[0] == name and metric in r.get("val", {})
    ]
    return float(np.mean(values)) if values else float("-inf")


def _baselines(base: Mapping[str, Any], d: int, metrics: Sequence[str] | None = None) -> str:
    """The image-blind baselines of the metrics the variants report (all the data set has labels
    for when ``metrics`` is None): no attribute baseline in a report without an attribute task."""

    def shown(m: str) -> bool:
        return base.get(m) is not None and (metrics is None or m in metrics)

    parts = []
    if shown("gender_acc"):
        parts.append(f"majority gender {_fmt(base['gender_acc'], d, True)} %")
    if shown("age_mae"):
        parts.append(f"training-mean age MAE {_fmt(base['age_mae'], d)} years")
    if shown("landmark_nme"):
        parts.append(f"template landmarks NME {_fmt(base['landmark_nme'], 4)}")
    if shown("attr_acc"):
        parts.append(f"per-attribute training majority {_fmt(base['attr_acc'], d, True)} % mean attribute accuracy")
    return ", ".join(parts) or "none (no labels)"


def _casia_share(pretrain: Mapping[str, Any]) -> str:
    """This run's identity set as a share of CASIA-WebFace's people and images."""
    people, images = pretrain.get("identities"), pretrain.get("images")
    if not isinstance(people, int) or not isinstance(images, int):
        return ""
    people_share, image_share = people / CASIA_PEOPLE, images / CASIA_IMAGES
    return f": this run's set is {people_share:.1%} of its people and {image_share:.1%} of its images"


def _images(pretrain: Mapping[str, Any]) -> str:
    return f" and {pretrain['images']:,} images" if "images" in pretrain else ""


def _pretrain_trend(rows: Sequence[Mapping[str, float]], d: int) -> str:
    """Where verification stood at the last epochs: still rising or flat (the curve is the figure)."""
    pts = [r for r in rows if "verify_acc" in r]
    if len(pts) < 2:
        return ""
    last, best = pts[-1], max(pts, key=lambda r: r["verify_acc"])
    train = f", training identity accuracy {_fmt(last['train_id_acc'], d, True)} %" if "train_id_acc" in last else ""
    return (
        f" After {int(last['epoch'])} epochs{train}; verification peaked at "
        f"{_fmt(best['verify_acc'], d, True)} % in epoch {int(best['epoch'])} (figure below)."
    )


def _pair_list_text(pretrain: Mapping[str, Any], d: int) -> str:
    listed = pretrain.get("pair_list")
    if not listed:
        return ""
    return (
        f" On the external list `{listed['file']}` ({listed['list_pairs']} pairs, {listed['list_pairs_missing']} "
        f"left out: an image not in the aligned store; threshold chosen on the other folds): "
        f"{_fmt(listed['list_acc'], d, True)} % ± {_fmt(listed['list_acc_std'], d, True)}; none of its people was "
        "trained on."
    )


def _paper_header(data: Mapping[str, Any]) -> Sequence[str]:
    return PAPER_HEADER if data["finetune"]["source"] == "agedb" else NOT_COMPARABLE_HEADER


# Published on AgeDB's subject-exclusive 5-split protocol (Paplhám & Franc, CVPR 2024) [quoted].
AGEDB_PROTOCOL_MAE = {"FaRL + linear head": 5.64, "ResNet-50, cross-entropy (ImageNet)": 5.81}


def on_agedb_protocol(data: Mapping[str, Any]) -> bool:
    """Whether this run used AgeDB's published subject-exclusive folds, the only protocol on which
    the report sets our age MAE beside published numbers."""
    split = data.get("split", {})
    return data["finetune"]["source"] == "agedb" and split.get("finetune_protocol") == "folds"


def protocol_paragraph(
    data: Mapping[str, Any],
    n: Mapping[str, int],
    proto: Mapping[str, Any],
    ev_comparisons: Sequence[Mapping[str, Any]] = (),
) -> str:
    """What the numbers were measured on: both data roles, what the split groups by, the statistics."""
    pre, fin, split = data["pretrain"], data["finetune"], data.get("split", {})
    unit = split.get("finetune_unit", "identity")
    grouping = "identity-disjoint" if unit == "identity" else f"grouped by {unit}"
    how = {
        "identity": "pools drawn over the groups",
        "official": "the data set's official partition",
        "file": "a published split file",
        "folds": f"the published folds of `{split.get('finetune_protocol_file', '')}`, split "
        f"{split.get('finetune_protocol_index')}",
    }[split.get("finetune_protocol", "identity")]
    seeds = proto["seeds"]
    people = split.get("pretrain", {}).get("pretrain", {}).get("identities", "?")
    return (
        f"**Data and protocol.** Identity pretraining on `{pre['dataset']}` (source `{pre['source']}`, {people} "
        f"people); fine-tuning and test on `{fin['dataset']}` (source `{fin['source']}`): split {grouping}, "
        f"{how}; no person is in both roles{_mapping(split)}. {n['test']} test and {n['val']} validation images. "
        "Every cell is "
        f"**mean ± std over {len(seeds)} seeds** ({', '.join(map(str, seeds))}; sample std) "
        f"**[{proto['confidence']:.0%} CI]**, {_interval_text(proto)}. Seeds vary initialisation, batch order and "
        "augmentation; split and identity pretraining are fixed. Metrics: gender accuracy, age MAE (years), landmark "
        "NME (mean point error / inter-ocular distance of the five aligned points). Comparisons are paired "
        f"bootstraps on the same test images, resampling the same {_unit(proto)} for both models"
        f"{_seed_level(ev_comparisons)}; *significant* means the CI of the difference excludes 0, which is the same "
        f"as p < {1 - proto['confidence']:.2g} (p inverts that interval), and the Holm correction is made within "
        "each question (Table 1, Table 2, data efficiency, second paper, third paper), named beside each verdict."
    )


def _mapping(split: Mapping[str, Any]) -> str:
    """Which people the roles were known to share (identities are named per data set)."""
    text = split.get("identity_mapping")
    return f" (people shared by the two data sets: {text})" if text else ""


def _seed_level(comparisons: Sequence[Mapping[str, Any]]) -> str:
    """How the comparisons treated seeds: resampled too (two-level) where variants had several."""
    kinds = {c.get("resampled") for c in comparisons if c.get("status") == "ok"}
    if kinds == {"seeds and clusters"}:
        return " and, independently for each model, its training seeds (two-level: a claim about the method)"
    if "seeds and clusters" in kinds:
        return " and, where a variant has several, its training seeds (two-level)"
    return " (one seed per variant: seeds are not resampled)"


def _unit(proto: Mapping[str, Any]) -> str:
    unit = proto.get("cluster_unit", "image")
    plural = {"person": "people", "person or byte-identical image group": "people or byte-identical image groups"}
    return f"{proto['clusters']} {plural.get(unit, unit + 's')}" if "clusters" in proto else "images"


def _interval_text(proto: Mapping[str, Any]) -> str:
    """Which bootstrap the CIs are, and over what unit: images of one person are not independent."""
    unit = _unit(proto)
    if proto.get("interval") == "seeds_and_clusters":
        how = f"a two-level bootstrap that draws the seeds and the test set's {unit} (all images of each)"
    else:
        how = f"a bootstrap over the test set's {unit} (all images of each), of the seed-averaged metric"
    clusters = "" if proto.get("cluster_unit", "image") == "image" else " (a cluster's images are not independent)"
    return f"{how}{clusters}; expanded percentile interval, {proto['bootstrap']} resamples"


def protocol_notes(data: Mapping[str, Any]) -> list[str]:
    """Warnings a reader needs: synthetic faces, landmark targets from MTCNN, incomparable paper columns."""
    fin = data["finetune"]
    notes = []
    if fin["source"] == "synthetic":
        notes.append(
            "These faces are the embedded **synthetic** sets (two sets of different people and styles: a studio-like "
            "identity set and a wilder attribute set): the numbers show that every stage learns and how the "
            "statistics read, not how well a method works on real faces."
        )
    mtcnn = data.get("align", {}).get("landmarks_from", {}).get("mtcnn", 0)
    if mtcnn:
        notes.append(
            f"Landmark targets of {mtcnn} fine-tuning crops come from MTCNN: there, **NME measures agreement with "
            "MTCNN**, not landmark accuracy."
        )
    if fin["source"] != "agedb":
        notes.append(
            f"The paper columns are the first paper's AgeDB numbers (split not stated, one run): **not comparable** "
            f"with ours on `{fin['dataset']}`; they are shown for orientation only."
        )
    elif on_agedb_protocol(data):
        published = "; ".join(f"{k} {v:.2f}" for k, v in AGEDB_PROTOCOL_MAE.items())
        notes.append(
            "AgeDB on its published subject-exclusive protocol: this run is one of its 5 splits; the protocol's "
            f"result is the mean over the 5 splits' test folds (`faceattr protocol-summary`). Published age MAE on "
            f"it, mean over the 5 splits: {published} (Paplhám & Franc, CVPR 2024, quoted)."
        )
    else:
        notes.append(
            "AgeDB on a split other than its published subject-exclusive protocol: no published number is "
            "comparable (the first paper does not state its split)."
        )
    return [line for note in notes for line in ("", f"> {note}")]


def _attribute_section(ev: Mapping[str, Any], d: int) -> list[str]:
    names = _has(ev, "attr_acc")
    if not names:
        return []
    best = max(names, key=lambda n: val_mean(ev, n, "attr_acc"))  # chosen on validation, never on test
    per = ev["variants"][best]["breakdown"].get("attributes", {})
    lines = [
        "## Attributes (third paper's table)",
        "",
        f"Mean attribute accuracy at threshold 0.5 (not tuned on val) of `{best}`, the variant best on "
        "**validation** mean attribute accuracy, on test: "
        f"{cell(ev['variants'][best]['attr_acc'], 'attr_acc', d)}; LNet+ANet reported {PAPER3_CELEBA_MEAN_ACC:g} % "
        "on the full CelebA test partition (ours is this run's split).",
        "",
        _table(
            ["Attribute", "accuracy %", "majority baseline %", "balanced accuracy %", "positive share %"],
            [
                [
                    a,
                    _fmt(v["acc"], d, True),
                    _fmt(v.get("majority_acc"), d, True),
                    _fmt(v["balanced_acc"], d, True),
                    _fmt(v["positive_rate"], d, True),
                ]
                for a, v in per.items()
            ],
        ),
        "",
    ]
    majority = [v["majority_acc"] for v in per.values() if "majority_acc" in v]
    if majority:
        beaten = sum(v["acc"] > v["majority_acc"] for v in per.values() if "majority_acc" in v)
        lines[4:4] = [
            f"Predicting each attribute's majority value in the training split, for every image, scores "
            f"{_fmt(float(np.mean(majority)), d, True)} % mean accuracy on the same test images; "
            f"`{best}` beats that baseline on {beaten} of {len(majority)} attributes (balanced accuracy, "
            "50 % for a constant answer, shows what the rare attributes' accuracies hide).",
            "",
        ]
    return lines


def calibration_section(ev: Mapping[str, Any]) -> list[str]:
    """Per variant, on test: the ECE of its gender answers and the share of true ages within its
    age ± spread, with the calibration chosen on validation (what predict and serving answer) and
    as the network said; mean ± std over seeds. Empty where no variant was calibrated."""
    rows = []
    for name, st in ev["variants"].items():
        cal = st.get("calibration") or {}
        if st.get("status") != "ok" or not cal:
            continue

        metrics = ("gender_ece_uncalibrated", "gender_ece", "age_1sd_coverage_uncalibrated", "age_1sd_coverage")
        rows.append(f"| `{name}` | " + " | ".join(_percent_cell(cal.get(m)) for m in metrics) + " |")
    if not rows:
        return []
    return [
        "## Calibration (test)",
        "",
        "Gender: expected calibration error (15 confidence bins, %) of the network's probabilities and after "
        "temperature scaling chosen on validation; age: the share (%) of true ages within the predicted age ± its "
        "spread (DLDL and age-group heads; 68.3 % is a calibrated standard deviation), as the network said and with "
        "the spread scaled on validation. The calibrated values are what `faceattr predict` and serving answer.",
        "",
        "| Variant | Gender ECE, network | Gender ECE, calibrated | Age ±1σ coverage, network "
        "| Age ±1σ coverage, calibrated |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def _percent_cell(stat: Mapping[str, Any] | None) -> str:
    return "" if not stat else f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"
