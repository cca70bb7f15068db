"""The generic pieces of training: device, schedule, resumable epoch loop."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from faceattr.config import AccelConfig, OptimConfig, to_dict
from faceattr.distributed import current, wrap
from faceattr.io import atomic_path
from faceattr.profile import phase

log = logging.getLogger(__name__)


def lr_at(step: int, total_steps: int, warmup_steps: int, cfg: OptimConfig) -> float:
    """Learning rate at ``step``: linear warm-up, then constant or cosine decay to zero."""
    if step < warmup_steps:
        return cfg.lr * (step + 1) / warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def steps_per_epoch(rows: int, batch_size: int, world: int = 1) -> int:
    """Optimizer steps of one epoch over ``rows`` on each of ``world`` ranks: each rank takes an
    equal shard of ``rows // world`` (``faceattr.distributed.shard``) in batches of ``batch_size``,
    so the global batch is ``world × batch_size`` and an epoch takes 1/world of the steps."""
    return -(-(rows // world) // batch_size)


def make_optimizer(model: nn.Module, cfg: OptimConfig, scaled: nn.Module | None = None) -> torch.optim.Optimizer:
    """AdamW, as in the first paper (lr 1e-4, weight decay 1e-4 by default). The parameters of
    ``scaled`` (a trunk that starts from weights) train at ``lr × trunk_lr_scale``."""
    if scaled is None or cfg.trunk_lr_scale == 1.0:
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    inner = {id(p) for p in scaled.parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) in inner], "lr_scale": cfg.trunk_lr_scale},
        {"params": [p for p in model.parameters() if id(p) not in inner], "lr_scale": 1.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's learning rate, times each parameter group's ``lr_scale`` (1 when absent)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr


def prepare(model: nn.Module, device: torch.device, accel: AccelConfig) -> nn.Module:
    """Move ``model`` to ``device`` (channels_last on CUDA) and return the module to call.

    With ``accel.compile`` that is ``torch.compile(model)``, and under torchrun it is wrapped in
    DistributedDataParallel; both share their parameters with ``model``: optimise and save
    ``model`` itself, call the returned module. On GPUs under torchrun BatchNorm is synchronised.
    """
    if device.type == "cuda" and current().world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if nhwc(device, accel):
        model.to(memory_format=torch.channels_last)
    net = wrap(model, current(), device)  # DistributedDataParallel under torchrun
    return torch.compile(net) if accel.compile else net


def nhwc(device: torch.device, accel: AccelConfig) -> bool:
    """Whether activations run channels-last: on CUDA only. On CPU it measured 1.27x per step for
    the CPU default (``bench/bench_cpu_step.py``), but training channels-last on CPU corrupted the
    heap ("corrupted size vs. prev_size", abort) in pretraining on real CelebA crops
    (``tests/test_real_data.py``) with torch 2.14.1, so the CPU keeps the default layout."""
    return accel.channels_last and device.type == "cuda"


def bf16(device: torch.device, accel: AccelConfig) -> bool:
    """Whether training and validation run under bf16 autocast: with ``accel.precision: auto`` on CUDA
    and on CPUs that compute bf16 natively (AVX512-BF16 or AMX, as oneDNN reports); elsewhere,
    and with ``fp32``, in fp32. On the development CPU (AVX512-BF16) it measured 1.51x per step of
    the CPU default (``bench/bench_cpu_step.py``); on a CPU without it, bf16 would be emulated
    and slower, so ``auto`` leaves it off there. Weights, optimizer state and losses stay fp32."""
    if accel.precision == "fp32":
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_bf16()


def precision_name(half: bool) -> str:
    """How a run computed, as checkpoints, metrics and MLflow record it."""
    return "bf16 autocast" if half else "fp32"


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (asked once per process)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the query
        return False


def seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed the global RNG (dropout) and return the generator for this epoch's order/augmentation."""
    torch.manual_seed(seed * 100_003 + epoch)
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def recipe(cfg: Any) -> dict[str, Any]:
    """A training section's params as its resume key sees them: all but ``accel.resume_every_s``
    (how often the state is saved changes no weight, so changing it retrains nothing) and
    ``accel.precision`` (the key holds what it came to on this machine, bf16 or fp32, instead:
    ``auto`` and ``fp32`` train alike on a CPU without native bf16)."""
    params = to_dict(cfg)
    params.get("accel", {}).pop("resume_every_s", None)
    params.get("accel", {}).pop("precision", None)
    return params


