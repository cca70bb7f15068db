"""MLflow tracking: runs with params, tags and curves; FAILED on a crash; off means no store at all."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from faceattr import tracking


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEATTR_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _runs(client, stage: str):
    exp = client.get_experiment_by_name(tracking.experiment_of(stage))
    return client.search_runs([exp.experiment_id], f"tags.`faceattr.stage` = '{stage}'")


def test_run_records_params_curves_and_tags(store, tmp_path) -> None:
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello")
    with tracking.tracked_run("finetune_multitask", {"optim": {"lr": 0.001}}, variant="v1") as run:
        run.log_curve([{"epoch": 1.0, "val_age_mae": 9.0}, {"epoch": 2.0, "val_age_mae": 7.5}])
        run.log_metrics({"test": {"gender_acc": 0.9}})
        run.log_artifact(artifact)
    (found,) = _runs(store, "finetune_multitask")
    assert found.info.status == "FINISHED"
    assert found.info.run_name == "v1"  # the variant alone: the runs table's name column is narrow
    assert found.data.params["optim.lr"] == "0.001"
    assert found.data.tags["faceattr.variant"] == "v1"
    assert found.data.metrics == {"val_age_mae": 7.5, "test.gender_acc": 0.9}
    history = store.get_metric_history(found.info.run_id, "val_age_mae")
    assert [(m.step, m.value) for m in history] == [(1, 9.0), (2, 7.5)]
    assert "mlflow.parentRunId" not in found.data.tags  # flat: every variant visible in the runs table
    assert found.data.tags["faceattr.pipeline"] == tracking.git_commit()
    assert [a.path for a in store.list_artifacts(found.info.run_id)] == ["note.txt"]
    exp = store.get_experiment_by_name(tracking.EXPERIMENT)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs table
    view = json.loads(exp.tags["mlflow.sharedViewState.faceattr"])  # the runs table's default columns
    assert view["selectedColumns"][:2] == ["metrics.`test_gender_acc`", "metrics.`test_age_mae`"]
    assert "params.`seed`" in view["selectedColumns"]
    from faceattr.cli import runs_page

    page = runs_page("127.0.0.1", 5000)
    assert page.endswith(f"/{exp.experiment_id}/runs?viewStateShareKey=faceattr&workflowType=machine_learning")
    assert "faceattr.params_hash" not in found.data.tags


def test_evaluate_finds_the_run_by_the_id_in_its_outputs_not_by_commit(store, tmp_path, monkeypatch) -> None:
    link = tmp_path / "models" / "v1-s0" / tracking.RUN_LINK
    with tracking.tracked_run("finetune_multitask", {"lr": 0.1}, variant="v1-s0") as run:
        tracking.write_run_link(run, link)
    monkeypatch.setattr(tracking, "git_commit", lambda: "a-later-commit")  # a commit between the stages
    restored: list[str] = []
    found = tracking.linked_run(link, "v1-s0", lambda r: restored.append(r.run_id))
    found.log_metrics({"test_age_mae": 6.0})
    assert found.run_id == run.run_id and restored == []
    assert store.get_run(run.run_id).data.metrics["test_age_mae"] == 6.0


def test_a_run_missing_from_the_store_is_recreated_and_marked_restored(store, tmp_path) -> None:
    link = tmp_path / tracking.RUN_LINK
    link.write_text('{"mlflow_run_id": "0123456789abcdef0123456789abcdef", "tracking_uri": "elsewhere"}')
    run = tracking.linked_run(link, "v2-s1", lambda r: r.log_params({"lr": 0.5}))
    run.log_metrics({"test_gender_acc": 0.75})
    got = store.get_run(run.run_id)
    assert got.data.tags["faceattr.restored"] == "true" and got.data.tags["faceattr.variant"] == "v2-s1"
    assert got.data.tags["faceattr.restored_from"] == "0123456789abcdef0123456789abcdef"
    assert got.data.params == {"lr": "0.5"} and got.data.metrics == {"test_gender_acc": 0.75}
    assert got.info.status == "FINISHED"


def test_crash_marks_run_failed(store) -> None:
    with pytest.raises(RuntimeError), tracking.tracked_run("align", {"size": 64}):
        raise RuntimeError("boom")
    (found,) = _runs(store, "align")
    assert found.info.status == "FAILED"


def test_tracking_off_writes_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FACEATTR_TRACKING", "off")
    monkeypatch.chdir(tmp_path)
    with tracking.tracked_run("split", {"a": 1}) as run:
        run.log_metrics({"x": 1.0})
    assert list(tmp_path.iterdir()) == []


def test_metric_names_are_made_acceptable_to_mlflow() -> None:
    assert tracking.metric_name("variants.face_resnet18-identity-gender+age.test.age_mae") == (
        "variants.face_resnet18-identity-gender_age.test.age_mae"
    )


def _dead_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_store_at_the_start_is_one_line_naming_it(tmp_path) -> None:
    uri = f"http://127.0.0.1:{_dead_port()}"
    env = {**os.environ, "FACEATTR_TRACKING": "on", "MLFLOW_TRACKING_URI": uri}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"evaluate": {}, "finetune_multitask": {}}))
    script = (
        "from faceattr.stage import run\nfrom faceattr.tracking import tracked_run\n"
        "def main(argv):\n    with tracked_run('split', {'a': 1}):\n        pass\nrun(main)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"MLflow tracking store '{uri}' cannot be reached" in lines[0] and "FACEATTR_TRACKING=off" in lines[0]


def test_store_lost_mid_training_costs_no_work(store, tmp_path, caplog) -> None:
    from mlflow.tracking import MlflowClient

    out = tmp_path / "model.txt"
    with tracking.tracked_run("finetune_multitask", {"lr": 0.1}, variant="v3-s0") as run:
        run.log_curve([{"epoch": 1.0, "loss": 2.0}])
        run._client = MlflowClient(f"http://127.0.0.1:{_dead_port()}")  # the server goes away
        run.log_curve([{"epoch": 2.0, "loss": 1.0}, {"epoch": 3.0, "loss": 0.5}])
        run.log_artifact(out) if out.exists() else None
        out.write_text("trained")  # the stage's own outputs are still written
    assert out.read_text() == "trained"
    assert "stopped answering" in caplog.text and "is incomplete: not logged: metrics at step 2" in caplog.text
    (found,) = _runs(store, "finetune_multitask")
    history = store.get_metric_history(found.info.run_id, "loss")
    assert [m.step for m in history] == [1]


def test_store_lost_after_run_1_of_3_lets_all_3_runs_and_the_linked_runs_finish(
    store, tmp_path, monkeypatch, caplog
) -> None:
    """As `finetune_multitask --all` does: three runs in one process; the store dies during run 1.
    Runs 2 and 3 must not fail at their start (the old latch was per run: run 2's start raised
    TrackingUnavailable and the stage died), nor evaluate's linked runs; what was lost is listed."""
    from mlflow.tracking import MlflowClient

    dead = MlflowClient(f"http://127.0.0.1:{_dead_port()}")
    finished, links = [], []
    for i in range(3):
        with tracking.tracked_run("finetune_multitask", {"lr": 0.1}, variant=f"v-s{i}") as run:
            run.log_curve([{"epoch": 1.0, "loss": 2.0}])
            if i == 0:  # the server goes away while run 1 trains
                monkeypatch.setattr(tracking, "_client", lambda: dead)
                run._client = dead
                run.log_curve([{"epoch": 2.0, "loss": 1.0}])
            link = tmp_path / f"v-s{i}" / tracking.RUN_LINK
            tracking.write_run_link(run, link)
            links.append(link)
        finished.append(i)
    assert finished == [0, 1, 2]
    for i, link in enumerate(links):  # evaluate attaches test metrics to each run: inert, no raise
        linked = tracking.linked_run(link, f"v-s{i}", lambda r: None)
        linked.log_metrics({"test_gender_acc": 0.9})
        assert not linked.active
    assert caplog.text.count("stopped answering") == 1  # warned once
    missed = tracking.not_logged()
    assert "metrics at step 2" in next(iter(missed.values()))
    assert {"v-s1", "v-s2"} <= set(missed)
    (found,) = _runs(store, "finetune_multitask")  # only run 1 reached the store
    assert [m.step for m in store.get_metric_history(found.info.run_id, "loss")] == [1]


