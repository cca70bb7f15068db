"""Each stage's main(argv) end to end on a tiny synthetic set, CPU, tracking off; user errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from faceattr.config import ConfigError, FinetuneConfig, load_section
from faceattr.models.checkpoint import load_checkpoint
from faceattr.train.finetune import finetune, run_key
from faceattr.train.loop import bf16, lr_at
from faceattr.variants import parse_variant

from .conftest import ROOT, TINY_SEEDS, TINY_VARIANTS, load_stage, run_pipeline, tiny_params, training_argv


def test_pipeline_writes_every_declared_output(pipeline) -> None:
    m = pipeline["metrics"]
    for role in ("pretrain", "finetune"):
        align = json.loads((m / f"align_{role}.json").read_text())
        assert align["found"] == align["aligned"] == 80 and align["dropped"] == 0
        assert align["landmarks_from"] == {"provided": 80} and align["fill_fraction"]["max"] < 0.5
    split = json.loads((m / "split.json").read_text())
    assert {k: v["images"] for k, v in split["pretrain"].items()} == {"pretrain": 64, "verify": 16}
    assert {k: v["images"] for k, v in split["finetune"].items()} == {"train": 48, "val": 16, "test": 16}
    assert split["shared_identities"] == 0 and split["finetune_unit"] == "identity"
    pre = json.loads((m / "pretrain_identity.json").read_text())
    assert 0.0 <= pre["verify_acc"] <= 1.0 and pre["verify_pairs"] == 16
    ev = json.loads((m / "evaluate.json").read_text())
    # intervals resample the test split's people, as many as the split put there
    assert ev["protocol"]["cluster_unit"] == "person" and ev["protocol"]["interval"] == "clusters"
    assert ev["protocol"]["clusters"] == split["finetune"]["test"]["identities"] == 4
    assert all(c["clusters"] == 4 for c in ev["comparisons"] if c["status"] == "ok")
    assert set(ev["variants"]) == set(TINY_VARIANTS)
    assert set(ev["runs"]) == {f"{v}-s{s}" for v in TINY_VARIANTS for s in TINY_SEEDS if "imagenet" not in v}
    assert set(ev["runs"]["face_resnet18-identity-age-s1"]["test"]) == {
        "age_mae",
        "age_cs5",
        "age_group_acc",
        "age_aabd",
    }
    full = ev["variants"][TINY_VARIANTS[0]]
    assert {"gender_acc", "age_mae", "landmark_nme"} <= set(full)
    for stat in (full["gender_acc"], full["age_mae"]):  # mean over seeds, inside its bootstrap CI
        assert len(stat["seeds"]) == len(TINY_SEEDS) and stat["mean"] == pytest.approx(np.mean(stat["seeds"]))
        assert stat["ci_low"] <= stat["mean"] <= stat["ci_high"] and stat["std"] >= 0
    not_run = ev["variants"]["resnet18-imagenet-gender"]
    assert not_run["status"] == "not run" and "never downloads" in not_run["reason"]
    questions = {(c["a"], c["b"], c["metric"]): c for c in ev["comparisons"]}
    c = questions[(TINY_VARIANTS[0], "face_resnet18-none-gender+age+landmarks", "age_mae")]
    assert c["question"] == "identity pretraining vs none" and c["ci_low"] <= c["diff"] <= c["ci_high"]
    assert c["images"] == ev["images"]["test"] and isinstance(c["significant"], bool)
    assert (
        questions[(TINY_VARIANTS[0], "face_resnet18-identity-age", "age_mae")]["question"]
        == "multi-task vs fewer tasks"
    )
    assert questions[("resnet18-imagenet-gender", "resnet18-none-gender", "gender_acc")]["status"] == "not run"
    curve = ev["data_efficiency"][TINY_VARIANTS[0]]["age_mae"]
    assert [p["fraction"] for p in curve] == [0.5, 1.0]
    summary = json.loads((m / "summary.json").read_text())
    assert summary["variants"][TINY_VARIANTS[0]]["age_mae"]["mean"] == full["age_mae"]["mean"]
    assert "resnet18-imagenet-gender" not in summary["variants"] and summary["images"] == ev["images"]["test"]
    # the headline files dvc metrics show lists: one per variant that ran, test means in display units
    rows = {f.stem: json.loads(f.read_text()) for f in (m / "variants").glob("*.json")}
    assert set(rows) == {v for v, s in ev["variants"].items() if s["status"] == "ok"}
    one = ev["variants"][TINY_VARIANTS[0]]
    assert rows[TINY_VARIANTS[0]]["gender_acc"] == pytest.approx(100 * one["gender_acc"]["mean"], abs=0.005)
    assert rows[TINY_VARIANTS[0]]["age_mae"] == pytest.approx(one["age_mae"]["mean"], abs=0.005)
    assert rows[TINY_VARIANTS[0]]["seeds"] == len(one["age_mae"]["seeds"])
    best = json.loads((m / "headline.json").read_text())
    assert best["best"]["age_mae"] == min(r["age_mae"] for r in rows.values() if "age_mae" in r)
    assert best["best"]["gender_acc"] == max(r["gender_acc"] for r in rows.values() if "gender_acc" in r)
    assert best["test_images"] == ev["images"]["test"]
    predictions = (pipeline["predictions"] / f"{TINY_VARIANTS[0]}-s0.csv").read_text().splitlines()
    assert len(predictions) == 1 + ev["images"]["test"]
    # export: the validation-best run of the largest task set, as ONNX that matches PyTorch
    exported = json.loads((m / "export.json").read_text())
    full = {r: v["val"]["gender_acc"] for r, v in ev["runs"].items() if "-gender+age+landmarks" in r}
    assert exported["tasks"] == "gender+age+landmarks" and exported["chosen_by"] == "validation gender_acc"
    assert full[exported["run"]] == max(full.values())
    assert exported["parity_max_abs_diff"] < 1e-4 and (pipeline["models"] / "export" / "model.onnx").is_file()
    report = (pipeline["reports"] / "report.md").read_text()
    assert "Table 1" in report and "Table 2" in report and "**not run**" in report
    assert "identity pretraining vs none" in report and "multi-task vs fewer tasks" in report
    assert "a bootstrap over the test set's 4 people (all images of each)" in report
    for figure in ("val_gender_acc.png", "data_efficiency.png", "pretrain_identity.png"):
        assert (pipeline["reports"] / "figures" / figure).is_file()
    # the pretraining paragraph states the scale and where the verification curve peaked
    with (pipeline["plots"] / "pretrain_identity.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    best = max(rows, key=lambda r: float(r["verify_acc"]))
    assert f"peaked at {100 * float(best['verify_acc']):.2f} % in epoch {int(float(best['epoch']))}" in report
    assert f"After {len(rows)} epochs" in report and "CASIA-WebFace's 10,575 people" in report
    pretrain = json.loads((m / "pretrain_identity.json").read_text())
    assert f"{pretrain['identities']} training identities and {pretrain['images']:,} images" in report
    share = f"{pretrain['identities'] / 10_575:.1%} of its people and {pretrain['images'] / 494_414:.1%} of its images"
    assert f"this run's set is {share}" in report  # beside CASIA-WebFace's, as a share of it


def test_pretrain_checkpoint_is_trunk_only_and_self_describing(pipeline) -> None:
    state, meta = load_checkpoint(pipeline["models"] / "pretrain_identity" / "trunk.pt")
    assert meta["kind"] == "trunk" and meta["input_size"] == 32 and meta["backbone"] == "face_resnet18"
    assert not any(k == "weight" or k.startswith("head") for k in state), "margin head must not be saved"
    assert len(meta["template"]) == 5


def test_finetuned_variant_starts_from_the_identity_trunk(pipeline) -> None:
    _, meta = load_checkpoint(pipeline["models"] / "finetune" / f"{TINY_VARIANTS[0]}-s0" / "model.pt")
    assert meta["pretraining"] == "identity" and meta["tasks"] == ["gender", "age", "landmarks"]
    assert meta["age_std"] > 0 and meta["variant"] == TINY_VARIANTS[0]


def _finetune_inputs(pipeline) -> dict:
    """`finetune`'s keyword arguments for a seed-0 run of the tiny pipeline's data on the CPU."""
    return dict(
        seed=0,
        store=pipeline["store"],
        split_file=pipeline["split.csv"],
        identity_checkpoint=pipeline["models"] / "pretrain_identity" / "trunk.pt",
        device=torch.device("cpu"),
    )


class Killed(Exception):
    """Raised from `on_epoch` to stop a training as a kill would."""


def kill_after_first_epoch(row: dict) -> None:
    if row["epoch"] == 1:
        raise Killed


def test_resumed_training_equals_uninterrupted(pipeline, tmp_path) -> None:
    """Kill training after epoch 1, rerun: the same final weights as one uninterrupted run."""
    cfg = load_section(pipeline["params"], "finetune_multitask", FinetuneConfig)
    cfg = dataclasses.replace(cfg, accel=dataclasses.replace(cfg.accel, resume_every_s=0.0))  # after every epoch
    variant = parse_variant(TINY_VARIANTS[0])
    common = _finetune_inputs(pipeline)

    full, _, _ = finetune(variant, cfg, resume_path=tmp_path / "full.pt", on_epoch=lambda row: None, **common)
    with pytest.raises(Killed):
        finetune(variant, cfg, resume_path=tmp_path / "killed.pt", on_epoch=kill_after_first_epoch, **common)
    assert torch.load(tmp_path / "killed.pt", weights_only=True)["epoch"] == 1
    seen = []
    resumed, _, history = finetune(variant, cfg, resume_path=tmp_path / "killed.pt", on_epoch=seen.append, **common)
    assert [r["epoch"] for r in history] == [1.0, 2.0] and [r["epoch"] for r in seen] == [1.0, 2.0]
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, msg=f"weights differ at {k}")


def test_resume_state_is_written_at_most_every_resume_every_s_and_after_the_last_epoch(pipeline, tmp_path) -> None:
    """With an interval longer than the run, no epoch but the last writes the resume state (a kill
    before it restarts from scratch); the interval is no part of the resume key."""
    cfg = load_section(pipeline["params"], "finetune_multitask", FinetuneConfig)
    rare = dataclasses.replace(cfg, accel=dataclasses.replace(cfg.accel, resume_every_s=3600.0))
    variant = parse_variant(TINY_VARIANTS[0])
    common = _finetune_inputs(pipeline)
    epochs = cfg.optim.epochs
    assert epochs >= 2

    class Killed(Exception):
        pass

    def kill_before_last(row: dict) -> None:
        if row["epoch"] == epochs - 1:
            raise Killed

    state = tmp_path / "rare.pt"
    with pytest.raises(Killed):
        finetune(variant, rare, resume_path=state, on_epoch=kill_before_last, **common)
    assert not state.exists()
    finetune(variant, rare, resume_path=state, on_epoch=lambda row: None, **common)
    assert torch.load(state, weights_only=True)["epoch"] == epochs
    keys = {run_key(variant, c, 0, **{k: v for k, v in common.items() if k != "seed"}) for c in (cfg, rare)}
    assert len(keys) == 1
    other = dataclasses.replace(cfg, accel=dataclasses.replace(cfg.accel, precision="fp32"))
    other_key = run_key(variant, other, 0, **{k: v for k, v in common.items() if k != "seed"})
    # the key holds the precision a run trains in: fp32 is another run only where auto means bf16
    assert (other_key not in keys) == bf16(torch.device("cpu"), cfg.accel)
    with pytest.raises(ValueError, match="resume_every_s"):
        dataclasses.replace(cfg.accel, resume_every_s=-1.0)


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
    common = training_argv(pipeline, path, tmp_path, "pretrain" if section == "pretrain_identity" else "finetune")
    with pytest.raises(ValueError, match=message):
        if section == "pretrain_identity":
            load_stage("pretrain_identity").main(common)
        else:
            load_stage("finetune_multitask").main([*common, "--variant", value[0], "--seed", "0", "--identity", "x.pt"])


def test_rerun_from_same_seed_is_identical(pipeline, tmp_path) -> None:
    """DVC outputs depend only on params and data: a second run reproduces the first bit for bit."""
    again = run_pipeline(tmp_path, tiny_params(tmp_path))
    a, b = (np.load(p["store"] / "faces.npy") for p in (pipeline, again))
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
        store=pipeline["store"],
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


def test_sigkilled_stage_resumes_to_the_uninterrupted_weights(pipeline, tmp_path) -> None:
    """SIGKILL the fine-tuning stage mid-training, run it again: it resumes from its last
    checkpoint and ends with exactly the weights of a run that was never interrupted (CPU, fixed
    seed). The variant uses uncertainty weighting, whose learned log-variances must resume too."""
    import os
    import signal
    import time

    params = yaml.safe_load(pipeline["params"].read_text())
    params["finetune_multitask"]["optim"]["epochs"] = 30
    params["finetune_multitask"]["accel"]["resume_every_s"] = 0  # a state after every epoch to kill between
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params))
    env = {**os.environ, "FACEATTR_TRACKING": "off", "FACEATTR_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    identity = str(pipeline["models"] / "pretrain_identity" / "trunk.pt")

    def command(folder) -> list[str]:
        folder.mkdir(exist_ok=True)
        argv = training_argv(pipeline, path, folder)
        return [
            sys.executable,
            str(ROOT / "stages" / "finetune_multitask.py"),
            *argv,
            "--variant",
            "face_resnet18-identity-gender+age-uw",
            "--seed",
            "1",
            "--identity",
            identity,
        ]

    subprocess.run(command(tmp_path / "full"), env=env, check=True, capture_output=True, timeout=300)
    killed = subprocess.Popen(command(tmp_path / "killed"), env=env, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "r.pt"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if state.is_file() and torch.load(state, weights_only=True)["epoch"] >= 3:
            break
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    at_kill = torch.load(state, weights_only=True)["epoch"]
    assert 3 <= at_kill < 30 and not (tmp_path / "killed" / "o.pt").exists()
    resumed = subprocess.run(command(tmp_path / "killed"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and f"resuming from {state} at epoch {at_kill}/30" in resumed.stderr
    full, _ = load_checkpoint(tmp_path / "full" / "o.pt")
    again, _ = load_checkpoint(tmp_path / "killed" / "o.pt")
    for k, v in full.items():
        torch.testing.assert_close(again[k], v, rtol=0, atol=0, msg=f"weights differ at {k}")
    curve = (tmp_path / "killed" / "c.csv").read_text()
    assert curve == (tmp_path / "full" / "c.csv").read_text() and "weight_age" in curve


def test_second_and_third_paper_variants_through_evaluate_and_report(pipeline, tmp_path) -> None:
    """Age groups, gender conditioning, the attentional CNN, an ensemble and the attribute head,
    end to end: the report gets the second paper's table, confusion matrix and attention maps,
    and the attribute table."""
    params = yaml.safe_load(pipeline["params"].read_text())
    variants = [
        "attn_cnn-none-gender+age-group-cond",
        "face_resnet18-none-gender+age-group-cond",
        "face_resnet18-none-gender+age-group",
        "face_resnet18-identity-attributes-uw",
    ]
    params["finetune_multitask"].update(variants=variants, seeds=[0, 1])
    params["evaluate"]["ensembles"] = [variants[:2]]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params))
    models, curves = tmp_path / "models", tmp_path / "curves"
    for variant in variants:
        for seed in (0, 1):
            run = f"{variant}-s{seed}"
            argv = training_argv(pipeline, path, tmp_path)
            argv[argv.index("--out") + 1] = str(models / run / "model.pt")
            argv[argv.index("--curve") + 1] = str(curves / f"{run}.csv")
            argv[argv.index("--resume") + 1] = str(tmp_path / f"{run}.pt")
            identity = str(pipeline["models"] / "pretrain_identity" / "trunk.pt")
            load_stage("finetune_multitask").main(
                [*argv, "--variant", variant, "--seed", str(seed), "--identity", identity]
            )
    common = ["--params", str(path), "--store", str(pipeline["store"]), "--split", str(pipeline["split.csv"])]
    evaluation, predictions = tmp_path / "evaluate.json", tmp_path / "predictions"
    load_stage("evaluate").main(
        [
            *common,
            "--models",
            str(models),
            "--out",
            str(evaluation),
            "--summary",
            str(tmp_path / "s.json"),
            "--predictions",
            str(predictions),
        ]
    )
    ev = json.loads(evaluation.read_text())
    ensemble = f"ensemble({variants[0]},{variants[1]})"
    assert ev["variants"][ensemble]["members"] == variants[:2]
    assert {"age_group_acc", "age_aabd", "gender_acc"} <= set(ev["variants"][ensemble])
    confusion = ev["variants"][variants[0]]["breakdown"]["age_group_confusion"]
    assert len(confusion["bands"]) == 8 and sum(map(sum, confusion["counts"])) == 2 * ev["images"]["test"]
    attrs = ev["variants"][variants[3]]["breakdown"]["attributes"]
    assert set(attrs) == {"eyeglasses", "smiling", "beard", "bangs"}
    questions = {c["question"] for c in ev["comparisons"]}
    assert {"gender-conditioned age vs plain", "ensemble vs member"} <= questions
    assert (predictions / "figures" / f"attention-{variants[0]}.png").is_file()
    report = tmp_path / "report.md"
    load_stage("report").main(
        [
            "--params",
            str(path),
            "--evaluation",
            str(evaluation),
            "--pretrain",
            str(pipeline["metrics"] / "pretrain_identity.json"),
            "--pretrain-curve",
            str(pipeline["plots"] / "pretrain_identity.csv"),
            "--curves",
            str(curves),
            "--out",
            str(report),
            "--figures",
            str(tmp_path / "figures"),
            "--vega-template",
            str(tmp_path / "vega.html"),
            "--dvc-curves",
            str(tmp_path / "curves.csv"),
            "--dvc-efficiency",
            str(tmp_path / "eff.csv"),
            "--attention",
            str(predictions / "figures"),
            "--split-metrics",
            str(pipeline["metrics"] / "split.json"),
            "--align-metrics",
            str(pipeline["metrics"] / "align_finetune.json"),
        ]
    )
    text = report.read_text()
    assert "Second paper" in text and "confusion.png" in text and f"attention-{variants[0]}.png" in text
    cal = text.split("## Calibration (test)", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.replace(cal, "").splitlines() if line.startswith(f"| `{ensemble}` |")]
    assert len(rows) == 2, "once in the second paper's table, once in all variants"
    assert f"| `{ensemble}` |" in cal  # and its calibration, measured on the averaged probabilities
    assert "Attributes (third paper's table)" in text and "| smiling |" in text
    assert (tmp_path / "figures" / "confusion.png").is_file()


def test_profile_records_where_a_stage_spends_its_time(pipeline, tmp_path) -> None:
    """FACEATTR_PROFILE: one JSON line per stage process, with start-up, main and the training
    phases; a failing stage records its exit code; without the variable nothing is written."""
    import json
    import os

    out = tmp_path / "profile.jsonl"
    env = {**os.environ, "FACEATTR_TRACKING": "off", "FACEATTR_DEVICE": "cpu", "FACEATTR_PROFILE": str(out)}
    argv = [
        sys.executable,
        str(ROOT / "stages" / "finetune_multitask.py"),
        *training_argv(pipeline, pipeline["params"], tmp_path),
        "--variant",
        "face_resnet18-none-gender",
        "--seed",
        "0",
        "--identity",
        str(tmp_path / "unused.pt"),
    ]
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=300)
    bad = subprocess.run([*argv[:-2], "--identity"], env=env, capture_output=True, timeout=300)  # usage error
    assert bad.returncode == 2
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert first["script"] == "finetune_multitask" and first["exit_code"] == 0 and "--variant" in first["args"]
    assert first["startup_s"] > 0.05, "a Python process importing torch takes more than 50 ms to start"
    for name in ("data loading", "train steps", "validation", "resume state"):
        assert first["phases"][name] > 0, name
    assert sum(first["phases"].values()) <= first["main_s"]
    assert second["exit_code"] == 2
    del env["FACEATTR_PROFILE"]
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=300)
    assert len(out.read_text().splitlines()) == 2


@pytest.mark.parametrize(
    "extra", [["--all", "--variant", "face_resnet18-none-gender", "--seed", "0"], [], ["--variant", "x"]]
)
def test_finetune_stage_wants_all_or_one_run(pipeline, tmp_path, extra, capsys) -> None:
    """``--all`` (every run of params) or ``--variant`` with ``--seed`` (one run): anything else
    is a usage error naming both forms, before any work."""
    argv = [*training_argv(pipeline, pipeline["params"], tmp_path), "--identity", "x.pt", *extra]
    with pytest.raises(SystemExit) as err:
        load_stage("finetune_multitask").main(argv)
    assert err.value.code == 2 and "give either --all, or both --variant and --seed" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()


def test_prediction_csvs_name_each_test_image_by_store_row_and_path(pipeline) -> None:
    """A reviewer looks up a prediction's image: its `index` is the store row (faces.npy and
    labels.csv), its `path` the image's path there, and the labels beside it are that row's."""
    import pandas as pd

    labels = pd.read_csv(pipeline["store"] / "labels.csv")
    split = pd.read_csv(pipeline["split.csv"])
    test_rows = sorted(split.loc[split["split"] == "test", "index"])
    pred = pd.read_csv(pipeline["predictions"] / f"{TINY_VARIANTS[0]}-s0.csv")
    assert list(pred.columns[:2]) == ["index", "path"]
    assert sorted(pred["index"]) == test_rows
    assert (pred["path"].to_numpy() == labels.loc[pred["index"], "path"].to_numpy()).all()
    np.testing.assert_allclose(pred["true_age"], labels.loc[pred["index"], "age"].to_numpy())
    np.testing.assert_array_equal(pred["true_gender"], labels.loc[pred["index"], "gender"].to_numpy())
    assert not np.allclose(pred["age"], pred["true_age"]), "the predicted age is its own column"


def _optimizer_steps(state_path) -> int:
    """How many steps AdamW took, from a resume state's optimizer moments."""
    state = torch.load(state_path, weights_only=True)["optimizer"]["state"]
    return int(next(iter(state.values()))["step"])


