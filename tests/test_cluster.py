"""The fine-tuning matrix on a cluster (issue "Scale out"): ``faceattr matrix`` numbers the runs,
an array task trains one of them with dvc.yaml's own command, and the stage's ``--all`` then
reuses every run the tasks finished. SLURM itself is not here: its scripts run under bash with the
variables SLURM sets, and ``sbatch`` is a stand-in that records what it was asked."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

RUNS = ["face_resnet18-none-gender", "face_resnet18-identity-age"]


@pytest.fixture
def project(pipeline, tmp_path) -> Path:
    """A project folder as on a cluster's shared filesystem: dvc.yaml, the stages and params whose
    paths hold the tiny pipeline's crops, split and trunk (fine-tuning outputs still to come)."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    (root / "stages").symlink_to(ROOT / "stages")
    shutil.copytree(pipeline["models"] / "pretrain_identity", root / "models" / "pretrain_identity")
    params = yaml.safe_load(pipeline["params"].read_text())
    params["paths"].update(aligned=str(pipeline["aligned"]), splits=str(pipeline["splits"]))
    params["finetune_multitask"].update(variants=RUNS, seeds=[0, 1])
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "FACEATTR_TRACKING": "off", "FACEATTR_DEVICE": "cpu", **extra}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])  # `faceattr`
    return env


def _faceattr(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "faceattr.cli", *args]
    return subprocess.run(cmd, cwd=root, env=_env(**extra), capture_output=True, text=True, timeout=900)


def test_matrix_lists_the_runs_in_the_stage_order(project) -> None:
    listed = _faceattr(project, "matrix")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "0\tface_resnet18-none-gender-s0",
        "1\tface_resnet18-none-gender-s1",
        "2\tface_resnet18-identity-age-s0",
        "3\tface_resnet18-identity-age-s1",
    ]
    assert _faceattr(project, "matrix", "--count").stdout.strip() == "4"
    bad = _faceattr(project, "matrix", "--run", "4")
    assert bad.returncode == 1 and "the matrix has 4 runs (0 to 3)" in bad.stderr


def test_an_array_task_trains_its_run_and_the_stage_reuses_it(project) -> None:
    """``run.sbatch`` as SLURM runs task 2: run 2 of the matrix, and only it, is written where the
    stage writes it; the stage's ``--all`` afterwards reuses it and trains the other three."""
    task = subprocess.run(
        ["bash", str(ROOT / "cluster" / "slurm" / "run.sbatch")],
        cwd=project,
        env=_env(SLURM_ARRAY_TASK_ID="2", SLURM_SUBMIT_DIR=str(project)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert task.returncode == 0, task.stderr[-3000:]
    assert "run 2 of 4, face_resnet18-identity-age-s0" in task.stderr
    models = project / "models" / "finetune"
    assert sorted(p.name for p in models.iterdir()) == ["face_resnet18-identity-age-s0"]
    assert (models / "face_resnet18-identity-age-s0" / "model.pt").is_file()
    assert (project / "metrics" / "finetune" / "face_resnet18-identity-age-s0.json").is_file()
    rest = subprocess.run(stage_argv(project), cwd=project, env=_env(), capture_output=True, text=True, timeout=900)
    assert rest.returncode == 0, rest.stderr[-3000:]
    summary = re.search(r"finetune_multitask: 4 runs: (.*)", rest.stderr)
    assert summary and sorted(summary.group(1).split(", ")) == ["1 reused", "3 trained"], rest.stderr[-2000:]


def stage_argv(root: Path) -> list[str]:
    """dvc.yaml's finetune_multitask command for ``root``, as ``dvc repro`` would run it."""
    from faceattr.cli import stage_command

    argv = shlex.split(stage_command(root, "finetune_multitask"))
    return [sys.executable, *argv[1:]]


def test_submit_chains_prepare_array_and_finish(project, tmp_path) -> None:
    """``submit.sh`` with a stand-in ``sbatch``: the stages before fine-tuning, then one array task
    per run (0 to N-1) after them, then ``dvc repro`` after every task succeeded; options given to
    the script reach every job."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    fake = bin_dir / "sbatch"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\nwc -l < {log}\n')
    fake.chmod(0o755)
    script = project / "cluster" / "slurm"
    script.mkdir(parents=True)
    for name in ("submit.sh", "run.sbatch", "finish.sbatch"):
        shutil.copy(ROOT / "cluster" / "slurm" / name, script / name)
    env = _env()
    env["PATH"] = os.pathsep.join([str(bin_dir), env["PATH"]])
    done = subprocess.run(
        ["bash", str(script / "submit.sh"), "--partition=gpu"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    prepare, runs, finish = log.read_text().splitlines()
    assert prepare.startswith("--parsable --partition=gpu") and "dvc repro pretrain_identity split" in prepare
    assert "--dependency=afterok:1 --array=0-3 cluster/slurm/run.sbatch" in runs and "--partition=gpu" in runs
    assert "--dependency=afterok:2 cluster/slurm/finish.sbatch" in finish and "--partition=gpu" in finish
    assert "4 runs as array 2, finish 3" in done.stdout
    assert (project / "logs" / "slurm").is_dir()
