"""MLflow tracking: runs with params, tags and curves; FAILED on a crash; off means no store at all."""

from __future__ import annotations

import pytest

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
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    return client.search_runs([exp.experiment_id], f"tags.`faceattr.stage` = '{stage}'")


def test_run_records_params_curves_and_parent(store, tmp_path) -> None:
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello")
    with tracking.tracked_run("finetune_multitask", {"optim": {"lr": 0.001}}, variant="v1") as run:
        run.log_curve([{"epoch": 1.0, "val_age_mae": 9.0}, {"epoch": 2.0, "val_age_mae": 7.5}])
        run.log_metrics({"test": {"gender_acc": 0.9}})
        run.log_artifact(artifact)
    (found,) = _runs(store, "finetune_multitask")
    assert found.info.status == "FINISHED"
    assert found.data.params["optim.lr"] == "0.001"
    assert found.data.tags["faceattr.variant"] == "v1"
    assert found.data.metrics == {"val_age_mae": 7.5, "test.gender_acc": 0.9}
    history = store.get_metric_history(found.info.run_id, "val_age_mae")
    assert [(m.step, m.value) for m in history] == [(1, 9.0), (2, 7.5)]
    (parent,) = _runs(store, "pipeline")
    assert found.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert [a.path for a in store.list_artifacts(found.info.run_id)] == ["note.txt"]
    # evaluate finds the variant's run to add its test metrics
    tracking.find_variant_run("v1").log_metrics({"test_age_mae": 6.0})
    assert store.get_run(found.info.run_id).data.metrics["test_age_mae"] == 6.0


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
