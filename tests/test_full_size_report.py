"""experiments/full_size_report.py: the full-size recipe is chosen on validation, within 60 minutes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _candidate(root: Path, name: str, val_gender: float, val_mae: float, test_gender: float, wall_s: int) -> None:
    folder = root / "select" / name
    (folder / "metrics" / "finetune").mkdir(parents=True)
    variant = "face_resnet18-none-gender+age-dldl"
    (folder / "metrics" / "finetune" / f"{variant}-s0.json").write_text(
        json.dumps({"val_gender_acc": val_gender, "val_age_mae": val_mae})
    )
    stat = lambda m: {"mean": m, "std": 0.0, "ci_low": m, "ci_high": m}  # noqa: E731
    summary = {"images": 4646, "variants": {variant: {"gender_acc": stat(test_gender), "age_mae": stat(6.0)}}}
    (folder / "metrics" / "summary.json").write_text(json.dumps(summary))
    (folder / "RUN.txt").write_text(f"command: dvc exp run x\nwall_s: {wall_s}\ncpu: AMD EPYC; bf16: native\njobs: J\n")
    params = {
        "align": {"size": 64, "crop": "resize", "template": "arcface"},
        "finetune_multitask": {"variants": [variant], "optim": {"epochs": 4}, "ema": 0.0, "tta": "none"},
    }
    (folder / "params.yaml").write_text(json.dumps(params))  # JSON is YAML
    (folder / "done").touch()


def test_the_choice_is_the_lowest_goal_scaled_validation_score_within_the_budget(tmp_path) -> None:
    # scores (MAE / 5 + gender error / 0.06): a 6.0/5 + 0.09/0.06 = 2.70; b 5.5/5 + 0.06/0.06 = 2.10;
    # c 5.0/5 + 0.03/0.06 = 1.50 but trained 61 minutes; d's test is the best, its validation is not
    _candidate(tmp_path, "a", 0.91, 6.0, 0.90, 600)
    _candidate(tmp_path, "b", 0.94, 5.5, 0.90, 3600)
    _candidate(tmp_path, "c", 0.97, 5.0, 0.97, 3660)
    _candidate(tmp_path, "d", 0.90, 6.5, 0.99, 600)
    out = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "full_size_report.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "(chosen: b)" in out.stdout
    picked = json.loads((tmp_path / "select.json").read_text())
    assert picked["chosen"] == "b"
    readme = (tmp_path / "README.md").read_text()
    assert "| `b` **chosen** | `face_resnet18-none-gender+age-dldl`, 64 px own crop, 4 epochs |" in readme
    assert "| `c` (over 60 min) |" in readme
    assert "not the split of any published number" in readme


def _celeba_run(root: Path, stage: str, name: str, val_attr: float, test_attr: float, wall_s: int, twin=False) -> None:
    """A CelebA run; ``twin``: a final with the from-scratch arm beside it and evaluate's paired test."""
    folder = root / stage / name
    (folder / "metrics" / "finetune").mkdir(parents=True)
    variants = ["face_resnet18-identity-attributes"] + (["face_resnet18-none-attributes"] * twin)
    summary = {"images": 659, "variants": {}}
    for k, variant in enumerate(variants):
        for seed in range(3 if twin else 1):
            val = {"val_attr_acc": val_attr - k * 0.01}
            (folder / "metrics" / "finetune" / f"{variant}-s{seed}.json").write_text(json.dumps(val))
        m = test_attr - k * 0.006
        summary["variants"][variant] = {"attr_acc": {"mean": m, "std": 0.001, "ci_low": m - 0.01, "ci_high": m + 0.01}}
    (folder / "metrics" / "summary.json").write_text(json.dumps(summary))
    if twin:
        comparison = {"a": variants[0], "b": variants[1], "metric": "attr_acc", "diff": 0.006, "ci_low": 0.003,
                      "ci_high": 0.009, "p": 0.0, "significant_holm": True, "holm_family_size": 1, "status": "ok",
                      "question": "identity pretraining vs none", "resampled": "seeds and clusters",
                      "images": 659}  # fmt: skip
        (folder / "metrics" / "evaluate.json").write_text(json.dumps({"comparisons": [comparison]}))
    (folder / "RUN.txt").write_text(f"command: dvc exp run x\nwall_s: {wall_s}\ncpu: AMD EPYC; bf16: native\njobs: J\n")
    params = {
        "align": {"size": 64, "crop": "template", "template": "arcface"},
        "finetune_multitask": {"variants": variants, "optim": {"epochs": 12}, "ema": 0.999, "tta": "flip"},
    }
    (folder / "params.yaml").write_text(json.dumps(params))
    (folder / "done").touch()


def test_celeba_chooses_the_lowest_validation_attribute_error_within_the_budget(tmp_path) -> None:
    _celeba_run(tmp_path, "select", "short", 0.890, 0.895, 300)
    _celeba_run(tmp_path, "select", "long", 0.902, 0.880, 1800)  # the best validation, not the best test
    _celeba_run(tmp_path, "select", "too_long", 0.950, 0.950, 3700)
    _celeba_run(tmp_path, "final", "long", 0.902, 0.880, 3600, twin=True)
    report = [sys.executable, str(ROOT / "experiments" / "full_size_report.py"), "--out", str(tmp_path)]
    out = subprocess.run([*report, "--target", "celeba"], capture_output=True, text=True, check=True)
    assert "(chosen: long)" in out.stdout
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("# All 6,000 CelebA images")
    assert (
        "| Candidate | Recipe | Wall (min) | Val mean attribute % | Score (lower wins) | Test mean attribute % |"
        in readme
    )
    assert "| `long` **chosen** | `face_resnet18-identity-attributes`, 64 px arcface template, 12 epochs, EMA 0.999, " \
        "flip TTA | 30.0 | 90.20 | 0.098 | 88.00 |" in readme  # fmt: skip
    assert "| `too_long` (over 60 min) |" in readme
    # the final: both arms, 3 seeds each (not 6), no goal column, and evaluate's paired test
    assert "| `long` | `face_resnet18-identity-attributes` | 3 | 60.0 | 88.00 ± 0.10 [87.00, 89.00] |" in readme
    assert "| `long` | `face_resnet18-none-attributes` | 3 | 60.0 | 87.40 ± 0.10 [86.40, 88.40] |" in readme
    assert (
        "`face_resnet18-identity-attributes` − `face_resnet18-none-attributes` on attr_acc: 0.60 [0.30, 0.90] pp"
        in readme
    )
    assert "not the same split" in readme and "659 test images" in readme


def test_wall_times_name_their_cpu_when_candidates_ran_on_different_machines(tmp_path) -> None:
    _celeba_run(tmp_path, "select", "here", 0.890, 0.895, 300)
    _celeba_run(tmp_path, "select", "there", 0.902, 0.880, 1800)
    run = tmp_path / "select" / "there" / "RUN.txt"
    run.write_text(run.read_text().replace("AMD EPYC", "Intel(R) Xeon(R) Processor"))
    report = [sys.executable, str(ROOT / "experiments" / "full_size_report.py"), "--out", str(tmp_path)]
    subprocess.run([*report, "--target", "celeba"], capture_output=True, text=True, check=True)
    readme = (tmp_path / "README.md").read_text()
    assert "| 30.0 (Intel Xeon) |" in readme and "| 5.0 (AMD EPYC) |" in readme
