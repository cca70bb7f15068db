"""Jobs that share one tracking store: two processes writing to the default ``sqlite:///mlflow.db``
at once, as ``dvc queue start -j 2`` runs two experiments (issue "Scale out")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


# ---------------------------------------------------------------------------------------------
# Runs of the matrix at once (finetune_multitask.runs_per_device)

MATRIX = ["face_resnet18-none-gender+age+landmarks", "face_resnet18-identity-age"]


def _matrix_params(pipeline, tmp_path, **finetune) -> Path:
    params = yaml.safe_load(pipeline["params"].read_text())
    params["finetune_multitask"].update(variants=MATRIX, seeds=[0, 1], **finetune)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _matrix_argv(pipeline, params: Path, out: Path) -> list[str]:
    return [
        "--params", str(params), "--all",
        "--store", str(pipeline["store"]), "--split", str(pipeline["split.csv"]),
        "--identity", str(pipeline["models"] / "pretrain_identity" / "trunk.pt"),
        "--out", str(out / "models"), "--resume", str(out / "ckpt"),
        "--metrics", str(out / "metrics"), "--curve", str(out / "plots"),
    ]  # fmt: skip


def _stage(argv: list[str], jobs: str | None) -> subprocess.CompletedProcess[str]:
    """The stage as dvc.yaml runs it, with ``FACEATTR_JOBS`` set to ``jobs`` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "FACEATTR_JOBS"}
    env.update(FACEATTR_TRACKING="off", FACEATTR_DEVICE="cpu", **({"FACEATTR_JOBS": jobs} if jobs else {}))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / "finetune_multitask.py"), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_runs_trained_two_at_once_have_the_weights_they_have_one_after_another(pipeline, tmp_path) -> None:
    """The same matrix (2 variants x 2 seeds) trained one run after another in one process, and
    two runs at a time in processes of their own (runs_per_device: 2 on the CPU), every run at one
    thread both times: every run's weights and validation metrics are identical."""
    import torch

    alone, beside = tmp_path / "alone", tmp_path / "beside"
    for folder in (alone, beside):
        folder.mkdir()
    params_alone = _matrix_params(pipeline, alone)
    params_beside = _matrix_params(pipeline, beside, runs_per_device=2)
    one = _stage(_matrix_argv(pipeline, params_alone, alone), jobs="2")  # 2 cores // 2 jobs: one thread
    assert one.returncode == 0, one.stderr[-3000:]
    two = _stage(_matrix_argv(pipeline, params_beside, beside), jobs=None)  # each run: 2 cores // 2 runs
    assert two.returncode == 0, two.stderr[-3000:]
    assert "4 runs, 2 at once" in two.stderr
    names = [f"{v}-s{s}" for v in MATRIX for s in (0, 1)]
    for name in names:
        assert f"[{name}]" in two.stderr  # each run's log, prefixed with its name
        a = torch.load(alone / "models" / name / "model.pt", weights_only=True)
        b = torch.load(beside / "models" / name / "model.pt", weights_only=True)
        state_a, state_b = a["state_dict"], b["state_dict"]
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            assert torch.equal(state_a[key], state_b[key]), f"{name}: {key} differs"
        assert a["meta"] == b["meta"], name  # runs_per_device is not part of the model
        assert json.loads((alone / "metrics" / f"{name}.json").read_text()) == json.loads(
            (beside / "metrics" / f"{name}.json").read_text()
        )
    # and a second execution reuses every run from its finished state, whichever way it trained
    again = _stage(_matrix_argv(pipeline, params_alone, beside), jobs="2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 runs: 4 reused" in again.stderr


def test_a_failed_run_among_concurrent_ones_is_named_and_fails_the_stage(pipeline, tmp_path) -> None:
    """A run that fails (ImageNet weights absent, imagenet_missing: fail) stops the stage with
    one message naming it and its exit code; the run beside it finishes or is stopped."""
    params = _matrix_params(
        pipeline, tmp_path, runs_per_device=2, imagenet_missing="fail", imagenet_weights=str(tmp_path / "absent.pth")
    )
    data = yaml.safe_load(params.read_text())
    data["finetune_multitask"]["variants"] = ["resnet18-imagenet-gender", "face_resnet18-none-gender"]
    data["finetune_multitask"]["seeds"] = [0]
    params.write_text(yaml.safe_dump(data))
    done = _stage(_matrix_argv(pipeline, params, tmp_path / "out"), jobs=None)
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "run resnet18-imagenet-gender-s0 failed (exit code 1" in last, last
    assert "absent.pth" in done.stderr  # the run's own message, passed on with its prefix


@pytest.mark.parametrize(
    ("device", "per", "environ", "expected"),
    [
        ("cpu", "auto", {}, [{}]),  # a CPU trains one run at a time unless told
        ("cpu", 2, {}, [{"FACEATTR_JOBS": "2"}] * 2),  # two runs split the cores
        ("cpu", 2, {"FACEATTR_JOBS": "2"}, [{"FACEATTR_JOBS": "4"}] * 2),  # two queued jobs of two runs each
        (
            "cuda",
            2,
            {"CUDA_VISIBLE_DEVICES": "3,5"},
            [{"CUDA_VISIBLE_DEVICES": g, "FACEATTR_JOBS": "4"} for g in "3355"],
        ),
        ("cuda", "auto", {"CUDA_VISIBLE_DEVICES": "1"}, [{"CUDA_VISIBLE_DEVICES": "1", "FACEATTR_JOBS": "4"}] * 4),
        ("cuda:1", 3, {}, [{"FACEATTR_JOBS": "3"}] * 3),  # one named GPU: every slot on it
    ],
)
def test_slots_per_device(device, per, environ, expected) -> None:
    import torch

    from faceattr.train.concurrent import slots

    assert slots(per, torch.device(device), environ) == expected


@pytest.mark.parametrize("value", [0, "two", 1.5])
def test_runs_per_device_must_be_a_positive_count_or_auto(tmp_path, value) -> None:
    from faceattr.config import ConfigError, FinetuneConfig, load_section

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["finetune_multitask"]["runs_per_device"] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="runs_per_device"):
        load_section(path, "finetune_multitask", FinetuneConfig)
