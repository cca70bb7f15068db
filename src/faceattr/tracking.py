"""MLflow observes; DVC records. One run per stage execution and one per fine-tuning variant.

Tracking is on unless ``FACEATTR_TRACKING=off``. The store is ``MLFLOW_TRACKING_URI`` when set,
else a local SQLite file ``mlflow.db`` in the working directory (browse it with ``faceattr ui``).
DVC stages are separate processes, so every run of one pipeline commit is linked to a parent run
found (or created) by the tag ``faceattr.pipeline`` = git commit; MLflow's UI nests them under it.
Outputs written for DVC never depend on whether tracking is on.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from faceattr.config import flatten
from faceattr.distributed import current

log = logging.getLogger(__name__)
EXPERIMENT = "faceattr"
DEFAULT_URI = "sqlite:///mlflow.db"


def enabled() -> bool:
    """Whether runs are recorded: not with ``FACEATTR_TRACKING=off`` (tests), nor on torchrun ranks > 0."""
    if current().rank != 0:
        return False
    return os.environ.get("FACEATTR_TRACKING", "on").lower() not in ("off", "0", "false", "no")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def git_commit() -> str:
    """Current commit (with ``-dirty`` for uncommitted changes), or ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def metric_name(name: str) -> str:
    """MLflow accepts alphanumerics, ``_ - . / :`` and spaces in names; anything else becomes ``_``."""
    return re.sub(r"[^\w\-./: ]", "_", name)


class Run:
    """What a stage may log; every method is a no-op when tracking is off."""

    def __init__(self, client: Any = None, run_id: str | None = None) -> None:
        self._client, self.run_id = client, run_id

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numeric metrics (nested dicts flattened to dotted names) in one batch call."""
        if self._client is None:
            return
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        flat = {
            k: float(v) for k, v in flatten(metrics).items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        batch = [Metric(metric_name(k), v, now_ms, step or 0) for k, v in flat.items()]
        for i in range(0, len(batch), 1000):
            self._client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def log_curve(self, rows: list[Mapping[str, float]], step_key: str = "epoch") -> None:
        """Log a per-epoch history as metric series in batched calls."""
        for row in rows:
            self.log_metrics({k: v for k, v in row.items() if k != step_key}, step=int(row[step_key]))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self._client is None or not Path(path).exists():
            return
        if Path(path).is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self._client is not None:
            for k, v in tags.items():
                self._client.set_tag(self.run_id, k, v)


def _client() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.tracking import MlflowClient
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # if the user points at ./mlruns
    return MlflowClient(tracking_uri())


def _experiment_id(client: Any) -> str:
    exp = client.get_experiment_by_name(EXPERIMENT)
    return exp.experiment_id if exp is not None else client.create_experiment(EXPERIMENT)


def _parent_run(client: Any, experiment_id: str, commit: str) -> str:
    """The pipeline run of this commit, created (already FINISHED) on first use."""
    found = client.search_runs(
        [experiment_id],
        f"tags.`faceattr.pipeline` = '{commit}' and tags.`faceattr.stage` = 'pipeline'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"pipeline {commit[:12]}",
        tags={"faceattr.pipeline": commit, "faceattr.stage": "pipeline"},
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


@contextmanager
def tracked_run(
    stage: str,
    params: Mapping[str, Any],
    variant: str | None = None,
    params_hash: str = "",
    tags: Mapping[str, str] | None = None,
) -> Iterator[Run]:
    """Start a run for ``stage`` (and ``variant``), log ``params``, end it FINISHED or FAILED.

    ``tags`` are extra run tags (a fine-tuning run's seed and variant without the seed, so the
    MLflow UI can group a variant's seeds).
    """
    if not enabled():
        yield Run()
        return
    client = _client()
    experiment_id = _experiment_id(client)
    commit = git_commit()
    run_tags = {
        "faceattr.stage": stage,
        "faceattr.pipeline": commit,
        "faceattr.params_hash": params_hash,
        "mlflow.source.git.commit": commit.removesuffix("-dirty"),
        "mlflow.parentRunId": _parent_run(client, experiment_id, commit),
    }
    if variant:
        run_tags["faceattr.variant"] = variant
    run_tags.update(tags or {})
    name = f"{stage}/{variant}" if variant else stage
    run = client.create_run(experiment_id, run_name=name, tags=run_tags)
    tracker = Run(client, run.info.run_id)
    from mlflow.entities import Param

    flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
    for i in range(0, len(flat), 100):
        client.log_batch(run.info.run_id, params=flat[i : i + 100])
    log.info("MLflow run %s (%s) in %s", run.info.run_id, name, tracking_uri())
    try:
        yield tracker
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")


def find_variant_run(variant: str) -> Run:
    """The latest fine-tuning run of ``variant`` for this commit, so evaluate can add test metrics."""
    if not enabled():
        return Run()
    client = _client()
    commit = git_commit()
    found = client.search_runs(
        [_experiment_id(client)],
        f"tags.`faceattr.variant` = '{variant}' and tags.`faceattr.stage` = 'finetune_multitask' "
        f"and tags.`faceattr.pipeline` = '{commit}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return Run(client, found[0].info.run_id) if found else Run()
