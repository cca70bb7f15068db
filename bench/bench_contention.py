"""Two faceattr jobs on one machine: each job's throughput beside another, against alone.

    python bench/bench_contention.py [--steps 30] [--images 96]

Each job is a separate process, as two `dvc exp run --queue` workers are:

* **training**: FaceResNet18 (width 16, 64 px, batch 32) forward/backward/AdamW steps;
* **alignment**: MTCNN over real UTKFace photos (Grace Hopper crops where absent).

Every job runs alone, then two at once, under three thread settings: torch's default (one
intra-op thread per core, OpenMP threads spin while they wait), ``OMP_WAIT_POLICY=PASSIVE``
(waiting threads sleep), and faceattr's default (``faceattr.threads``: PASSIVE, and each job's
intra-op threads capped at the cores divided by ``FACEATTR_JOBS``, default 1). A fair share on
this machine is 0.5x alone; the goal is at least 0.4x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, sys, time
mode, steps, images = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if mode == "faceattr":
    from faceattr.threads import configure
    configure()
import torch
from faceattr.models.backbones import create_backbone
from faceattr.models.heads import MultiTaskModel
def train():
    torch.manual_seed(0)
    model = MultiTaskModel(create_backbone("face_resnet18", input_size=64, embedding_size=128, width=16),
                           ("gender", "age", "landmarks"), 128)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(32, 3, 64, 64)
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        out = model(x)
        loss = sum(v.float().pow(2).mean() for v in out.values())
        opt.zero_grad(); loss.backward(); opt.step()
    return 32 * steps / (time.perf_counter() - start)
def align():
    from bench_align import load_images
    from faceattr.data.align import MTCNNDetector
    ims, _ = load_images(images)
    det = MTCNNDetector("cpu")
    det.detect(ims[:8])
    start = time.perf_counter()
    for k in range(0, len(ims), 32):
        det.detect(ims[k:k + 32])
    return len(ims) / (time.perf_counter() - start)
job = sys.argv[4]
print(json.dumps({"rate": train() if job == "train" else align(), "threads": torch.get_num_threads()}))
"""

SETTINGS = {
    "torch default": ("plain", {}),
    "OMP_WAIT_POLICY=PASSIVE": ("plain", {"OMP_WAIT_POLICY": "PASSIVE"}),
    "faceattr default (faceattr.threads)": ("faceattr", {"FACEATTR_JOBS": "2"}),
}


def run(job: str, setting: str, copies: int, steps: int, images: int) -> list[dict]:
    mode, extra = SETTINGS[setting]
    env = {
        **os.environ,
        **extra,
        "PYTHONPATH": f"{Path(__file__).parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    if copies == 1:
        env.pop("FACEATTR_JOBS", None)  # alone, a job may use every core
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, mode, str(steps), str(images), job],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(copies)
    ]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30, help="training steps per job")
    p.add_argument("--images", type=int, default=96, help="photos per alignment job")
    p.add_argument("--jobs", nargs="+", default=["train", "align"])
    args = p.parse_args()
    print(f"{os.cpu_count()} CPUs; each job a separate process")
    print(f"  {'job':6} {'setting':38} {'alone':>10} {'beside another':>16} {'ratio':>7}  threads")
    for job in args.jobs:
        unit = "img/s"
        for setting in SETTINGS:
            alone = run(job, setting, 1, args.steps, args.images)[0]
            pair = run(job, setting, 2, args.steps, args.images)
            each = sum(r["rate"] for r in pair) / 2
            print(
                f"  {job:6} {setting:38} {alone['rate']:7.1f} {unit} {each:10.1f} {unit} {each / alone['rate']:7.2f}"
                f"  {alone['threads']} alone, {pair[0]['threads']} beside",
                flush=True,
            )


if __name__ == "__main__":
    main()
