"""The Markdown report: what `build_report` writes, section by section, from what evaluate,
pretrain_identity, the probes and the curves recorded. Its parts: :mod:`~faceattr.report.tables`,
:mod:`~faceattr.report.figures`, :mod:`~faceattr.report.sections`, :mod:`~faceattr.report.curves`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from faceattr.config import ReportConfig
from faceattr.io import atomic_path
from faceattr.report.curves import (
    mean_curves,
    read_curve,
    read_curves,
    write_data_efficiency,
    write_dvc_curves,
    write_offline_template,
)
from faceattr.report.figures import _link, plot_curves, plot_pretraining
from faceattr.report.sections import (
    _attribute_section,
    _baselines,
    _breakdown_lines,
    _casia_share,
    _efficiency_section,
    _images,
    _pair_list_text,
    _paper2_section,
    _paper_header,
    _pretrain_trend,
    calibration_section,
    probe_section,
    protocol_notes,
    protocol_paragraph,
    summary_section,
)
from faceattr.report.tables import (
    MAIN_TASKS,
    METRIC_LABEL,
    PAPER_PRETRAIN_SCALE,
    TABLE1_QUESTIONS,
    _cells,
    _fmt,
    _has,
    _table,
    _variant,
    best_means,
    significance,
    table1,
    table2,
)


def build_report(
    evaluation: Mapping[str, Any],
    pretrain: Mapping[str, Any],
    curves: Mapping[str, list[dict[str, float]]],
    cfg: ReportConfig,
    out_md: Path,
    figures_dir: Path,
    data: Mapping[str, Any],
    attention_dir: Path | None = None,
    pretrain_curve: Sequence[Mapping[str, float]] = (),
    probe: Mapping[str, Any] | None = None,
) -> None:
    """Write the Markdown report and its figures.

    ``data`` describes the two data roles (``pretrain``/``finetune``: ``dataset``, ``source``),
    with the split stage's metrics (``split``) and the fine-tuning role's align metrics (``align``):
    the report names its protocol from them, never assumes it.
    """
    d, ev = cfg.decimals, evaluation
    mean = mean_curves(curves)
    base, n, proto = ev["baseline"]["test"], ev["images"], ev["protocol"]
    lines = [f"# {cfg.title}", "", *summary_section(ev, d), "## Protocol", ""]
    lines += [protocol_paragraph(data, n, proto, ev["comparisons"])]
    lines += protocol_notes(data)
    lines += [
        "",
        f"**Baselines that ignore the image** (same test images): "
        f"{_baselines(base, d, [m for m in ('gender_acc', 'age_mae', 'landmark_nme', 'attr_acc') if _has(ev, m)])}.",
        "",
        f"**Identity pretraining** (`pretrain_identity`, margin-softmax head): {pretrain.get('verify_folds', 10)}-fold "
        f"verification accuracy on held-out identities {_fmt(pretrain.get('verify_acc'), d, True)} % ± "
        f"{_fmt(pretrain.get('verify_acc_std'), d, True)} ({pretrain.get('identities', '?')} training identities"
        f"{_images(pretrain)}, "
        f"{pretrain.get('verify_pairs', '?')} pairs; the first paper pretrained on CASIA-WebFace's "
        f"{PAPER_PRETRAIN_SCALE}{_casia_share(pretrain)}).{_pair_list_text(pretrain, d)}"
        f"{_pretrain_trend(pretrain_curve, d)}",
        "",
    ]
    figure = plot_pretraining(pretrain_curve, figures_dir / "pretrain_identity.png")
    if figure is not None:
        lines += [_link(figure, out_md), ""]
    lines += [
        "## Table 1: pretraining (gender + age + landmarks)",
        "",
        table1(ev, d, _paper_header(data)),
        "",
        "Significance:",
        "",
        *significance(ev, d, TABLE1_QUESTIONS),
        "",
        "## Table 2: task sets (FaceResNet18, identity pretraining)",
        "",
        table2(ev, d, _paper_header(data)),
        "",
        "Significance (each multi-task variant against each variant with a subset of its tasks, on the "
        "smaller set's tasks):",
        "",
        *significance(ev, d, ("multi-task",)),
        "",
    ]
    lines += _efficiency_section(ev, figures_dir, out_md, d)
    others = ("dldl", "group", "gender-conditioned", "uncertainty", "ensemble")
    if any(c["question"].startswith(others) for c in ev["comparisons"]):
        lines += ["## Other comparisons", "", *significance(ev, d, others), ""]
    lines += _paper2_section(ev, figures_dir, out_md, d, attention_dir)
    lines += _attribute_section(ev, d)
    lines += calibration_section(ev)
    if probe:
        lines += probe_section(probe, d)
    main = next(
        (
            v
            for v in (_variant("face_resnet18", "identity", MAIN_TASKS), *_has(ev, "age_mae"))
            if ev["variants"].get(v, {}).get("status") == "ok"
        ),
        None,
    )
    if main:
        lines += ["## Breakdowns", "", *_breakdown_lines(main, ev["variants"][main], d)]
    metrics = [m for m in ("gender_acc", "age_mae", "age_group_acc", "landmark_nme", "attr_acc") if _has(ev, m)]
    lines += [
        "## All variants (test)",
        "",
        _table(
            ["Variant", *(METRIC_LABEL[m] for m in metrics)],
            [
                [f"`{v}`", *_cells(ev, v, metrics, d, best_means(ev, list(ev["variants"]), metrics))]
                for v in ev["variants"]
            ],
        ),
        "",
        "## Learning curves (validation, mean over seeds)",
        "",
    ]
    full = {k: v for k, v in mean.items() if "-frac" not in k}
    lines += [_link(p, out_md) for p in plot_curves(full, figures_dir)]
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


__all__ = [
    "TABLE1_QUESTIONS",
    "build_report",
    "mean_curves",
    "read_curve",
    "read_curves",
    "significance",
    "table1",
    "table2",
    "write_data_efficiency",
    "write_dvc_curves",
    "write_offline_template",
]
