"""experiments/lib.sh: the one timed, recorded `dvc exp run` every experiment script makes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

LIB = ROOT / "experiments" / "lib.sh"


def _workspace(tmp_path: Path) -> Path:
    """A git repository with committed params, and a `dvc` on PATH that changes them and writes metrics."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "params.yaml").write_text("lr: 0.001\n")
    (ws / "dvc.lock").write_text("schema: '2.0'\n")
    for cmd in (["init", "-q"], ["add", "."], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "p"]):
        subprocess.run(["git", *cmd], cwd=ws, check=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dvc"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'echo "lr: 0.1" > params.yaml\n'
        '[ "$*" = "exp run fail" ] && exit 3\n'
        "mkdir -p metrics && echo '{\"acc\": 1}' > metrics/m.json\n"
        "mkdir -p reports/figures && touch reports/report.md reports/figures/val.png reports/figures/attention-0.png\n"
        # as DVC does for an output inside a folder git tracks
        "echo /figures > reports/.gitignore\n"
    )
    fake.chmod(0o755)
    return ws


def _run(ws: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    script = f'set -euo pipefail; source "{LIB}"; run_recorded out/point {" ".join(args)}'
    env = {"PATH": f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(["bash", "-c", script], cwd=ws, env=env, capture_output=True, text=True)


def test_run_recorded_copies_aggregates_and_writes_run_txt(tmp_path) -> None:
    ws = _workspace(tmp_path)
    done = _run(ws, tmp_path, "dvc", "exp", "run", "-S", "'lr=0.1'")
    assert done.returncode == 0, done.stderr
    dest = ws / "out" / "point"
    assert (dest / "metrics" / "m.json").read_text().strip() == '{"acc": 1}'
    assert (dest / "params.yaml").read_text() == "lr: 0.1\n", "the params the run used"
    assert (ws / "params.yaml").read_text() == "lr: 0.001\n", "the workspace back at the committed params"
    lines = dict(line.split(": ", 1) for line in (dest / "RUN.txt").read_text().splitlines())
    assert lines["command"] == "dvc exp run -S lr=0.1"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True, text=True).stdout.strip()
    assert lines["commit"] == head
    assert int(lines["wall_s"]) >= 0 and "bf16: " in lines["cpu"] and "cores" in lines["jobs"]
    assert not (dest / "done").exists(), "the caller marks done after its own copies"
    assert sorted(p.name for p in (dest / "reports").rglob("*.*")) == ["report.md", "val.png"], "no figure of faces"


def test_run_recorded_results_keep_their_figures_in_git(tmp_path) -> None:
    """DVC's own .gitignore for reports/figures must not travel into the results folder, where it
    would keep the report's figures out of every commit and leave its links dangling."""
    ws = _workspace(tmp_path)
    assert _run(ws, tmp_path, "dvc", "exp", "run").returncode == 0
    figure = "out/point/reports/figures/val.png"
    ignored = subprocess.run(["git", "check-ignore", "-q", figure], cwd=ws)
    assert ignored.returncode == 1, f"{figure} is ignored by git"
    assert not list((ws / "out").rglob(".gitignore"))


def test_run_recorded_leaves_out_what_stages_it_did_not_reach_left_behind(tmp_path) -> None:
    """A run stopped at a target (full_size.sh select stops at evaluate) leaves the committed
    default's probe, export and report files in the workspace; they are not this run's."""
    import yaml

    ws = tmp_path / "ws"
    ws.mkdir()
    lock = {"schema": "2.0", "stages": {
        "evaluate": {"cmd": "e", "params": {"params.yaml": {"lr": 0.001}}, "outs": [{"path": "metrics/evaluate.json"}]},
        "export": {"cmd": "x", "outs": [{"path": "metrics/export.json"}]},
        "report": {"cmd": "r", "outs": [{"path": "reports/report.md"}, {"path": "reports/figures"}]},
        # an entry of a stage dvc.yaml no longer has, whose file evaluate's folder output now holds
        "old@a": {"cmd": "o", "outs": [{"path": "metrics/evaluate.json"}]},
    }}  # fmt: skip
    (ws / "dvc.lock").write_text(yaml.safe_dump(lock))
    (ws / "params.yaml").write_text("lr: 0.001\n")
    for path in ("metrics/evaluate.json", "metrics/export.json", "reports/report.md"):
        (ws / path).parent.mkdir(parents=True, exist_ok=True)
        (ws / path).write_text("the default's\n")
    for cmd in (["init", "-q"], ["add", "."], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "p"]):
        subprocess.run(["git", *cmd], cwd=ws, check=True)
    lock["stages"]["evaluate"]["params"]["params.yaml"]["lr"] = 0.1  # only evaluate ran
    (tmp_path / "new.lock").write_text(yaml.safe_dump(lock))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text(
        f"#!/usr/bin/env bash\ncp {tmp_path / 'new.lock'} dvc.lock\necho this run > metrics/evaluate.json\n"
    )
    (bin_dir / "dvc").chmod(0o755)
    assert _run(ws, tmp_path, "dvc", "exp", "run", "evaluate").returncode == 0
    dest = ws / "out" / "point"
    assert (dest / "metrics" / "evaluate.json").read_text() == "this run\n"
    assert not (dest / "metrics" / "export.json").exists(), "export did not run: the default's file"
    assert not (dest / "reports").exists(), "report did not run: the default's report"


