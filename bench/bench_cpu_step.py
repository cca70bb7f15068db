"""CPU training-step settings for the default: memory layout, batch size and threads.

    python bench/bench_cpu_step.py [--backbone face_resnet18] [--size 64] [--width 16] [--steps 40]

One multi-task step (forward, masked loss, backward, AdamW) of the default's network on random
crops already in memory, timed under each setting; baseline: the layout, batch and precision the
CPU default used before (NCHW, batch 32, torch's default threads, fp32). The default now adds bf16
autocast where the CPU has native bf16 (``accel.precision: auto``). Prints images per second and the ratio.
Run it alone on the machine: a second job on the cores distorts every row.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, table

from faceattr.data.align import template
from faceattr.models.backbones import create_backbone
from faceattr.models.heads import MultiTaskModel
from faceattr.train.data import LabelCodec
from faceattr.train.losses import multitask_loss

WEIGHTS = {"gender": 1.0, "age": 1.0, "landmarks": 1.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="face_resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--steps", type=int, default=40, help="steps per timing (of the batch-32 rows; fewer at 64)")
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    default_threads = torch.get_num_threads()
    codec = LabelCodec(args.size, 35.0, 15.0)

    def setting(batch: int, channels_last: bool, threads: int, bf16: bool = False):
        torch.manual_seed(0)
        model = MultiTaskModel(
            create_backbone(args.backbone, input_size=args.size, embedding_size=128, width=args.width),
            ("gender", "age", "landmarks"),
            128,
        )
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        x = torch.randn(batch, 3, args.size, args.size)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lm = torch.tensor(template(args.size), dtype=torch.float32).expand(batch, 5, 2)
        targets = codec.encode(torch.randint(0, 2, (batch,)), torch.rand(batch) * 80, lm)
        steps = max(1, args.steps * 32 // batch)

        def run() -> int:
            torch.set_num_threads(threads)
            for _ in range(steps):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = model(x)
                loss = multitask_loss(out, targets, WEIGHTS)["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return steps * batch

        run()  # warm-up (oneDNN primitives)
        return run

    rows = []
    baseline = f"NCHW, batch 32, {default_threads} threads"
    for name, batch, cl, threads, bf16 in (
        (baseline, 32, False, default_threads, False),
        (f"channels_last, batch 32, {default_threads} threads", 32, True, default_threads, False),
        (f"NCHW, batch 64, {default_threads} threads", 64, False, default_threads, False),
        (f"channels_last, batch 64, {default_threads} threads", 64, True, default_threads, False),
        ("NCHW, batch 32, 1 thread", 32, False, 1, False),
        (f"NCHW + bf16 autocast (the default), batch 32, {default_threads} thr.", 32, False, default_threads, True),
        (f"channels_last + bf16 autocast, batch 32, {default_threads} thr.", 32, True, default_threads, True),
    ):
        seconds, images = best_of(setting(batch, cl, threads, bf16), 3)
        rows.append((name, images / seconds, ""))
    torch.set_num_threads(default_threads)
    table(
        f"training step on CPU ({cores} cores): {args.backbone} width {args.width}, {args.size} px",
        rows,
        baseline=baseline,
    )


if __name__ == "__main__":
    main()
