"""Fast paths agree with slow references: batched augmentation, bf16 autocast, threaded decoding."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from faceattr.config import AugmentConfig
from faceattr.models.backbones import create_backbone
from faceattr.models.heads import MultiTaskModel
from faceattr.train.data import apply_augment, sample_augment
from faceattr.train.losses import multitask_loss


def _reference_warp(image: np.ndarray, fwd: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """One image, one channel at a time, with PIL: output pixel p samples input F⁻¹(p - t)."""
    size = image.shape[-1]
    # normalised u = 2p/S - 1 and u_out = F u_in + shift  =>  p_in = F⁻¹ (p_out - S/2 (shift + 1) ) + S/2
    inv = np.linalg.inv(fwd)
    offset = size / 2 - inv @ (size / 2 * (shift + 1))
    coeffs = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    channels = [
        np.asarray(
            Image.fromarray(c.astype(np.float32), mode="F").transform(
                (size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR
            )
        )
        for c in image
    ]
    return np.stack(channels)


def test_batched_augmentation_matches_per_image_reference() -> None:
    g = torch.Generator().manual_seed(7)
    size, n = 48, 6
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, 12, 12, generator=g), size=(size, size), mode="bilinear")
    cfg = AugmentConfig(flip=True, max_rotation=10.0, max_shift=0.05, max_scale=0.08)
    fwd, shift, flip = sample_augment(n, cfg, torch.Generator().manual_seed(3), smooth.device)
    out, _ = apply_augment(smooth, torch.zeros(n, 5, 2), fwd, shift, flip)
    assert flip.any() and not flip.all(), "the fixed seed must exercise both flipped and plain samples"
    inner = slice(8, size - 8)  # away from the border, where padding rules differ
    for k in range(n):
        ref = _reference_warp(smooth[k].numpy(), fwd[k].numpy().astype(np.float64), shift[k].numpy().astype(np.float64))
        diff = np.abs(out[k].numpy()[:, inner, inner] - ref[:, inner, inner])
        assert diff.max() < 1e-3, f"sample {k}: batched warp differs from the per-image reference by {diff.max():.4f}"


def test_bf16_step_loss_matches_fp32() -> None:
    """The bf16 autocast forward (GPUs, CPUs with native bf16) gives the fp32 loss within 2 %."""
    torch.manual_seed(0)
    model = MultiTaskModel(
        create_backbone("face_resnet18", input_size=32, embedding_size=32, width=8), ("gender", "age", "landmarks"), 32
    ).eval()
    x = torch.randn(16, 3, 32, 32)
    targets = {"gender": torch.randint(0, 2, (16,)), "age": torch.randn(16), "landmarks": torch.randn(16, 10)}
    weights = {"gender": 1.0, "age": 1.0, "landmarks": 1.0}
    with torch.no_grad():
        fp32 = multitask_loss(model(x), targets, weights)["loss"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = multitask_loss(model(x), targets, weights)["loss"]
    assert abs(float(bf16) - float(fp32)) / float(fp32) < 0.02


def test_import_faceattr_shortens_the_openmp_spin_unless_the_user_chose() -> None:
    """GOMP_SPINCOUNT=10000 before torch loads OpenMP: waiting threads spin briefly, then sleep, so
    two jobs on two cores share them (bench_contention); a user's policy or spin count wins."""
    import os
    import subprocess
    import sys

    code = "import faceattr, os; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}

    def printed(**extra: str) -> str:
        out = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True)
        return out.stdout.strip()

    assert printed() == "10000 None"
    assert printed(OMP_WAIT_POLICY="ACTIVE") == "None ACTIVE"
    assert printed(GOMP_SPINCOUNT="500") == "500 None"


