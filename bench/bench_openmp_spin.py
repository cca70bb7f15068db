"""OpenMP's spin before a waiting thread sleeps, for a training step of the CPU default alone.

    python bench/bench_openmp_spin.py [--size 32] [--width 8] [--steps 40] [--rounds 3]

libgomp reads ``GOMP_SPINCOUNT`` once, when torch loads it, so each setting runs in its own child
process; the driver alternates them ``--rounds`` times and keeps each one's best. Baseline:
libgomp's own spin (``GOMP_SPINCOUNT`` unset), what a training alone now runs with; against it the
short spin (10000) that faceattr sets where jobs share the machine (``FACEATTR_JOBS``) and that the
align stage asks for. One multi-task step (forward, masked loss, backward, AdamW) of
FaceResNet18 on crops in memory, batch 32, fp32. Run it alone: a second job distorts every row.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

CHILD = """
import time, torch
from faceattr.data.align import template
from faceattr.models.backbones import create_backbone
from faceattr.models.heads import MultiTaskModel
from faceattr.train.data import LabelCodec
from faceattr.train.losses import multitask_loss
size, width, steps = {size}, {width}, {steps}
torch.manual_seed(0)
model = MultiTaskModel(create_backbone("face_resnet18", input_size=size, embedding_size=128, width=width),
                       ("gender", "age", "landmarks"), 128)
opt = torch.optim.AdamW(model.parameters(), 1e-3)
x = torch.randn(32, 3, size, size)
lm = torch.tensor(template(size), dtype=torch.float32).expand(32, 5, 2)
targets = LabelCodec(size, 35.0, 15.0).encode(torch.randint(0, 2, (32,)), torch.rand(32) * 80, lm)
w = {{"gender": 1.0, "age": 1.0, "landmarks": 1.0}}
def step():
    loss = multitask_loss(model(x), targets, w)["loss"]
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
for _ in range(5): step()
start = time.perf_counter()
for _ in range(steps): step()
print(32 * steps / (time.perf_counter() - start))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    code = CHILD.format(size=args.size, width=args.width, steps=args.steps)
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "FACEATTR_JOBS")}
    base["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    settings = {
        "libgomp's own spin (GOMP_SPINCOUNT unset)": {},
        "short spin (GOMP_SPINCOUNT=10000)": {"GOMP_SPINCOUNT": "10000"},
    }
    best = dict.fromkeys(settings, 0.0)
    for _ in range(args.rounds):
        for name, extra in settings.items():
            out = subprocess.run([sys.executable, "-c", code], env={**base, **extra}, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(out.stderr)
            best[name] = max(best[name], float(out.stdout.strip().splitlines()[-1]))
    baseline = next(iter(best))
    print(f"\nFaceResNet18 width {args.width}, {args.size} px, batch 32, fp32: images/s, best of {args.rounds}")
    for name, rate in best.items():
        print(f"  {name:46} {rate:10.1f} {rate / best[baseline]:8.2f}x")


if __name__ == "__main__":
    main()
