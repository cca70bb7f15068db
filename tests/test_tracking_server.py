"""A tracking server several jobs share (issue "Scale out"): a real PostgreSQL (Debian's package)
behind ``mlflow server`` on 127.0.0.1, two fine-tuning jobs writing to it at once, and every run,
curve, test metric, logged model and registered model found there afterwards.

It needs PostgreSQL's server programs (``initdb``, ``pg_ctl``: ``apt-get install postgresql``,
which ``.ci/run`` does where it can) and ``psycopg2`` (the dev extra); it skips, saying which is
missing, where they are not."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT


def _pg_bin() -> Path | None:
    """The folder of PostgreSQL's server programs: Debian's (kept off PATH), else initdb's on PATH."""
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    found = versions[-1] if versions else shutil.which("initdb")
    folder = Path(found).parent if found else None
    return folder if folder and all((folder / p).is_file() for p in ("pg_ctl", "createdb")) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres() -> Iterator[str]:
    """A PostgreSQL server of its own on a free 127.0.0.1 port; yields its database URI."""
    pg = _pg_bin()
    if pg is None:
        pytest.skip("PostgreSQL's server programs are not installed (apt-get install postgresql)")
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install -e '.[dev]' installs it)")
    # PostgreSQL refuses to run as root: as root, the server runs as Debian's `postgres` user
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: PostgreSQL cannot be started as another user")
    home = Path(tempfile.mkdtemp(prefix="faceattr-pg-"))
    if as_user:
        shutil.chown(home, "postgres")
    data, port = home / "data", _free_port()

    def pg_run(*cmd: str) -> None:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{cmd[0]}: {done.stdout}{done.stderr}"

    pg_run(str(pg / "initdb"), "-D", str(data), "-U", "faceattr", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1"
    pg_run(str(pg / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(home / "log"), "-w", "start")
    try:
        pg_run(str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "faceattr", "mlflow")
        yield f"postgresql://faceattr@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def server(postgres, tmp_path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 over that database, serving artifacts; yields its address."""
    port = _free_port()
    log = (tmp_path / "mlflow-server.log").open("w")
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow), "server", "--backend-store-uri", postgres, "--artifacts-destination", str(tmp_path / "art")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not answer in 180 s"
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers
        proc.wait(timeout=60)
        log.close()


JOBS = {  # two jobs with their own matrix and outputs, as two `dvc queue` workers or two machines
    "a": ["face_resnet18-none-gender+age+landmarks"],
    "b": ["face_resnet18-identity-age"],
}


def _job(pipeline, folder: Path, variants: list[str]) -> str:
    """Fine-tuning, then evaluate (which adds test metrics, logs each run's model and registers
    the best per task set), as dvc.yaml chains them."""
    folder.mkdir()
    params = yaml.safe_load(pipeline["params"].read_text())
    params["finetune_multitask"].update(variants=variants, seeds=[0, 1])
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    stage = lambda name: f"{sys.executable} {ROOT / 'stages' / name}.py --params {folder / 'params.yaml'}"  # noqa: E731
    data = f"--store {pipeline['store']} --split {pipeline['split.csv']}"
    finetune = (
        f"{stage('finetune_multitask')} --all {data} --identity {pipeline['models']}/pretrain_identity/trunk.pt "
        f"--out {folder}/models --resume {folder}/ckpt --metrics {folder}/metrics --curve {folder}/plots"
    )
    evaluate = (
        f"{stage('evaluate')} --models {folder}/models {data} --out {folder}/evaluate.json "
        f"--summary {folder}/summary.json --headline {folder}/headline.json "
        f"--variant-metrics {folder}/variants --predictions {folder}/predictions"
    )
    return f"{finetune} && {evaluate}"


def test_two_jobs_on_a_postgres_backed_server_lose_nothing(pipeline, server, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    from faceattr import tracking

    env = {**os.environ, "MLFLOW_TRACKING_URI": server, "FACEATTR_TRACKING": "on", "FACEATTR_JOBS": "2"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    jobs = {
        name: subprocess.Popen(
            ["bash", "-c", _job(pipeline, tmp_path / name, variants)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, variants in JOBS.items()
    }
    for job in jobs.values():
        out, _ = job.communicate(timeout=1200)
        assert job.returncode == 0, out[-4000:]
        assert "stopped answering" not in out and "could not log" not in out, out[-4000:]

    client = MlflowClient(server)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    found = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id], max_results=1000)}
    expected = {f"{v}-s{s}" for variants in JOBS.values() for v in variants for s in (0, 1)}
    assert set(found) == expected
    epochs = yaml.safe_load(pipeline["params"].read_text())["finetune_multitask"]["optim"]["epochs"]
    for name, run in found.items():
        assert run.info.status == "FINISHED", name
        assert run.data.params["seed"] == name[-1]
        curve = client.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in curve] == list(range(1, epochs + 1)), name  # every epoch, no step 0
        test = "test_gender_acc" if "gender" in name else "test_age_mae"
        assert test in run.data.metrics, name  # added by that job's evaluate
    import mlflow

    mlflow.set_tracking_uri(server)
    logged = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
    assert sorted(m.source_run_id for m in logged) == sorted(r.info.run_id for r in found.values())
    registered = {m.name: m for m in client.search_registered_models()}
    assert set(registered) == {"faceattr-gender+age+landmarks", "faceattr-age"}
    run_ids = {r.info.run_id for r in found.values()}
    for name in registered:
        versions = client.search_model_versions(f"name='{name}'")
        assert len(versions) == 1 and versions[0].run_id in run_ids, name
