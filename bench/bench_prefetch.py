"""Gathering the next batch on a background thread, or inline, for a training step on the CPU.

    python bench/bench_prefetch.py [--size 32] [--width 8] [--n 736] [--batch 32]

One epoch of the default's multi-task step (gather from the crops, augment, forward, masked loss,
backward, AdamW) over ``--n`` crops, with ``faceattr.train.data.Prefetch`` gathering each next
batch on its thread (the baseline, as every CPU training did before) and inline
(``background=False``, what the CPU now uses). The two orders of work draw the same random
numbers, so both train the same batches. Best of 5 epochs each, alternating, in one process.
Run it alone on the machine: a second job on the cores distorts every row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, multitask_setup, table

from faceattr.config import AugmentConfig
from faceattr.train.data import NORMALISATION, Prefetch, augment, batch_indices, to_input
from faceattr.train.losses import multitask_loss

WEIGHTS = {"gender": 1.0, "age": 1.0, "landmarks": 1.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=736, help="crops per epoch (the default's 23 steps of 32)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    device = torch.device("cpu")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (args.n, 3, args.size, args.size), dtype=np.uint8)
    images = torch.from_numpy(crops)
    gender, age, landmarks, codec, model = multitask_setup(args.n, args.size, args.width, rng)
    mean, std = NORMALISATION["default"]
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    aug = AugmentConfig()

    def epoch(background: bool) -> int:
        generator = torch.Generator().manual_seed(0)
        batches = Prefetch(batch_indices(args.n, args.batch, generator), images.__getitem__, background)
        seen = 0
        for idx, batch in batches:
            x = to_input(batch, device, mean, std)
            x, lm = augment(x, landmarks[idx], aug, generator)
            batches.ahead()
            loss = multitask_loss(model(x), codec.encode(gender[idx], age[idx], lm), WEIGHTS)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
        return seen

    epoch(True), epoch(False)  # warm-up
    timings = {"thread": [], "inline": []}
    for _ in range(5):
        for name, background in (("thread", True), ("inline", False)):
            seconds, seen = best_of(lambda b=background: epoch(b), repeats=1)
            timings[name].append(seen / seconds)
    rows = [
        ("gather on a background thread (before)", max(timings["thread"]), "Prefetch(background=True)"),
        ("gather inline (the CPU now)", max(timings["inline"]), "Prefetch(background=False)"),
    ]
    table(
        f"one epoch on {torch.get_num_threads()} threads, FaceResNet18 width {args.width}, {args.size} px, "
        f"batch {args.batch} (crops/s, best of 5)",
        rows,
        rows[0][0],
    )
    spread = {k: f"{min(v):.0f}-{max(v):.0f}" for k, v in timings.items()}
    print(f"  range over the 5 epochs (crops/s): thread {spread['thread']}, inline {spread['inline']}")


if __name__ == "__main__":
    main()
