"""Many runs on one machine with DVC's own queue (issue "Scale out"): two experiments queued with
``dvc exp run --queue`` and run at once by ``dvc queue start -j 2`` with ``FACEATTR_JOBS=2``, as
docs/scale.md says. Both succeed, no stage warns that it shares the cores unawares, and every
fine-tuning run of both lands in the project's own tracking store (not in the temporary copies
DVC runs queued experiments in), FINISHED, with its logged model; each experiment's registered
model version arrives too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, tiny_params

VARIANTS = ["face_resnet18-identity-gender+age+landmarks", "face_resnet18-none-gender+age+landmarks"]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture
def project(tmp_path) -> Path:
    """This working tree's tracked files in a repository of their own, with tiny params committed."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "project"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    for rel in filter(None, listed.stdout.split("\0")):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("results/", "docs/img/")):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    tiny_params(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["finetune_multitask"].update(variants=VARIANTS, seeds=[0])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=faceattr", "-c", "user.email=ci@faceattr.invalid"]
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    _run(["git", "init", "-q"], root, env)
    _run([*git, "add", "-A"], root, env)
    _run([*git, "commit", "-qm", "tiny project"], root, env)
    return root


def test_dvc_queue_runs_two_experiments_at_once_into_one_store(project) -> None:
    from mlflow.tracking import MlflowClient

    from faceattr import tracking

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    env.update(FACEATTR_JOBS="2", FACEATTR_TRACKING="on", FACEATTR_DEVICE="cpu", DVC_NO_ANALYTICS="1")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])  # dvc, python
    dvc = [str(Path(sys.executable).parent / "dvc")]
    for seed in (0, 1):
        _run(
            [*dvc, "exp", "run", "--queue", "-n", f"q{seed}", "-S", f"finetune_multitask.seeds=[{seed}]"], project, env
        )
    _run([*dvc, "queue", "start", "-j", "2"], project, env)
    deadline = time.monotonic() + 1500
    while True:
        status = _run([*dvc, "queue", "status"], project, env)
        if not any(word in status for word in ("Queued", "Running")):
            break
        assert time.monotonic() < deadline, f"the queue did not finish in time:\n{status}"
        time.sleep(5)
    _run([*dvc, "queue", "stop", "--kill"], project, env) if "Running" in status else None
    rows = {line.split()[1]: line for line in status.splitlines() if line.split()[1:2] in (["q0"], ["q1"])}
    assert set(rows) == {"q0", "q1"} and all("Success" in r for r in rows.values()), status
    for name in ("q0", "q1"):
        logs = _run([*dvc, "queue", "logs", name], project, env)
        assert "Running stage 'finetune_multitask'" in logs and "Running stage 'evaluate'" in logs, logs[-3000:]
        assert "FACEATTR_JOBS is not set" not in logs, logs[-3000:]
    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    assert experiment is not None, "no fine-tuning run reached the project's store"
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert sorted(r.info.run_name for r in runs) == sorted(f"{v}-s{s}" for v in VARIANTS for s in (0, 1))
    assert all(r.info.status == "FINISHED" for r in runs)
    assert experiment.artifact_location.startswith((project / "mlruns").as_uri())
    import mlflow

    mlflow.set_tracking_uri(uri)
    logged = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
    assert sorted(m.source_run_id for m in logged) == sorted(r.info.run_id for r in runs)
    for model in logged:
        assert Path(model.artifact_location.removeprefix("file://")).is_dir(), model.artifact_location
    # each experiment's evaluate registered its best model: one version each, from its own runs
    versions = client.search_model_versions("name='faceattr-gender+age+landmarks'")
    assert len(versions) == 2 and {v.run_id for v in versions} <= {r.info.run_id for r in runs}
    assert len({v.run_id for v in versions}) == 2  # q0 trains seed 0, q1 seed 1: two different runs
