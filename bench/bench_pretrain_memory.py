"""Peak memory of ``pretrain_identity``: this checkout's code against a baseline checkout, same data.

Each run is the stage script in a subprocess (tracking off); its ``/proc/<pid>/status`` is polled
every 0.1 s for resident memory split into private (``RssAnon``: copies a process owns, what
each rank of a multi-process run needs again) and file-backed (``RssFile``: pages of the mapped
``faces.npy``, shared by every process through the page cache and reclaimable). ``VmHWM`` is the
peak resident set as the kernel counts it.

    python bench/bench_pretrain_memory.py --baseline /path/to/old/checkout --store data/aligned/pretrain \\
        --split data/splits/pretrain.csv --raw data/raw/pretrain --params params.yaml [--upsample 112]

``--upsample S`` first writes a copy of the store with every crop resized to S px (the same
images and labels, landmarks scaled), and ``--repeat K`` repeats it K times as K times the
people (``<name>~<k>``; the split file repeated alike): a memory measurement at the size of a
larger identity set without aligning one; its accuracy means nothing. ``--seconds T`` stops
each run after T s (its peaks so far: loading and the first steps), for sets too large to train
an epoch on here. Prints one row per code and the ratio of this checkout's peaks to the
baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile")


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in FIELDS:
                out[key] = int(value.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def measure(
    code: Path, params: Path, store: Path, split: Path, raw: Path, work: Path, seconds: float = 0
) -> dict[str, float]:
    """Run the stage of ``code`` and return its peak memory (bytes), wall time (s) and
    verification accuracy (NaN when stopped after ``seconds``)."""
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(code / "stages" / "pretrain_identity.py"), "--params", str(params)]
    cmd += ["--store", str(store), "--split", str(split), "--raw", str(raw), "--out", str(work / "trunk.pt")]
    cmd += ["--resume", str(work / "resume.pt"), "--metrics", str(work / "metrics.json")]
    cmd += ["--curve", str(work / "curve.csv")]
    env = {**os.environ, "PYTHONPATH": str(code / "src"), "FACEATTR_TRACKING": "off"}
    start = time.perf_counter()
    with (work / "log.txt").open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        peak = dict.fromkeys(FIELDS, 0)
        while proc.poll() is None:
            for k, v in _status(proc.pid).items():
                peak[k] = max(peak[k], v)
            if seconds and time.perf_counter() - start > seconds:
                proc.kill()
                proc.wait()
                return {**peak, "wall_s": time.perf_counter() - start, "verify_acc": float("nan")}
            time.sleep(0.1)
    if proc.returncode:
        raise SystemExit(f"{code}: the stage failed (exit {proc.returncode}); see {work / 'log.txt'}")
    metrics = json.loads((work / "metrics.json").read_text())
    return {**peak, "wall_s": time.perf_counter() - start, "verify_acc": metrics["verify_acc"]}


def repeat(store: Path, split: Path, times: int, out: Path) -> tuple[Path, Path]:
    """``store`` repeated ``times`` times as as many people (``<name>~<k>``), with its split."""
    import pandas as pd

    faces = np.load(store / "faces.npy", mmap_mode="r")
    out.mkdir(parents=True, exist_ok=True)
    big = np.lib.format.open_memmap(out / "faces.npy", "w+", np.uint8, (len(faces) * times, *faces.shape[1:]))
    labels, pools = pd.read_csv(store / "labels.csv"), pd.read_csv(split)
    parts, splits = [], []
    for k in range(times):
        big[k * len(faces) : (k + 1) * len(faces)] = faces
        parts.append(labels.assign(identity=labels["identity"] + f"~{k}", path=labels["path"] + f"~{k}"))
        splits.append(pools.assign(index=pools["index"] + k * len(faces)))
    big.flush()
    del big
    pd.concat(parts).to_csv(out / "labels.csv", index=False)
    (out / "geometry.json").write_text((store / "geometry.json").read_text())
    pd.concat(splits).to_csv(out / "split.csv", index=False)
    return out, out / "split.csv"


def upsample(store: Path, size: int, out: Path) -> Path:
    """A copy of ``store`` with every crop resized to ``size`` px, landmarks scaled alike."""
    import pandas as pd
    from PIL import Image

    faces = np.load(store / "faces.npy", mmap_mode="r")
    out.mkdir(parents=True, exist_ok=True)
    big = np.lib.format.open_memmap(out / "faces.npy", "w+", np.uint8, (len(faces), size, size, 3))
    for i, face in enumerate(faces):
        big[i] = np.asarray(Image.fromarray(np.asarray(face)).resize((size, size), Image.Resampling.BILINEAR))
    big.flush()
    del big
    labels = pd.read_csv(store / "labels.csv")
    scale = size / faces.shape[1]
    for c in [c for c in labels.columns if c.startswith("lm_")]:
        labels[c] = labels[c] * scale
    labels.to_csv(out / "labels.csv", index=False)
    geometry = json.loads((store / "geometry.json").read_text())
    (out / "geometry.json").write_text(json.dumps({**geometry, "size": size}))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True, help="checkout of the code to compare against")
    p.add_argument("--baseline-params", help="params for the baseline (default: --params)")
    p.add_argument("--params", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--raw", required=True)
    p.add_argument("--upsample", type=int, default=0, help="resize every crop to this many px first")
    p.add_argument("--repeat", type=int, default=1, help="repeat the store as this many times the people")
    p.add_argument("--seconds", type=float, default=0, help="stop each run after this long (0: a whole run)")
    p.add_argument("--epochs", type=int, default=1, help="pretrain_identity.optim.epochs for both (default 1)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="faceattr_memory_"))
    store, split = Path(args.store), Path(args.split)
    if args.upsample:
        store = upsample(store, args.upsample, tmp / f"store{args.upsample}")
    if args.repeat > 1:
        store, split = repeat(store, split, args.repeat, tmp / f"repeat{args.repeat}")
    rows = {}
    for name, code, params in (
        ("baseline", Path(args.baseline), Path(args.baseline_params or args.params)),
        ("this checkout", ROOT, Path(args.params)),
    ):
        cfg = yaml.safe_load(params.read_text())
        cfg["pretrain_identity"]["optim"]["epochs"] = args.epochs
        run_params = tmp / f"{name.replace(' ', '_')}.yaml"
        run_params.write_text(yaml.safe_dump(cfg, sort_keys=False))
        work = tmp / name.replace(" ", "_")
        rows[name] = measure(code, run_params, store, split, Path(args.raw), work, args.seconds)
    faces = np.load(store / "faces.npy", mmap_mode="r")
    stop = f", each stopped after {args.seconds:.0f} s" if args.seconds else ""
    size = f"{len(faces)} crops of {faces.shape[1]} px, {faces.nbytes / 2**20:.0f} MiB"
    print(f"store: {size}; {args.epochs} epoch(s){stop}")
    print("| code | peak RSS (VmHWM) | peak private (RssAnon) | peak file-backed (RssFile) | wall | verify acc |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        mib = {k: r[k] / 2**20 for k in FIELDS}
        print(
            f"| {name} | {mib['VmHWM']:.0f} MiB | {mib['RssAnon']:.0f} MiB | {mib['RssFile']:.0f} MiB | "
            f"{r['wall_s']:.0f} s | {100 * r['verify_acc']:.2f} % |"
        )
    base, new = rows["baseline"], rows["this checkout"]
    rss, private = new["VmHWM"] / base["VmHWM"], new["RssAnon"] / base["RssAnon"]
    print(f"ratio this/baseline: peak RSS {rss:.2f}, private {private:.2f}")


if __name__ == "__main__":
    main()