def fingerprint(*parts: Any) -> str:
    """Hash of JSON-able config values and file contents: a resume is valid only for the same inputs."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update(file_digest(part).encode())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """sha256 of a file's content, computed once per process for each (path, size, mtime): a
    45-run stage asks for the same store's hash 90 times, and a large store takes seconds."""
    st = path.stat()
    return _file_digest(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def store_files(store: Path) -> tuple[Path, ...]:
    """What of a packed store a training reads: the crops' pixels (``faces.npy``), their labels
    and the geometry they were cut with (``geometry.json``, where the store has one). A store
    rebuilt with other pixels (another ``align.fill``, say) and the same labels is other data."""
    from faceattr.data.packed import FACES, GEOMETRY, LABELS

    return tuple(store / name for name in (FACES, LABELS, GEOMETRY) if name != GEOMETRY or (store / name).is_file())


# The modules whose code decides what a training computes (data, models, losses, loops, configs).
TRAINING_CODE = (
    "config.py",
    "device.py",
    "distributed.py",
    "inference/batches.py",
    "metrics.py",
    "variants.py",
    "data/align.py",
    "data/manifest.py",
    "data/packed.py",
    "models/backbones.py",
    "models/checkpoint.py",
    "models/dlib_resnet.py",
    "models/heads.py",
    "train/calibration.py",
    "train/data.py",
    "train/finetune.py",
    "train/loop.py",
    "train/losses.py",
    "train/pretrain.py",
)


def code_fingerprint() -> str:
    """Hash of the training code (``TRAINING_CODE``) as Python sees it: a resume state needs the
    same code.

    Without it, a rerun after a fix to the training code (which DVC reruns, since the code is a
    dep) would resume the finished state written by the old code and return stale weights. A
    fixed list of files, not whatever this process happens to have imported, so every run of one
    process, and of the next, gets the same key; editing, say, the report code retrains nothing.
    Each file is hashed as its syntax tree without docstrings (comments and formatting never reach
    the tree), so documenting the code retrains nothing either.
    """
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for rel in TRAINING_CODE:
        digest.update(rel.encode())
        digest.update(code_digest((root / rel).read_text()).encode())
    return digest.hexdigest()[:16]


def code_digest(source: str) -> str:
    """sha256 of a module's syntax tree with its docstrings removed."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            first = body[0].value if body and isinstance(body[0], ast.Expr) else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


def fit(
    *,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    train_epoch: Callable[[int], dict[str, float]],
    validate: Callable[[], dict[str, float]],
    resume_path: Path | None,
    resume_key: str,
    on_epoch: Callable[[dict[str, float]], None],
    resume_every_s: float = 0.0,
) -> list[dict[str, float]]:
    """Run epochs, saving a resume state; continue from it when the key matches.

    The state is written after an epoch once ``resume_every_s`` seconds have passed since the last
    write (or the start), and always after the last epoch; 0 writes it after every epoch. A killed
    run loses at most that much training: writing a large network's weights and optimizer moments
    after each short epoch can cost as much as the epoch (110 of 258 s of the paper recipe's
    fine-tuning on an H200). ``modules`` are the networks whose weights the resume state holds
    (trunk, heads, margin head). A resume state written for other params or data (another key) is
    ignored, with a log line.
    """
    history: list[dict[str, float]] = []
    start = 0
    if resume_path is not None and resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        if state.get("key") == resume_key:
            for name, module in modules.items():
                module.load_state_dict(state["modules"][name])
            optimizer.load_state_dict(state["optimizer"])
            history, start = state["history"], state["epoch"]
            log.info("resuming from %s at epoch %d/%d", resume_path, start, epochs)
            for row in history:  # the restored epochs reach the tracker too
                on_epoch(row)
        else:
            log.info("ignoring %s: written for other params or data", resume_path)
    last_write = time.monotonic()
    for epoch in range(start, epochs):
        with phase("train steps"):
            trained = train_epoch(epoch)
        with phase("validation"):
            row = {"epoch": float(epoch + 1), **trained, **validate()}
        history.append(row)
        due = epoch + 1 == epochs or time.monotonic() - last_write >= resume_every_s
        if due and resume_path is not None and current().main:  # one writer under torchrun
            state = {
                "key": resume_key,
                "epoch": epoch + 1,
                "history": history,
                "modules": {n: m.state_dict() for n, m in modules.items()},
                "optimizer": optimizer.state_dict(),
            }
            with phase("resume state"), atomic_path(resume_path) as tmp:
                torch.save(state, tmp)
            last_write = time.monotonic()
        on_epoch(row)
        log.info("epoch %d/%d %s", epoch + 1, epochs, " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
    return history
