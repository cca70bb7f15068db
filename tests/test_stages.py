"""Each stage's main(argv) end to end on a tiny synthetic set, CPU, tracking off; user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from faceattr.config import ConfigError, FinetuneConfig, load_section
from faceattr.models.checkpoint import load_checkpoint
from faceattr.train.finetune import finetune
from faceattr.variants import parse_variant

from .conftest import ROOT, TINY_VARIANTS, load_stage, run_pipeline, tiny_params, training_argv


def test_pipeline_writes_every_declared_output(pipeline) -> None:
    m = pipeline["metrics"]
    align = json.loads((m / "align.json").read_text())
    assert align["found"] == align["aligned"] == 160 and align["dropped"] == 0
    split = json.loads((m / "split.json").read_text())
    assert sum(v["images"] for v in split.values()) == 160
    pre = json.loads((m / "pretrain_identity.json").read_text())
    assert 0.0 <= pre["verify_acc"] <= 1.0 and pre["verify_pairs"] == 16
    ev = json.loads((m / "evaluate.json").read_text())
    assert set(ev["variants"]) == set(TINY_VARIANTS)
    assert set(ev["variants"]["face_resnet18-none-age"]["test"]) == {"age_mae", "age_cs5"}
    assert set(ev["variants"][TINY_VARIANTS[0]]["test"]) == {"gender_acc", "age_mae", "age_cs5", "landmark_nme"}
    report = (pipeline["reports"] / "report.md").read_text()
    assert "Table 1" in report and "Table 2" in report and "not run" in report
    assert (pipeline["reports"] / "figures" / "val_gender_acc.png").is_file()


def test_pretrain_checkpoint_is_trunk_only_and_self_describing(pipeline) -> None:
    state, meta = load_checkpoint(pipeline["models"] / "pretrain_identity" / "trunk.pt")
    assert meta["kind"] == "trunk" and meta["input_size"] == 32 and meta["backbone"] == "face_resnet18"
    assert not any(k == "weight" or k.startswith("head") for k in state), "margin head must not be saved"
    assert len(meta["template"]) == 5


def test_finetuned_variant_starts_from_the_identity_trunk(pipeline) -> None:
    _, meta = load_checkpoint(pipeline["models"] / "finetune" / TINY_VARIANTS[0] / "model.pt")
    assert meta["pretraining"] == "identity" and meta["tasks"] == ["gender", "age", "landmarks"]
    assert meta["age_std"] > 0 and meta["variant"] == TINY_VARIANTS[0]


def test_resumed_training_equals_uninterrupted(pipeline, tmp_path) -> None:
    """Kill training after epoch 1, rerun: the same final weights as one uninterrupted run."""
    cfg = load_section(pipeline["params"], "finetune_multitask", FinetuneConfig)
    variant = parse_variant(TINY_VARIANTS[0])
    common = dict(
        seed=0,
        store=pipeline["aligned"],
        split_file=pipeline["split.csv"],
        identity_checkpoint=pipeline["models"] / "pretrain_identity" / "trunk.pt",
        device=torch.device("cpu"),
    )

    full, _, _ = finetune(variant, cfg, resume_path=tmp_path / "full.pt", on_epoch=lambda row: None, **common)

    class Killed(Exception):
        pass

    def kill_after_first(row: dict) -> None:
        if row["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        finetune(variant, cfg, resume_path=tmp_path / "killed.pt", on_epoch=kill_after_first, **common)
    seen = []
    resumed, _, history = finetune(variant, cfg, resume_path=tmp_path / "killed.pt", on_epoch=seen.append, **common)
    assert [r["epoch"] for r in history] == [1.0, 2.0] and [r["epoch"] for r in seen] == [1.0, 2.0]
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, msg=f"weights differ at {k}")


def test_bad_param_fails_with_one_clear_message(tmp_path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["align"]["sise"] = 64
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"unknown key 'align\.sise'"):
        load_stage("align").main(["--params", str(bad), "--raw", "x", "--out", "y", "--dropped", "z", "--metrics", "w"])
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "stages" / "align.py"),
            "--params",
            str(bad),
            "--raw",
            "x",
            "--out",
            "y",
            "--dropped",
            "z",
            "--metrics",
            "w",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"FACEATTR_TRACKING": "off", "PATH": ""},
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "unknown key 'align.sise'" in errors[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("pretrain_identity", "backbone", "vgg16", "unknown backbone 'vgg16'"),
        ("finetune_multitask", "variants", ["face_resnet18-imagenet-age"], "pretraining 'imagenet' is not available"),
        ("pretrain_identity", "width", "wide", "'pretrain_identity.width' must be int"),
    ],
)
def test_bad_model_params(pipeline, tmp_path, section, key, value, message) -> None:
    params = yaml.safe_load(pipeline["params"].read_text())
    params[section][key] = value
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params))
    common = training_argv(pipeline, path, tmp_path)
    with pytest.raises(ValueError, match=message):
        if section == "pretrain_identity":
            load_stage("pretrain_identity").main(common)
        else:
            load_stage("finetune_multitask").main([*common, "--variant", value[0], "--identity", "x.pt"])


def test_rerun_from_same_seed_is_identical(pipeline, tmp_path) -> None:
    """DVC outputs depend only on params and data: a second run reproduces the first bit for bit."""
    again = run_pipeline(tmp_path, tiny_params(tmp_path))
    a, b = (np.load(p["aligned"] / "faces.npy") for p in (pipeline, again))
    assert np.array_equal(a, b)
    assert (pipeline["split.csv"]).read_text() == again["split.csv"].read_text()
    first = json.loads((pipeline["metrics"] / "evaluate.json").read_text())
    second = json.loads((again["metrics"] / "evaluate.json").read_text())
    assert first == second


def test_resume_state_from_other_code_is_ignored(pipeline, tmp_path, monkeypatch) -> None:
    """A finished resume state written by other code must not be reused (DVC reran us for a reason)."""
    from faceattr.train import finetune as finetune_module

    cfg = load_section(pipeline["params"], "finetune_multitask", FinetuneConfig)
    variant = parse_variant(TINY_VARIANTS[1])
    state_path = tmp_path / "r.pt"
    common = dict(
        seed=0,
        store=pipeline["aligned"],
        split_file=pipeline["split.csv"],
        identity_checkpoint=None,
        device=torch.device("cpu"),
        resume_path=state_path,
        on_epoch=lambda row: None,
    )
    finetune(variant, cfg, **common)
    first = torch.load(state_path, weights_only=True)["key"]
    before = state_path.stat().st_mtime_ns
    finetune(variant, cfg, **common)
    assert state_path.stat().st_mtime_ns == before, "same code: the finished state is restored, nothing retrained"
    monkeypatch.setattr(finetune_module, "code_fingerprint", lambda: "other-code")
    finetune(variant, cfg, **common)
    state = torch.load(state_path, weights_only=True)
    assert state["key"] != first and state["epoch"] == 2, "other code: trained afresh and the state rewritten"
