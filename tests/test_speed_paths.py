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

from .conftest import ROOT


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


def test_bf16_training_step_loss_and_gradients_match_fp32() -> None:
    """A training step (train mode, gradients, every head kind) under bf16 autocast gives the fp32
    loss within 2 % and gradients pointing the same way."""
    from faceattr.train.data import LabelCodec

    torch.manual_seed(0)
    for age_head in ("regression", "dldl", "group"):
        model = MultiTaskModel(
            create_backbone("face_resnet18", input_size=32, embedding_size=32, width=8),
            ("gender", "age", "landmarks"),
            32,
            age_head=age_head,
        ).train()
        codec = LabelCodec(32, 30.0, 10.0, age_head=age_head)
        x = torch.randn(16, 3, 32, 32)
        targets = codec.encode(torch.randint(0, 2, (16,)), torch.rand(16) * 80, torch.rand(16, 5, 2) * 32)
        weights = {"gender": 1.0, "age": 1.0, "landmarks": 1.0}
        grads, losses = [], []
        for half in (False, True):
            model.zero_grad()
            torch.manual_seed(1)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
                outputs = model(x)
            loss = multitask_loss(outputs, targets, weights, age_head)["loss"]
            loss.backward()
            losses.append(float(loss.detach()))
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        assert abs(losses[1] - losses[0]) / losses[0] < 0.02, age_head
        assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.95, age_head


def test_decoding_under_bf16_autocast_equals_fp32_on_the_same_logits() -> None:
    """Validation and CUDA test prediction call decode inside autocast. There the DLDL and group
    expectations (``probs @ values``) ran in bf16: ages off by 0.12 years on average, their spread
    by years. Decoding must give the fp32 numbers whatever autocast is on around it."""
    from faceattr.train.data import LabelCodec

    g = torch.Generator().manual_seed(0)
    for head, width in (("dldl", 101), ("group", 8)):
        codec = LabelCodec(64, 0.0, 1.0, age_head=head)
        logits = {"age": torch.randn(512, width, generator=g) * 3, "landmarks": torch.randn(512, 10, generator=g)}
        fp32 = codec.decode(logits)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = codec.decode(logits)
        for k, v in fp32.items():
            assert inside[k].dtype == torch.float32, (head, k)
            diff = (inside[k] - v).abs().max().item()
            assert diff < 1e-4, f"{head} {k}: {diff:.4f} off under autocast"
        # the fp32 reference itself, computed independently in float64
        p = torch.softmax(logits["age"].double(), 1)
        if head == "dldl":
            expected = p @ torch.arange(width, dtype=torch.float64)
            torch.testing.assert_close(fp32["age"].double(), expected, atol=1e-3, rtol=0)


def test_margin_logits_under_bf16_autocast_equal_fp32() -> None:
    """In bf16 the margin head's clamp at 1 − 1e-7 rounds to 1.0 and logits moved by up to 0.74."""
    from faceattr.models.heads import MarginHead

    torch.manual_seed(0)
    head = MarginHead(64, 200, s=64.0, m2=0.5)
    emb, labels = torch.randn(256, 64), torch.randint(0, 200, (256,))
    fp32 = head(emb, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = head(emb, labels)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, fp32, atol=1e-4, rtol=0)


def test_the_short_openmp_spin_is_for_shared_machines_and_alignment_unless_the_user_chose() -> None:
    """GOMP_SPINCOUNT=10000 before torch loads OpenMP where jobs share the cores (FACEATTR_JOBS):
    waiting threads spin briefly, then sleep (bench_contention). Alone, training keeps libgomp's
    spin (with the short one the 32-px default's steps ran at 0.93-0.98x); the align stage asks for the short
    one. A user's policy or spin count wins."""
    import os
    import subprocess
    import sys

    code = "import faceattr, os; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "FACEATTR_JOBS")}

    def printed(snippet: str = code, **extra: str) -> str:
        out = subprocess.run([sys.executable, "-c", snippet], env={**env, **extra}, capture_output=True, text=True)
        return out.stdout.strip()

    assert printed() == "None None"
    assert printed(FACEATTR_JOBS="2") == "10000 None"
    assert printed(FACEATTR_JOBS="2", OMP_WAIT_POLICY="ACTIVE") == "None ACTIVE"
    assert printed(FACEATTR_JOBS="2", GOMP_SPINCOUNT="500") == "500 None"
    aligning = "import faceattr, os; faceattr.short_openmp_spin(); print(os.environ.get('GOMP_SPINCOUNT'))"
    assert printed(aligning) == "10000"
    stage = (ROOT / "stages" / "align.py").read_text()
    assert stage.index("short_openmp_spin()") < stage.index("from faceattr.config"), "before torch loads"


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


def _cpu_flags() -> set[str]:
    """This CPU's feature flags as the kernel reports them (independent of torch and oneDNN)."""
    from pathlib import Path

    info = Path("/proc/cpuinfo")
    if not info.is_file():
        import pytest

        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    return {f for line in info.read_text().splitlines() if line.startswith("flags") for f in line.split(":")[1].split()}


def test_precision_auto_uses_bf16_exactly_where_the_cpu_has_native_bf16() -> None:
    """``accel.precision: auto`` on this CPU: bf16 where the kernel lists AVX512-BF16 or AMX-BF16,
    fp32 elsewhere; ``fp32`` turns it off. Checked against /proc/cpuinfo, not torch's own query."""
    from faceattr.config import AccelConfig
    from faceattr.train import loop

    native = bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
    assert loop.bf16(torch.device("cpu"), AccelConfig(precision="auto")) is native
    assert loop.bf16(torch.device("cpu"), AccelConfig(precision="fp32")) is False
    assert loop.bf16(torch.device("cuda"), AccelConfig(precision="fp32")) is False


def test_a_run_records_the_precision_it_trained_in(pipeline) -> None:
    """The checkpoint and evaluate.json say what ``auto`` came to on the machine that ran them."""
    import json

    native = bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
    meta = json.loads((pipeline["models"] / "finetune" / "face_resnet18-identity-age-s0" / "meta.json").read_text())
    assert meta["precision"] == ("bf16 autocast" if native else "fp32")
    ev = json.loads((pipeline["metrics"] / "evaluate.json").read_text())
    assert ev["protocol"]["precision"].startswith("bf16 autocast" if native else "fp32")


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
