"""The curve files `dvc plots show` reads, the seed-averaged curves the figures draw, and the
offline page template that keeps `dvc plots show` off the network."""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faceattr.io import atomic_path, write_rows_csv


def read_curves(directory: Path) -> dict[str, list[dict[str, float]]]:
    """Per-run learning curves written by finetune_multitask (``<variant>-s<seed>.csv``)."""
    return {path.stem: read_curve(path) for path in sorted(directory.glob("*.csv"))}


def read_curve(path: Path) -> list[dict[str, float]]:
    """One per-epoch CSV as rows of floats (empty cells left out)."""
    with path.open() as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def mean_curves(curves: Mapping[str, list[dict[str, float]]]) -> dict[str, list[dict[str, float]]]:
    """Each variant's curve averaged over its seeds (runs ``<variant>-s<seed>``), per epoch."""
    grouped: dict[str, list[list[dict[str, float]]]] = {}
    for run, rows in curves.items():
        if rows:
            grouped.setdefault(re.sub(r"-s\d+$", "", run), []).append(rows)
    out = {}
    for variant, runs in grouped.items():
        epochs = min(len(r) for r in runs)
        out[variant] = [
            {k: sum(r[e][k] for r in runs) / len(runs) for k in runs[0][e] if all(k in r[e] for r in runs)}
            for e in range(epochs)
        ]
    return out


CURVE_COLUMNS = ("epoch", "variant", "train_loss", "val_gender_acc", "val_age_mae", "val_age_cs5", "val_landmark_nme")


def write_dvc_curves(curves: Mapping[str, list[dict[str, float]]], path: Path) -> None:
    """Seed-averaged curves in one long CSV (a row per variant and epoch, empty where a task is absent).

    The top-level plots in dvc.yaml draw one chart per metric from it, a line per variant, with
    the ``by_variant`` template in ``.dvc/plots``.
    """
    rows = [
        {c: {**row, "variant": name}.get(c, "") for c in CURVE_COLUMNS} for name, rs in curves.items() for row in rs
    ]
    write_rows_csv(rows, path)


def write_data_efficiency(ev: Mapping[str, Any], path: Path) -> None:
    """Data-efficiency points in one long CSV for ``dvc plots`` (x fraction, a line per family)."""
    rows = []
    for family, metrics in ev["data_efficiency"].items():
        for metric, points in metrics.items():
            for p in points:
                rows.append({"variant": family, "metric": metric, "fraction": p["fraction"], metric: p["mean"]})
    columns = ("fraction", "variant", "metric", "gender_acc", "age_mae", "landmark_nme")
    write_rows_csv([{c: r.get(c, "") for c in columns} for r in rows], path, columns)


OFFLINE_PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>faceattr plots</title>
    <script>%s</script>
    <style>table { border-spacing: 15px; }</style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def write_offline_template(path: Path) -> None:
    """An HTML template for ``dvc plots show`` with Vega, Vega-Lite and Vega-Embed inlined.

    DVC's default page loads them from a CDN and renders blank offline; ``.dvc/config`` points
    ``plots.html_template`` here. The ``{scripts}`` placeholder is left out on purpose, so DVC's
    CDN script tags are never inserted.
    """
    import vl_convert

    bundle = vl_convert.javascript_bundle().replace("</script", "<\\/script")
    with atomic_path(path) as tmp:
        tmp.write_text(OFFLINE_PAGE.replace("%s", bundle, 1), encoding="utf-8")
