"""Two faceattr jobs on one machine: each job's throughput beside another, against alone.

    python bench/bench_contention.py [--steps 30] [--images 96] [--settings ...]

Each job is a separate process, as two `dvc exp run --queue` workers are:

* **training**: FaceResNet18 (width 16, 64 px, batch 32) forward/backward/AdamW steps (under the
  faceattr settings in the default's precision: bf16 autocast where the CPU has native bf16);
* **alignment**: MTCNN over real UTKFace photos (Grace Hopper crops where absent).

Every job runs alone, then beside a copy of itself and beside the other job (alignment while a
training runs, the case that was 15-20x slower), under four thread settings: torch's default (one
intra-op thread per core, OpenMP threads spin while they wait), ``OMP_WAIT_POLICY=PASSIVE``
(waiting threads sleep at once: fair, but 20 % slower alone), faceattr's default (``import
faceattr`` sets ``GOMP_SPINCOUNT=10000``: a short spin, then sleep), and faceattr with
``FACEATTR_JOBS=2`` (each job's intra-op threads capped at the cores divided by 2). A fair share on
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
    import faceattr  # sets GOMP_SPINCOUNT=10000 unless a policy or spin count is set
import torch
if mode == "faceattr":
    from faceattr.threads import configure
    configure()
from faceattr.models.backbones import create_backbone
from faceattr.models.heads import MultiTaskModel
def train():
    half = False
    if mode == "faceattr":  # the default's precision: bf16 autocast where the CPU computes it natively
        from faceattr.config import AccelConfig
        from faceattr.train.loop import bf16
        half = bf16(torch.device("cpu"), AccelConfig())
    torch.manual_seed(0)
    model = MultiTaskModel(create_backbone("face_resnet18", input_size=64, embedding_size=128, width=16),
                           ("gender", "age", "landmarks"), 128)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(32, 3, 64, 64)
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
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
    "faceattr default (GOMP_SPINCOUNT=10000)": ("faceattr", {}),
    "faceattr, FACEATTR_JOBS=2": ("faceattr", {"FACEATTR_JOBS": "2"}),
}


def run(jobs: list[str], setting: str, steps: int, images: int) -> list[dict]:
    """Start one process per entry of ``jobs`` at once; their rates (items/s) and threads."""
    mode, extra = SETTINGS[setting]
    env = {
        **os.environ,
        **extra,
        "PYTHONPATH": f"{Path(__file__).parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    if mode == "plain":  # torch's own default (spinning OpenMP threads), or the setting's variable
        env.pop("OMP_WAIT_POLICY", None)
        env.pop("GOMP_SPINCOUNT", None)
    else:  # what import faceattr sets
        env.pop("OMP_WAIT_POLICY", None)
        env.pop("GOMP_SPINCOUNT", None)
    env.update(extra)
    if len(jobs) == 1:
        env.pop("FACEATTR_JOBS", None)  # alone, a job may use every core
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, mode, str(steps), str(images), job],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for job in jobs
    ]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30, help="training steps per job")
    p.add_argument("--images", type=int, default=96, help="photos per alignment job")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = p.parse_args()
    print(f"{os.cpu_count()} CPUs; each job a separate process; rates in img/s (training: images stepped)")
    print(f"  {'job':6} {'beside':7} {'setting':38} {'alone':>8} {'beside':>8} {'ratio':>6}  threads alone/beside")
    worst = {}
    for setting in args.settings:
        alone = {job: run([job], setting, args.steps, args.images)[0] for job in ("train", "align")}
        for pair in (("train", "train"), ("align", "align"), ("align", "train")):
            rates = run(list(pair), setting, args.steps, args.images)
            for job, other, r in ((pair[0], pair[1], rates[0]), (pair[1], pair[0], rates[1])):
                if pair[0] == pair[1] and r is rates[1]:
                    continue  # the same job twice: one row, the mean of both
                rate = (rates[0]["rate"] + rates[1]["rate"]) / 2 if pair[0] == pair[1] else r["rate"]
                ratio = rate / alone[job]["rate"]
                worst[setting] = min(worst.get(setting, ratio), ratio)
                print(
                    f"  {job:6} {other:7} {setting:38} {alone[job]['rate']:8.1f} {rate:8.1f} {ratio:6.2f}"
                    f"  {alone[job]['threads']}/{r['threads']}",
                    flush=True,
                )
    print("\nworst ratio beside another job (goal >= 0.40; a fair share is 0.50):")
    for setting, ratio in worst.items():
        print(f"  {setting:38} {ratio:.2f}")


if __name__ == "__main__":
    main()