def test_run_recorded_failure_keeps_dest_and_params(tmp_path) -> None:
    ws = _workspace(tmp_path)
    (ws / "out" / "point").mkdir(parents=True)
    (ws / "out" / "point" / "earlier.txt").write_text("kept")
    failed = _run(ws, tmp_path, "dvc", "exp", "run", "fail")
    assert failed.returncode == 3
    assert (ws / "out" / "point" / "earlier.txt").read_text() == "kept"
    assert not (ws / "out" / "point" / "RUN.txt").exists()
    assert (ws / "params.yaml").read_text() == "lr: 0.001\n"


@pytest.mark.parametrize("script", sorted((ROOT / "experiments").glob("*.sh")), ids=lambda p: p.name)
def test_experiment_scripts_parse(script: Path) -> None:
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def _script_workspace(tmp_path: Path, recorded: Path) -> tuple[Path, dict[str, str]]:
    """A clone-like workspace (params, presets, experiments; git) and a `dvc` on PATH that records its
    arguments and replays ``recorded``'s metrics and params, so a script runs end to end untrained."""
    import shutil
    import sys

    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(ROOT / "params.yaml", ws)
    (ws / "dvc.lock").write_text("schema: '2.0'\n")
    for folder in ("presets", "experiments"):
        shutil.copytree(ROOT / folder, ws / folder)
    for cmd in (["init", "-q"], ["add", "."], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "p"]):
        subprocess.run(["git", *cmd], cwd=ws, check=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    replay = f'echo "$*" > "{tmp_path}/argv"\ncp -r "{recorded}/metrics" "{recorded}/params.yaml" .\n'
    (bin_dir / "dvc").write_text("#!/usr/bin/env bash\n" + replay)
    (bin_dir / "dvc").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "OUT": "out"}
    return ws, env


