"""Reading aligned faces: the packed store against decoding the same crops from JPEG files.

    python bench/bench_storage.py [--n 2000] [--size 112]

Writes N random-textured crops both ways into a temporary folder, then reads them back in
batches of 64 as a training loader would (uint8 NCHW tensor per batch). Baseline: JPEG decode.
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
from _common import best_of, table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--size", type=int, default=112)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    # Smooth random faces-like content so JPEG sizes are realistic (not white noise).
    base = rng.integers(0, 255, (args.n, args.size // 8, args.size // 8, 3), dtype=np.uint8)
    crops = base.repeat(8, axis=1).repeat(8, axis=2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "faces.npy", crops)
        for i, crop in enumerate(crops):
            Image.fromarray(crop).save(tmp / f"{i:06d}.jpg", quality=95)
        files = [tmp / f"{i:06d}.jpg" for i in range(args.n)]
        order = rng.permutation(args.n)

        def packed() -> int:
            faces = np.load(tmp / "faces.npy", mmap_mode="r")
            for start in range(0, args.n, 64):
                idx = np.sort(order[start : start + 64])
                torch.from_numpy(np.ascontiguousarray(faces[idx])).permute(0, 3, 1, 2).contiguous()
            return args.n

        def jpeg() -> int:
            for start in range(0, args.n, 64):
                batch = [np.asarray(Image.open(files[i]).convert("RGB")) for i in order[start : start + 64]]
                torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()
            return args.n

        t_jpeg, n = best_of(jpeg)
        t_packed, _ = best_of(packed)
    table(
        f"aligned-face reads, {args.n} crops of {args.size} px, batches of 64, shuffled",
        [
            ("JPEG files + PIL decode", n / t_jpeg, "what a per-image loader does"),
            ("packed store (np.load mmap)", n / t_packed, "what faceattr's training reads"),
        ],
        baseline="JPEG files + PIL decode",
    )


if __name__ == "__main__":
    main()