def test_faceattr_jobs_caps_the_threads_at_a_share_of_the_cores(monkeypatch) -> None:
    import pytest

    from faceattr import threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("FACEATTR_JOBS", raising=False)
        assert threads.configure() is None and torch.get_num_threads() == before
        monkeypatch.setenv("FACEATTR_JOBS", "2")
        assert threads.configure() == max(1, threads.cores() // 2) == torch.get_num_threads()
        monkeypatch.setenv("FACEATTR_JOBS", "two")
        with pytest.raises(ValueError, match="FACEATTR_JOBS must be a whole number of jobs, got 'two'"):
            threads.configure()
    finally:
        torch.set_num_threads(before)


def test_precision_auto_uses_bf16_only_where_the_device_computes_it(monkeypatch) -> None:
    """``accel.precision: auto``: bf16 autocast on CUDA and on CPUs with native bf16, fp32 on other
    CPUs (emulated bf16 would be slower); ``fp32`` turns it off everywhere."""
    from faceattr.config import AccelConfig
    from faceattr.train import loop

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto, fp32 = AccelConfig(precision="auto"), AccelConfig(precision="fp32")
    for native in (True, False):
        monkeypatch.setattr(loop, "cpu_has_bf16", lambda native=native: native)
        assert loop.bf16(cpu, auto) is native
        assert loop.bf16(cuda, auto) is True
        assert loop.bf16(cpu, fp32) is False and loop.bf16(cuda, fp32) is False


def test_a_run_records_the_precision_it_trained_in(pipeline) -> None:
    """The checkpoint says what ``auto`` came to on the machine that trained it."""
    import json

    from faceattr.train.loop import cpu_has_bf16

    meta = json.loads((pipeline["models"] / "finetune" / "face_resnet18-identity-age-s0" / "meta.json").read_text())
    assert meta["precision"] == ("bf16 autocast" if cpu_has_bf16() else "fp32")


def test_a_stage_beside_another_faceattr_job_warns_to_set_faceattr_jobs(tmp_path, monkeypatch, caplog) -> None:
    """Jobs leave a pid file while they run; a job that starts beside a live one, with
    FACEATTR_JOBS unset, warns; files of ended jobs are cleared; FACEATTR_JOBS silences it."""
    import logging
    import subprocess
    import sys

    from faceattr import threads

    monkeypatch.setattr(threads.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.delenv("FACEATTR_JOBS", raising=False)
    folder = threads._jobs_dir()
    folder.mkdir()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / ended.stdout.strip()).touch()  # a job that has exited
    log = logging.getLogger("faceattr.test")
    with caplog.at_level(logging.WARNING):
        threads.warn_if_sharing(log)
    assert not caplog.records, "alone: no warning"
    assert sorted(p.name for p in folder.iterdir()) == [str(os.getpid())], "the ended job's file is cleared"

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (folder / str(other.pid)).touch()
        with caplog.at_level(logging.WARNING):
            threads.warn_if_sharing(log)
        assert f"pid {other.pid}" in caplog.text and "set FACEATTR_JOBS" in caplog.text
        caplog.clear()
        monkeypatch.setenv("FACEATTR_JOBS", "2")
        with caplog.at_level(logging.WARNING):
            threads.warn_if_sharing(log)
        assert not caplog.records
    finally:
        other.kill()
        other.wait()


def test_stage_commands_for_machines_without_dvc_are_dvc_repros_own(tmp_path) -> None:
    """`bench/gpu_check.sh` runs the stages without DVC: its list must be what `dvc repro` runs."""
    import re
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if shutil.which("dvc") is None:
        import pytest

        pytest.skip("dvc is not installed")
    # --dry --force prints every stage's command in order without running or touching anything
    out = subprocess.run(
        ["dvc", "repro", "--dry", "--force"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    dvc = [" ".join(c.split()) for c in re.findall(r"^> (.+)$", out, flags=re.M)]
    ours = subprocess.run(
        [sys.executable, "bench/stage_commands.py"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    names = [line.split("\t")[0] for line in ours]
    assert [line.split("\t")[1] for line in ours] == dvc
    assert names[:2] == ["download@pretrain", "download@finetune"] and names[-1] == "report"
    skipped = subprocess.run(
        [sys.executable, "bench/stage_commands.py", "--skip", "report", "export"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert [line.split("\t")[0] for line in skipped] == names[:-2]
