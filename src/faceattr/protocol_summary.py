"""A multi-split protocol's result: the mean over its splits' test results (AgeDB's 5 splits).

Each split is its own run of the pipeline (a DVC experiment, a commit, or a workspace folder);
each run's ``metrics/summary.json`` holds its test metrics per variant and ``metrics/split.json``
which split it was. The protocol's number is the mean over splits of each run's seed-averaged
test metric, with the sample standard deviation over splits, as Paplhám & Franc report it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY = "metrics/summary.json"
SPLIT = "metrics/split.json"


def combine(runs: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]]) -> dict[str, Any]:
    """Mean and std over splits of every variant's test metrics.

    Args:
        runs: per run name, its (summary.json, split.json) contents.

    Raises:
        ValueError: when two runs are the same split, or the runs use different protocols.
    """
    protocols = {(s.get("finetune_protocol"), s.get("finetune_protocol_file")) for _, s in runs.values()}
    if len(protocols) != 1:
        raise ValueError(f"the runs use different split protocols: {sorted(map(str, protocols))}")
    index = {name: split.get("finetune_protocol_index") for name, (_, split) in runs.items()}
    repeated = sorted({i for i in index.values() if list(index.values()).count(i) > 1}, key=str)
    if repeated:
        raise ValueError(f"split(s) {repeated} appear in more than one run: {index}")
    variants: dict[str, dict[str, dict[str, Any]]] = {}
    for name, (summary, _) in runs.items():
        for variant, metrics in summary.get("variants", {}).items():
            for metric, stat in metrics.items():
                entry = variants.setdefault(variant, {}).setdefault(metric, {"per_split": {}})
                entry["per_split"][str(index[name])] = stat["mean"]
    for metrics in variants.values():
        for entry in metrics.values():
            values = np.array(list(entry["per_split"].values()), dtype=float)
            entry.update(
                splits=len(values),
                mean=float(values.mean()),
                std=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            )
    ((protocol, file),) = protocols
    return {"protocol": protocol, "protocol_file": file, "runs": index, "variants": variants}


def _experiment_revs() -> dict[str, str]:
    import dvc.api

    return {r["Experiment"]: r["rev"] for r in dvc.api.exp_show() if r.get("Experiment")}


def read_run(ref: str, revs: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run's (summary, split) metrics from a folder holding ``metrics/``, a DVC experiment's name
    or a git revision."""
    folder = Path(ref)
    if folder.is_dir():
        return tuple(json.loads((folder / p).read_text()) for p in (SUMMARY, SPLIT))  # type: ignore[return-value]
    rev = (revs or {}).get(ref, ref)
    out = []
    for path in (SUMMARY, SPLIT):
        proc = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
        if proc.returncode:
            raise ValueError(f"'{ref}' is not a folder with {path}, a DVC experiment or a git revision holding it")
        out.append(json.loads(proc.stdout))
    return out[0], out[1]


def summarise_runs(refs: Sequence[str]) -> dict[str, Any]:
    """Read every run (folders need no DVC; names are looked up among this repository's experiments)."""
    revs = _experiment_revs() if any(not Path(r).is_dir() for r in refs) else {}
    return combine({ref: read_run(ref, revs) for ref in refs})