def test_full_size_select_records_its_command_and_reports(tmp_path) -> None:
    """experiments/full_size.sh end to end with a `dvc` that replays a committed candidate's metrics:
    the command it builds, what it records, and the report it writes (no training)."""
    ws, env = _script_workspace(tmp_path, ROOT / "results" / "full_size" / "select" / "iresnet64_e4")
    done = subprocess.run(
        ["bash", "experiments/full_size.sh", "select", "iresnet64_e4"], cwd=ws, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    argv = (tmp_path / "argv").read_text().split()
    assert argv[:4] == ["exp", "run", "-n", "fs-select-iresnet64_e4"]
    assert "align.crop=resize" in argv and "finetune_multitask.seeds=[0]" in argv and argv[-1] == "evaluate"
    dest = ws / "out" / "select" / "iresnet64_e4"
    assert (dest / "done").exists()
    assert (dest / "RUN.txt").read_text().startswith("command: dvc exp run -n fs-select-iresnet64_e4 ")
    report = (ws / "out" / "README.md").read_text()
    assert "`iresnet64_e4` **best so far** | `face_resnet18-none-gender+age-dldl`, 64 px own crop, 4 epochs |" in report
    assert "Not run yet: `dlib_e4`, `dlib_e4_flip`," in report
    again = subprocess.run(
        ["bash", "experiments/full_size.sh", "select", "iresnet64_e4"], cwd=ws, env=env, capture_output=True, text=True
    )
    assert "done, skipped" in again.stdout


def test_full_size_celeba_trains_attributes_on_lfw_people(tmp_path) -> None:
    """TARGET=celeba: CelebA's official partition fine-tuned on whole, LFW's people pretrained on, the
    candidate's attribute variant, and the CelebA report (a replayed run: no training)."""
    import json

    recorded = tmp_path / "recorded"
    (recorded / "metrics" / "finetune").mkdir(parents=True)
    variant = "face_resnet18-identity-attributes"
    (recorded / "metrics" / "finetune" / f"{variant}-s0.json").write_text(json.dumps({"val_attr_acc": 0.9}))
    stat = {"mean": 0.89, "std": 0.0, "ci_low": 0.88, "ci_high": 0.9}
    summary = {"images": 659, "variants": {variant: {"attr_acc": stat}}}
    (recorded / "metrics" / "summary.json").write_text(json.dumps(summary))
    params = {
        "align": {"size": 64, "crop": "template", "template": "arcface"},
        "finetune_multitask": {"variants": [variant], "optim": {"epochs": 12}, "ema": 0.999, "tta": "flip"},
    }
    (recorded / "params.yaml").write_text(json.dumps(params))
    ws, env = _script_workspace(tmp_path, recorded)

    def celeba(*args: str) -> subprocess.CompletedProcess:
        run = ["bash", "experiments/full_size.sh", *args]
        return subprocess.run(run, cwd=ws, env={**env, "TARGET": "celeba"}, capture_output=True, text=True)

    done = celeba("select", "lfw1680_e12_ema_flip")
    assert done.returncode == 0, done.stderr
    argv = (tmp_path / "argv").read_text().split()
    assert argv[:4] == ["exp", "run", "-n", "fs-celeba-select-lfw1680_e12_ema_flip"]
    for param in ("datasets.pretrain.dataset=lfw", "datasets.finetune.dataset=celeba", "split.protocol=official",
                  "pretrain_identity.optim.epochs=16", f"finetune_multitask.variants=[{variant}]",
                  "finetune_multitask.optim.epochs=12", "finetune_multitask.tta=flip"):  # fmt: skip
        assert param in argv, param
    report = (ws / "out" / "README.md").read_text()
    assert report.startswith("# All 6,000 CelebA images")
    assert "Not run yet: `lfw1680_e4`, `lfw1680_e24_ema_flip`, `none_e24_ema_flip`" in report
    final = celeba("final", "lfw1680_e12_ema_flip")
    assert final.returncode == 0, final.stderr
    argv = (tmp_path / "argv").read_text().split()
    assert argv[-1] == f"finetune_multitask.variants=[{variant},face_resnet18-none-attributes]", "its twin, last"
    assert "finetune_multitask.seeds=[0,1,2]" in argv and "evaluate.interval=seeds_and_clusters" in argv
    wrong = celeba("select", "dlib_e4")
    assert wrong.returncode == 2 and "unknown candidate 'dlib_e4'" in wrong.stderr


def test_first_paper_full_trains_the_tables_variants_unless_asked_for_the_fractions(tmp_path) -> None:
    """experiments/first_paper_full.sh: Tables 1 and 2's 9 variants by default, the preset's 15 (with
    the data-efficiency fractions) with TABLES_ONLY=0; a replayed run, no training."""
    import yaml

    ws, env = _script_workspace(tmp_path, ROOT / "results" / "first_paper_cpu")
    script = ["bash", "experiments/first_paper_full.sh"]
    done = subprocess.run(script, cwd=ws, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    argv = (tmp_path / "argv").read_text().split()
    assert argv[:4] == ["exp", "run", "-n", "first-paper-full"]
    assert argv[-1].startswith("finetune_multitask.variants="), "after the preset's, so it wins"
    variants = argv[-1].removeprefix("finetune_multitask.variants=[").removesuffix("]").split(",")
    preset = yaml.safe_load((ROOT / "presets" / "first_paper.yaml").read_text())["finetune_multitask.variants"]
    assert variants == [v for v in preset if "-frac" not in v] and len(variants) == 9
    assert (ws / "out" / "done").exists()
    assert "done, skipped" in subprocess.run(script, cwd=ws, env=env, capture_output=True, text=True).stdout
    (ws / "out" / "done").unlink()
    everything = subprocess.run(script, cwd=ws, env={**env, "TABLES_ONLY": "0"}, capture_output=True, text=True)
    assert everything.returncode == 0, everything.stderr
    argv = (tmp_path / "argv").read_text().split()
    lists = [a for a in argv if a.startswith("finetune_multitask.variants=")]
    assert len(lists) == 1 and lists[0].count(",") == len(preset) - 1 == 14, "the preset's 15 variants alone"


def test_first_paper_full_one_session_cut_runs_table_2_at_one_seed(tmp_path) -> None:
    """SEEDS=0 TABLES=2: the identity trunk's six task sets at one seed; TABLES=1: Table 1's four arms."""
    ws, env = _script_workspace(tmp_path, ROOT / "results" / "first_paper_cpu")

    def variants(**extra: str) -> tuple[list[str], list[str]]:
        (ws / "out" / "done").unlink(missing_ok=True)
        run = ["bash", "experiments/first_paper_full.sh"]
        done = subprocess.run(run, cwd=ws, env={**env, **extra}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        argv = (tmp_path / "argv").read_text().split()
        lists = [a for a in argv if a.startswith("finetune_multitask.variants=")]
        return lists[-1].removeprefix("finetune_multitask.variants=[").removesuffix("]").split(","), argv

    table2, argv = variants(SEEDS="0", TABLES="2")
    assert argv[-1] == "finetune_multitask.seeds=[0]", "after the preset's seeds, so it wins"
    assert len(table2) == 6 and all(v.startswith("face_resnet18-identity-") for v in table2)
    assert {v.removeprefix("face_resnet18-identity-") for v in table2} == {
        "gender+age+landmarks", "gender", "gender+landmarks", "age", "age+landmarks", "gender+age"}  # fmt: skip
    table1, argv = variants(TABLES="1")
    assert len(table1) == 4 and "resnet18-none-gender+age+landmarks" in table1
    assert argv[-1].startswith("finetune_multitask.variants="), "the preset's seeds: no SEEDS given"
