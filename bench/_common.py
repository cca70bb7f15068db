"""Shared helpers for the benchmarks: timing, peak memory and a printed table."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable


def best_of(fn: Callable[[], int], repeats: int = 3) -> tuple[float, int]:
    """Run ``fn`` (which returns how many items it processed) ``repeats`` times; best seconds."""
    best, items = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        items = fn()
        best = min(best, time.perf_counter() - start)
    return best, items


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(title: str, rows: list[tuple[str, float, str]], baseline: str) -> None:
    """Print ``name | items/s | ratio to baseline | note``."""
    base = dict((name, rate) for name, rate, _ in rows)[baseline]
    print(f"\n{title}")
    print(f"{'':2}{'method':44} {'items/s':>10} {'x ' + baseline:>22}  note")
    for name, rate, note in rows:
        print(f"  {name:44} {rate:10.1f} {rate / base:22.2f}  {note}")
    print(f"  peak host RSS {peak_rss_mib():.0f} MiB")


def multitask_setup(n: int, size: int, width: int, rng) -> tuple:
    """Random labels for ``n`` crops of ``size`` px (gender, age, the template's landmarks), their
    label codec and the default's multi-task FaceResNet18 at ``width``, as the step benches use."""
    import torch

    from faceattr.data.align import template
    from faceattr.models.backbones import create_backbone
    from faceattr.models.heads import MultiTaskModel
    from faceattr.train.data import LabelCodec

    gender = torch.tensor(rng.integers(0, 2, n))
    age = torch.tensor(rng.uniform(1, 90, n), dtype=torch.float32)
    landmarks = torch.tensor(template(size), dtype=torch.float32).expand(n, 5, 2).contiguous()
    model = MultiTaskModel(
        create_backbone("face_resnet18", input_size=size, embedding_size=128, width=width),
        ("gender", "age", "landmarks"),
        128,
    )
    return gender, age, landmarks, LabelCodec(size, 35.0, 15.0), model
