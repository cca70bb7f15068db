"""Jobs that share one tracking store: two processes writing to the default ``sqlite:///mlflow.db``
at once, as ``dvc queue start -j 2`` runs two experiments (issue "Scale out")."""

from __future__ import annotations

import os
import subprocess
import sys

from faceattr import tracking

from .conftest import ROOT

# One job: several fine-tuning runs, each with params and a per-epoch curve, as the stage logs them.
JOB = """
import sys
from faceattr import tracking
job, runs, epochs = (int(a) for a in sys.argv[1:4])
for i in range(runs):
    with tracking.tracked_run("finetune_multitask", {"job": job, "i": i}, variant=f"job{job}-run{i}-s0") as run:
        for e in range(epochs):
            run.log_metrics({"val_loss": 1.0 / (e + 1), "train_loss": float(e)}, step=e)
"""


def test_two_jobs_writing_to_one_sqlite_store_lose_nothing(tmp_path) -> None:
    """Both start on a store that does not exist yet (both create its tables), then write runs,
    params and curves at the same time: every run arrives FINISHED with all its params and every
    epoch of its curves, and neither job reports the store as gone ("database is locked")."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "FACEATTR_TRACKING": "on", "FACEATTR_JOBS": "2"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    runs, epochs = 6, 10
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", JOB, str(j), str(runs), str(epochs)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for j in (0, 1)
    ]
    for job in jobs:
        _, err = job.communicate(timeout=900)
        assert job.returncode == 0, err[-3000:]
        assert "stopped answering" not in err and "is incomplete" not in err, err[-3000:]
        assert "database is locked" not in err
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    assert sorted(r.info.run_name for r in found) == sorted(f"job{j}-run{i}-s0" for j in (0, 1) for i in range(runs))
    for run in found:
        assert run.info.status == "FINISHED"
        assert {"job", "i"} <= set(run.data.params)
        for metric in ("val_loss", "train_loss"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == list(range(epochs))
