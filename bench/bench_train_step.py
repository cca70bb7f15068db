"""Training-step throughput: faceattr's packed-store pipeline against two baselines.

    python bench/bench_train_step.py [--n 1024] [--size 64] [--width 16] [--batch 64] [--device cpu]

1. "on-device tensors": the same model step on one batch already on the device, normalised,
   with no loading or augmentation: the ceiling (pipeline overhead = this / ours).
2. "packed store": faceattr's path: index the uint8 store, copy, normalise, augment on the
   device (flip, rotation, scale, shift, landmarks moved), multi-task forward/backward/step.
3. "naive ImageFolder": torchvision ImageFolder of JPEG crops, PIL decode, ToTensor and
   RandomHorizontalFlip per image, fp32, DataLoader with no workers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, multitask_setup, table

from faceattr.config import AugmentConfig
from faceattr.train.data import NORMALISATION, augment, batch_indices, to_input
from faceattr.train.losses import multitask_loss

WEIGHTS = {"gender": 1.0, "age": 1.0, "landmarks": 1.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (args.n, args.size // 8, args.size // 8, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
    gender, age, landmarks, codec, model = multitask_setup(args.n, args.size, args.width, rng)
    mean, std = NORMALISATION["default"]
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    amp = device.type == "cuda"

    def step(x: torch.Tensor, targets: dict) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        loss = multitask_loss(out, targets, WEIGHTS)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    fixed_x = to_input(images[: args.batch], device, mean, std)
    fixed_t = codec.encode(
        gender[: args.batch].to(device), age[: args.batch].to(device), landmarks[: args.batch].to(device)
    )

    def on_device() -> int:
        for _ in range(args.n // args.batch):
            step(fixed_x, fixed_t)
        sync()
        return args.n // args.batch * args.batch

    generator = torch.Generator().manual_seed(0)
    aug = AugmentConfig()

    def packed() -> int:
        seen = 0
        for idx in batch_indices(args.n, args.batch, generator):
            x = to_input(images[idx], device, mean, std)
            x, lm = augment(x, landmarks[idx].to(device), aug, generator)
            step(x, codec.encode(gender[idx].to(device), age[idx].to(device), lm))
            seen += len(idx)
        sync()
        return seen

    with tempfile.TemporaryDirectory() as tmp:
        for i, crop in enumerate(crops):
            folder = Path(tmp) / str(int(gender[i]))
            folder.mkdir(exist_ok=True)
            Image.fromarray(crop).save(folder / f"{i:06d}.jpg", quality=95)
        from torchvision import datasets, transforms

        folder_set = datasets.ImageFolder(
            tmp,
            transforms.Compose(
                [transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(mean, std)]
            ),
        )
        loader = torch.utils.data.DataLoader(folder_set, batch_size=args.batch, shuffle=True, num_workers=0)

        def naive() -> int:
            seen = 0
            for x, y in loader:
                x = x.to(device)
                with torch.autocast(device.type, enabled=False):
                    out = model(x)
                t = {
                    "gender": y.to(device),
                    "age": torch.full((len(y),), float("nan"), device=device),
                    "landmarks": torch.full((len(y), 10), float("nan"), device=device),
                }
                loss = multitask_loss(out, t, WEIGHTS)["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(y)
            sync()
            return seen

        on_device()  # warm-up
        t_dev, n_dev = best_of(on_device)
        t_packed, n_packed = best_of(packed)
        t_naive, n_naive = best_of(naive)
    rows = [
        ("on-device tensors (no loading)", n_dev / t_dev, "ceiling"),
        ("packed store + device augmentation", n_packed / t_packed, "faceattr"),
        ("naive ImageFolder + PIL + fp32", n_naive / t_naive, "per-image loading"),
    ]
    table(
        f"training step, FaceResNet18 width {args.width}, {args.size} px, batch {args.batch}, {device}",
        rows,
        baseline="naive ImageFolder + PIL + fp32",
    )
    print(f"  pipeline efficiency (packed / on-device): {rows[1][1] / rows[0][1]:.2f}")
    if device.type == "cuda":
        print(f"  GPU max allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
