"""The faceattr command: presets become `dvc exp run -S` arguments; params are checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from faceattr.cli import _resolve, main

from .conftest import ROOT


def test_preset_prints_set_params(capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["preset", "utkface"]) == 0
    out = capsys.readouterr().out.split()
    assert out[:2] == ["-S", "datasets.finetune.dataset=utkface"]
    assert main(["preset", "celeba_identities"]) == 0
    out = capsys.readouterr().out.split()
    assert "datasets.pretrain.pair_folds=3" in out, "numbers must print plainly (YAML would add a '...' line)"


def test_preset_paths_resolve_for_experiment_copies(capsys, monkeypatch, tmp_path) -> None:
    """`dvc exp run --temp/--queue` runs in a copy of the workspace elsewhere: a preset's relative
    local path must reach it already resolved against the project, from whatever folder it runs."""
    monkeypatch.chdir(tmp_path)
    assert main(["preset", "utkface", "--dir", str(ROOT / "presets")]) == 0
    out = capsys.readouterr().out.split()
    uri = next(a.split("=", 1)[1] for a in out if a.startswith("datasets.finetune.uri="))
    expected = (ROOT / "../shared/datasets/utkface/UTKFace.tar.gz").resolve()
    assert Path(uri) == expected and Path(uri).is_absolute()
    assert main(["preset", "celeba_identities", "--dir", str(ROOT / "presets")]) == 0
    out = capsys.readouterr().out.split()
    assert "datasets.pretrain.pairs=pairs_derived_celeba_id200.txt" in out, "a file of the data set stays relative"


@pytest.mark.skipif(not (ROOT.parent / "shared" / "datasets" / "celeba").is_dir(), reason="../shared/datasets absent")
def test_preset_download_runs_in_a_workspace_copy(capsys, monkeypatch, tmp_path) -> None:
    """The download stage of a preset, run in a copy of the project somewhere else (as --temp does)."""
    import json
    import shutil

    from dvc.utils.hydra import apply_overrides

    from .conftest import load_stage

    monkeypatch.chdir(ROOT)
    assert main(["preset", "celeba_identities"]) == 0
    args = capsys.readouterr().out.split()
    copy = tmp_path / "exp-copy"
    copy.mkdir()
    shutil.copy(ROOT / "params.yaml", copy / "params.yaml")
    apply_overrides(str(copy / "params.yaml"), [*args[1::2], "datasets.pretrain.max_images=30"])
    monkeypatch.chdir(copy)
    load_stage("download").main(["--role", "pretrain", "--out", "raw", "--metrics", "download.json"])
    counts = json.loads((copy / "download.json").read_text())
    assert counts["images"] >= 30 and (copy / "raw" / "pairs_derived_celeba_id200.txt").is_file()


def test_every_preset_names_real_params(monkeypatch) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for preset in (ROOT / "presets").glob("*.yaml"):
        for key in yaml.safe_load(preset.read_text()):
            node = params
            for part in key.split("."):
                assert part in node, f"{preset.name}: '{key}' is not a params key"
                node = node[part]


# What the synthetic default sizes for speed (32 px, width 8, 4 epochs; it may move again): every
# real-data preset pins it, so a published real-data command keeps its meaning when the default moves.
_CPU_SIZE = ("align.size", "pretrain_identity.width", "finetune_multitask.width")
_FINETUNE_LENGTH = ("finetune_multitask.optim.epochs",)


def test_real_data_presets_pin_what_the_default_sizes_for_speed() -> None:
    for preset in (ROOT / "presets").glob("*.yaml"):
        keys = yaml.safe_load(preset.read_text())
        pinned = [*_CPU_SIZE, *_FINETUNE_LENGTH] if "datasets.finetune.dataset" in keys else list(_CPU_SIZE)
        if "datasets.finetune.dataset" in keys or "datasets.pretrain.dataset" in keys:
            missing = [k for k in pinned if k not in keys]
            assert not missing, f"{preset.name} leaves {missing} to the synthetic default"


def test_unknown_preset_lists_choices(capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["preset", "agedb2"]) == 1
    names = (
        "['agedb', 'agedb_protocol', 'best_cpu', 'casia', 'celeba', 'celeba_identities', 'cpu_fp32', 'cpu_real', "
        "'dlib', 'first_paper', 'lfw_identities', 'own_crop', 'paper_recipe', 'second_paper', 'third_paper', 'utkface']"
    )
    assert f"unknown preset 'agedb2'; choose from {names}" in capsys.readouterr().err


def test_check_params(tmp_path, capsys) -> None:
    assert main(["check-params", str(ROOT / "params.yaml")]) == 0
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["finetune_multitask"]["variants"] = ["face_resnet18-none-height"]
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump(params))
    assert main(["check-params", str(bad)]) == 1
    assert "tasks must be distinct names" in capsys.readouterr().err
    # Table 1 must compare trunks of one size: a fine-tuning width other than the pretrained one is refused
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    width = params["pretrain_identity"]["width"]
    params["finetune_multitask"]["width"] = width * 2
    bad.write_text(yaml.safe_dump(params))
    assert main(["check-params", str(bad)]) == 1
    assert (
        f"finetune_multitask.width ({2 * width}) differs from pretrain_identity.width ({width})"
        in capsys.readouterr().err
    )
    # params.yaml is the one source of defaults: a deleted key is named
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["pretrain_identity"]["optim"]["epochs"]
    bad.write_text(yaml.safe_dump(params))
    assert main(["check-params", str(bad)]) == 1
    assert "missing key 'pretrain_identity.optim.epochs'" in capsys.readouterr().err


def test_every_preset_applies_through_dvcs_override_parser(tmp_path, capsys, monkeypatch) -> None:
    """`dvc exp run $(faceattr preset X)` must parse: the shell only splits the output on
    whitespace (no unquoting), then DVC parses lists and nested lists in Hydra's grammar."""
    import shutil

    from dvc.utils.hydra import apply_overrides

    from faceattr.config import SECTIONS, parse

    monkeypatch.chdir(ROOT)
    for preset in sorted((ROOT / "presets").glob("*.yaml")):
        shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
        assert main(["preset", preset.stem]) == 0
        args = capsys.readouterr().out.split()  # what $(...) hands to dvc
        assert args[::2] == ["-S"] * (len(args) // 2) and "'" not in "".join(args)
        apply_overrides(str(tmp_path / "params.yaml"), args[1::2])
        applied = yaml.safe_load((tmp_path / "params.yaml").read_text())
        for key, value in yaml.safe_load(preset.read_text()).items():
            node = applied
            for part in key.split("."):
                node = node[part]
            assert node == _resolve(key, value, ROOT), f"{preset.name}: {key}"
        for name, cls in SECTIONS.items():
            parse(cls, applied[name], name)


def _protocol_run(folder: Path, index: int, mae: float) -> None:
    import json

    (folder / "metrics").mkdir(parents=True)
    summary = {"variants": {"v": {"age_mae": {"mean": mae, "std": 0.1, "ci_low": 0, "ci_high": 9}}}}
    split = {
        "finetune_protocol": "folds",
        "finetune_protocol_file": "agedb_splits.yaml",
        "finetune_protocol_index": index,
    }
    (folder / "metrics" / "summary.json").write_text(json.dumps(summary))
    (folder / "metrics" / "split.json").write_text(json.dumps(split))


def test_protocol_summary_is_the_mean_over_splits(tmp_path, capsys) -> None:
    import json

    for k, mae in enumerate([5.0, 6.0, 7.0]):
        _protocol_run(tmp_path / f"s{k}", k, mae)
    out = tmp_path / "protocol.json"
    assert main(["protocol-summary", *(str(tmp_path / f"s{k}") for k in range(3)), "--out", str(out)]) == 0
    assert "age_mae 6 ± 1 (3 splits)" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["variants"]["v"]["age_mae"]["per_split"] == {"0": 5.0, "1": 6.0, "2": 7.0}
    _protocol_run(tmp_path / "again", 1, 6.5)
    assert main(["protocol-summary", str(tmp_path / "s1"), str(tmp_path / "again")]) == 1
    assert "split(s) [1] appear in more than one run" in capsys.readouterr().err


def test_publish_copies_aggregates_and_nothing_made_of_faces(tmp_path, capsys) -> None:
    ws, dest = tmp_path / "ws", tmp_path / "results"
    files = {
        "reports/report.md": "# r\n![val_gender_acc](figures/val_gender_acc.png)\n"
        "![attention-attn_cnn-s0](../predictions/figures/attention-attn_cnn-s0.png)\n",
        "reports/figures/val_gender_acc.png": "png",
        "predictions/figures/attention-attn_cnn-s0.png": "face",
        "predictions/attn_cnn-s0.csv": "per-image",
        "metrics/evaluate.json": "{}",
        "metrics/align/finetune.json": "{}",
        "metrics/align/finetune_dropped.csv": "paths",
        "plots/finetune/v-s0.csv": "epoch",
        "data/aligned/finetune/faces.npy": "crops",
        "models/finetune/v-s0/model.pt": "weights",
        "params.yaml": "base: {}",
    }
    for rel, text in files.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(text)
    assert main(["publish", str(dest), "--workspace", str(ws)]) == 0
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert got == [
        "figures/val_gender_acc.png",
        "metrics/align/finetune.json",
        "metrics/evaluate.json",
        "params.yaml",
        "plots/finetune/v-s0.csv",
        "report.md",
    ]
    report = (dest / "report.md").read_text()
    assert "![val_gender_acc](figures/val_gender_acc.png)" in report and "predictions/" not in report
    assert "attention-attn_cnn-s0: not published, it shows faces" in report
    assert main(["publish", str(dest), "--workspace", str(tmp_path / "nothing")]) == 1
    assert "reports/report.md' not found: run the pipeline" in capsys.readouterr().err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_prints_its_address_once_it_answers_and_sigterm_stops_every_server_process(tmp_path) -> None:
    """`faceattr ui` opens the project's store whatever the current folder, prints the runs table's
    address only once the server answers, and SIGTERM to it leaves no mlflow, uvicorn or huey
    process serving (before: the CLI did not pass the signal on and 12 processes kept serving)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    psutil = pytest.importorskip("psutil")
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "dvc.yaml").write_text("stages: {}\n")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "faceattr.cli", "ui", "--port", str(port)],
        cwd=project / "sub",
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stderr.readline()
        assert f"sqlite:///{project.resolve()}/mlflow.db" in first, first  # the project's store, absolute
        line = ""
        while "MLflow UI: open" not in line:  # mlflow's own log lines come between
            line = proc.stderr.readline()
            assert line, "faceattr ui ended without printing the address"
        assert f"http://127.0.0.1:{port}/#/experiments" in line, line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:  # it answers already
            assert r.status == 200
        serving = psutil.Process(proc.pid).children(recursive=True)
        assert serving, "mlflow ui runs as a child"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        time.sleep(1)
        alive = [p for p in serving if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, [p.cmdline() for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