def test_sigterm_ends_the_run_killed_with_the_epoch_reached(store, tmp_path) -> None:
    script = (
        "import os, signal\nfrom faceattr.stage import run\nfrom faceattr.tracking import tracked_run\n"
        "def main(argv):\n    with tracked_run('finetune_multitask', {}, variant='v4-s0') as t:\n"
        "        t.log_curve([{'epoch': 1.0, 'loss': 2.0}, {'epoch': 2.0, 'loss': 1.0}])\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n        raise SystemExit('not reached')\nrun(main)\n"
    )
    env = {**os.environ, "FACEATTR_TRACKING": "on"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143 and "stopped (SIGTERM)" in proc.stderr, proc.stderr
    (found,) = _runs(store, "finetune_multitask")
    assert found.info.status == "KILLED"
    assert found.data.tags["faceattr.epoch_reached"] == "2" and found.data.tags["faceattr.stopped_by"] == "SIGTERM"


def test_every_variant_has_test_metrics_and_a_model_after_a_commit_and_a_cache_restore(
    store, pipeline, tmp_path, monkeypatch
) -> None:
    """The acceptance check through MLflow's API: fine-tune two variants with tracking on, make a
    commit before evaluate (the pipeline tag changes), and give one model a run id that is not in
    the store (as a restore from DVC's run cache does). evaluate still attaches test metrics and a
    logged model to every variant, and registers the validation-best of each task set."""
    from .conftest import load_stage

    params = yaml.safe_load(pipeline["params"].read_text())
    variants = ["face_resnet18-identity-gender+age+landmarks", "face_resnet18-none-gender+age+landmarks"]
    params["finetune_multitask"].update(variants=variants, seeds=[0])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    models = tmp_path / "models"
    for v in variants:
        load_stage("finetune_multitask").main(
            [
                *("--params", str(path), "--variant", v, "--seed", "0"),
                *("--store", str(pipeline["store"]), "--split", str(pipeline["split.csv"])),
                *("--identity", str(pipeline["models"] / "pretrain_identity" / "trunk.pt")),
                *("--out", str(models / f"{v}-s0" / "model.pt"), "--resume", str(tmp_path / f"{v}.pt")),
                *("--metrics", str(tmp_path / f"{v}.json"), "--curve", str(tmp_path / f"{v}.csv")),
            ]
        )
    monkeypatch.setattr(tracking, "git_commit", lambda: "f" * 40)  # a commit between the stages
    restored = models / f"{variants[1]}-s0" / tracking.RUN_LINK
    store.delete_run(json.loads(restored.read_text())["mlflow_run_id"])  # this store never saw that training
    restored.write_text('{"mlflow_run_id": "' + "0" * 32 + '", "tracking_uri": "another store"}')
    load_stage("evaluate").main(
        [
            *("--params", str(path), "--models", str(models), "--store", str(pipeline["store"])),
            *("--split", str(pipeline["split.csv"]), "--out", str(tmp_path / "ev.json")),
            *("--summary", str(tmp_path / "summary.json"), "--predictions", str(tmp_path / "pred")),
        ]
    )
    exp = store.get_experiment_by_name(tracking.EXPERIMENT)
    before = {r.info.run_id: r.info for r in _runs(store, "finetune_multitask")}
    load_stage("evaluate").main(  # evaluated twice: the second finds the same runs (one variant run each)
        [
            *("--params", str(path), "--models", str(models), "--store", str(pipeline["store"])),
            *("--split", str(pipeline["split.csv"]), "--out", str(tmp_path / "ev.json")),
            *("--summary", str(tmp_path / "summary.json"), "--predictions", str(tmp_path / "pred")),
        ]
    )
    runs = {r.data.tags["faceattr.variant"]: r for r in _runs(store, "finetune_multitask")}
    assert set(runs) == {f"{v}-s0" for v in variants}
    assert runs[f"{variants[1]}-s0"].data.tags["faceattr.restored"] == "true"
    assert "faceattr.restored" not in runs[f"{variants[0]}-s0"].data.tags
    for name, run in runs.items():
        assert {"test_gender_acc", "test_age_mae", "test_landmark_nme"} <= set(run.data.metrics)
        assert not any(
            m.startswith("val_")
            and m not in ("val_gender_acc", "val_age_mae", "val_landmark_nme", "val_age_cs5", "val_loss")
            for m in run.data.metrics
        )
        # evaluate adds no point to a validation curve: every point is an epoch of training (steps >= 1)
        assert all(m.step >= 1 for m in store.get_metric_history(run.info.run_id, "val_gender_acc"))
        # logging the model into the finished run left its status and end time (its duration) as they were
        assert run.info.status == "FINISHED"
        if run.info.run_id in before:  # (a restored run is recreated by each evaluate)
            assert run.info.end_time == before[run.info.run_id].end_time
        logged = store.search_logged_models([exp.experiment_id], filter_string=f"source_run_id='{run.info.run_id}'")
        assert logged and {m.name for m in logged} == {name.replace("+", "_")}  # named by its run, not "model"
    (version,) = store.search_model_versions("name='faceattr-gender+age+landmarks'")[:1]
    assert version.run_id in {r.info.run_id for r in runs.values()}
    registered = store.get_registered_model("faceattr-gender+age+landmarks")
    assert "validation" in registered.description and "test" in registered.description
    stages = store.get_experiment_by_name(tracking.STAGES_EXPERIMENT)
    (ev_run,) = store.search_runs([stages.experiment_id], "tags.`faceattr.stage` = 'evaluate'")[:1]
    assert not (set(ev_run.data.metrics) & set(runs[f"{variants[0]}-s0"].data.metrics) - {"test_gender_acc"})
    per_variant = store.get_experiment_by_name(tracking.VARIANTS_EXPERIMENT)
    found = store.search_runs([per_variant.experiment_id])
    names = [r.data.tags["faceattr.variant"] for r in found]
    assert names.count(variants[0]) == 1, "the same seed runs evaluated again: the same variant run"
    for r in found:
        if r.data.tags["faceattr.variant"] != variants[0]:
            continue
        seed_run = runs[r.data.tags["faceattr.variant"] + "-s0"]
        assert r.data.metrics["test_gender_acc"] == pytest.approx(seed_run.data.metrics["test_gender_acc"])
        assert r.data.metrics["test_gender_acc_std"] == 0.0 and r.info.run_name.endswith("(1 seeds)")
        assert json.loads(r.data.tags["faceattr.seed_runs"]) == {
            f"{r.data.tags['faceattr.variant']}-s0": seed_run.info.run_id
        }
    trained = runs[f"{variants[0]}-s0"].data.params
    assert trained["data.dataset"] == "synthetic_attributes" and trained["data.split_protocol"] == "identity"


def test_matrix_trains_only_new_runs_and_keeps_their_mlflow_runs(store, pipeline, tmp_path) -> None:
    """``finetune_multitask --all`` executed again (DVC removed its outputs first) trains nothing and
    opens no MLflow run: outputs come back from the finished resume states, linked to the runs that
    trained them. Adding a seed trains and tracks only the new seed's runs."""
    import shutil

    import torch

    from faceattr.models.checkpoint import load_checkpoint

    from .conftest import load_stage

    params = yaml.safe_load(pipeline["params"].read_text())
    variants = ["face_resnet18-identity-age", "resnet18-imagenet-gender"]  # one trains, one is "not run"
    params["finetune_multitask"].update(variants=variants, seeds=[0])
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params))
    models, ckpt = tmp_path / "models", tmp_path / "ckpt"
    argv = ["--params", str(path), "--all", "--store", str(pipeline["store"]), "--split", str(pipeline["split.csv"])]
    argv += ["--identity", str(pipeline["models"] / "pretrain_identity" / "trunk.pt"), "--out", str(models)]
    argv += ["--resume", str(ckpt), "--metrics", str(tmp_path / "metrics"), "--curve", str(tmp_path / "curves")]
    stage = load_stage("finetune_multitask")

    def run_ids() -> dict[str, str]:
        return {d.name: json.loads((d / tracking.RUN_LINK).read_text())["mlflow_run_id"] for d in models.iterdir()}

    stage.main(argv)
    first, state = run_ids(), ckpt / f"{variants[0]}-s0.pt"
    trained_at, (weights, _) = state.stat().st_mtime_ns, load_checkpoint(models / f"{variants[0]}-s0" / "model.pt")
    assert len(_runs(store, "finetune_multitask")) == 2
    (not_run,) = [r for r in _runs(store, "finetune_multitask") if r.info.run_id == first[f"{variants[1]}-s0"]]
    assert not_run.info.status == "KILLED" and not_run.data.tags["faceattr.status"] == "not run"  # not "Finished"
    assert not_run.data.params["accel.channels_last"] == "False"  # what it came to on the CPU, not what was asked
    shutil.rmtree(models)  # what DVC does to a stage's outputs before it runs the stage again
    stage.main(argv)
    assert run_ids() == first and state.stat().st_mtime_ns == trained_at, "nothing retrained, the same runs"
    again, _ = load_checkpoint(models / f"{variants[0]}-s0" / "model.pt")
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    assert len(_runs(store, "finetune_multitask")) == 2, "no MLflow run opened for a reused result"
    (reused,) = [r for r in _runs(store, "finetune_multitask") if r.info.run_id == first[f"{variants[0]}-s0"]]
    assert [m.step for m in store.get_metric_history(reused.info.run_id, "val_age_mae")] == [1, 2], "curve logged once"

    params["finetune_multitask"]["seeds"] = [0, 1]
    path.write_text(yaml.safe_dump(params))
    shutil.rmtree(models)
    stage.main(argv)
    now = run_ids()
    assert {k: now[k] for k in first} == first and state.stat().st_mtime_ns == trained_at
    assert len(_runs(store, "finetune_multitask")) == 4 and len(set(now.values())) == 4