def test_data_efficiency_holds_the_optimizer_steps_constant_by_default(pipeline, tmp_path) -> None:
    """With fixed epochs 50 % of the images is also about 50 % of the steps (the README read that
    gap as a data effect). `fraction_budget: steps` (the default) gives a fraction the steps of
    the whole training pool; `epochs` keeps the old behaviour."""
    cfg = load_section(pipeline["params"], "finetune_multitask", FinetuneConfig)
    assert cfg.fraction_budget == "steps"
    common = {**_finetune_inputs(pipeline), "on_epoch": lambda row: None}
    steps = {}
    for name, variant, budget in (
        ("full", "face_resnet18-identity-gender+age+landmarks", "steps"),
        ("frac", "face_resnet18-identity-gender+age+landmarks-frac50", "steps"),
        ("frac_epochs", "face_resnet18-identity-gender+age+landmarks-frac50", "epochs"),
    ):
        state = tmp_path / f"{name}.pt"
        _, _, history = finetune(
            parse_variant(variant), dataclasses.replace(cfg, fraction_budget=budget), resume_path=state, **common
        )
        steps[name] = _optimizer_steps(state)
        total = steps[name]  # the schedule reaches its last step: lr_at(total - 1) at the end
        warmup = int(cfg.optim.warmup_epochs * total / cfg.optim.epochs)
        assert history[-1]["lr"] == pytest.approx(lr_at(total - 1, total, warmup, cfg.optim)), name
    pool = 48  # the tiny split's training images
    per_epoch = -(-pool // cfg.optim.batch_size)
    assert steps["full"] == steps["frac"] == per_epoch * cfg.optim.epochs
    assert steps["frac_epochs"] == -(-(pool // 2) // cfg.optim.batch_size) * cfg.optim.epochs < steps["frac"]


def test_finetune_prints_elapsed_time_and_time_left_at_the_pace_so_far(monkeypatch) -> None:
    """The 45-run stage names, before each run, how long it has run and how long the rest will take."""
    stage = load_stage("finetune_multitask")
    monkeypatch.setattr(stage.time, "monotonic", lambda: 1000.0)
    assert stage.eta(900.0, 0, 45) == ""  # no pace before the first run
    assert stage.eta(900.0, 4, 10) == " (1:40 elapsed, about 2:30 left at this pace)"
    assert stage.eta(-3000.0, 40, 45) == " (1:06:40 elapsed, about 8:20 left at this pace)"
