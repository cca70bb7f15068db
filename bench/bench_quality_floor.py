"""Quality floor: faceattr's ``resnet18-none-gender+age`` against the plain loop a user would try first.

    python bench/bench_quality_floor.py [--workspace .] [--epochs E] [--seed 0] [--variant V]
        [--plain-schedule constant|warmup_cosine] [--plain-epochs E | --plain-budget-s S] [--model RUN_DIR]

Both train in this process on the same split (the workspace's ``data/splits/finetune.csv``), for
the same epochs, batch size, learning rate and weight decay (``finetune_multitask.optim`` of the
workspace's ``params.yaml``), and are scored on the same test images:

1. **plain loop**: torchvision ResNet-18 from scratch (``num_classes=3``: two gender logits and
   the age in years), trained on the data set's own images (``data/raw/finetune/<path>``) resized
   to the crop size with PIL, no re-alignment, horizontal flips, ImageNet normalisation,
   cross-entropy + L1 on years, AdamW at a constant learning rate (``--plain-input aligned``:
   the same loop on faceattr's aligned crops instead; ``--plain-schedule warmup_cosine``: the
   schedule a careful user gives it, one epoch of linear warm-up then cosine decay to zero;
   ``--plain-epochs``: its own number of epochs; ``--plain-budget-s``: as many epochs as fit in
   that many seconds, decoding included, counted from the first epoch's time, so a run given
   faceattr's wall time needs no guess; the warm-up is that first epoch either way);
2. **faceattr**: the variant (default ``resnet18-none-gender+age``) through
   ``faceattr.train.finetune.finetune`` on the aligned store (``data/aligned/finetune``),
   exactly as its DVC stage trains it, scored with the evaluate stage's ``predict``; or, with
   ``--model``, a run faceattr already trained (e.g. the best recipe's seed 0 on all of UTKFace),
   scored the same way without training it again (its training time is its run's, not this
   process's).

Prints gender accuracy and age MAE of both, the ratio faceattr / plain, and a paired bootstrap
of the difference over the test split's clusters (its people, else its byte-identical image
groups; the unit is printed), one training seed each. Run it in a workspace where ``split`` has run on the
real data (see the README's real-data section for the command).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mib

from faceattr.config import FinetuneConfig, load_section
from faceattr.evaluation.scoring import per_image_scores, predict
from faceattr.statistics import bootstrap_ci, paired_bootstrap
from faceattr.train.data import FaceTensors, batch_indices, load_split
from faceattr.train.finetune import finetune
from faceattr.train.loop import bf16, precision_name
from faceattr.variants import parse_variant

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def read_raw(raw: Path, data: FaceTensors, size: int) -> torch.Tensor:
    """The data set's own images of ``data``'s rows, resized to ``size`` × ``size`` (uint8 NCHW)."""
    out = torch.empty(len(data), 3, size, size, dtype=torch.uint8)
    for i, rel in enumerate(data.paths):
        path = raw / rel
        if not path.is_file():
            raise FileNotFoundError(f"raw image '{path}' not found: run download@finetune in this workspace")
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB").resize((size, size), Image.BILINEAR))
        out[i] = torch.from_numpy(arr).permute(2, 0, 1)
    return out


def normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET[0]).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET[1]).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor at optimiser step ``step``: linear warm-up over ``warmup`` steps to 1,
    then cosine decay to 0 at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def epochs_within(budget_s: float, spent_s: float, first_epoch_s: float) -> int:
    """Epochs (at least the one already run) that fit in ``budget_s`` seconds when ``spent_s``
    went before the first epoch and that epoch took ``first_epoch_s``."""
    return max(1, int((budget_s - spent_s) // first_epoch_s))


def plain_loop(
    train_x: torch.Tensor,
    train: FaceTensors,
    test_x: torch.Tensor,
    cfg: FinetuneConfig,
    seed: int,
    age_loss: str = "years",
    schedule: str = "constant",
    epochs: int = 0,
    budget_s: float = 0.0,
    spent_s: float = 0.0,
) -> tuple[dict[str, np.ndarray], int]:
    """The simple thing: ResNet-18 from scratch, CE + L1(years), AdamW, flips; test predictions
    and the epochs it trained. ``schedule``: constant, or one epoch of linear warm-up then cosine
    decay (``warmup_cosine``); ``epochs``: 0 for faceattr's; ``budget_s`` (> 0): instead, as many
    epochs as fit in that many seconds, ``spent_s`` of them gone before training (decoding),
    decided after the first epoch (the warm-up, which does not depend on the total)."""
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=3)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    gender, age = train.gender, train.age
    known = torch.isfinite(age)
    shift, scale = (float(age[known].mean()), float(age[known].std())) if age_loss == "standardised" else (0.0, 1.0)
    generator = torch.Generator().manual_seed(seed)
    epochs = epochs or cfg.optim.epochs
    per_epoch = -(-len(train_x) // cfg.optim.batch_size)
    total, warmup = epochs * per_epoch, per_epoch

    steps = {"total": total}  # the cosine's length, set again once a budget has timed the first epoch

    def factor(step: int) -> float:
        return 1.0 if schedule == "constant" else warmup_cosine(step, warmup, steps["total"])

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    epoch, start = 0, time.perf_counter()
    while epoch < epochs:
        model.train()
        for idx in batch_indices(len(train_x), cfg.optim.batch_size, generator):
            if len(idx) < 2:
                sched.step()
                continue
            x = normalise(train_x[idx])
            flip = torch.rand(len(idx), generator=generator) < 0.5
            x[flip] = x[flip].flip(-1)
            out = model(x)
            g, a = gender[idx], age[idx]
            known_g, known_a = g >= 0, torch.isfinite(a)
            target = (a[known_a] - shift) / scale
            loss = F.cross_entropy(out[known_g, :2], g[known_g]) + F.l1_loss(out[known_a, 2], target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        epoch += 1
        if budget_s and epoch == 1:
            epochs = epochs_within(budget_s, spent_s, time.perf_counter() - start)
            steps["total"] = epochs * per_epoch
        print(f"  plain loop: epoch {epoch}/{epochs}", flush=True)
    model.eval()
    probs, ages = [], []
    with torch.no_grad():
        for idx in batch_indices(len(test_x), 256, None):
            out = model(normalise(test_x[idx]))
            probs.append(out[:, :2].softmax(1)[:, 1])
            ages.append(out[:, 2] * scale + shift)
    return {"gender_prob": torch.cat(probs).numpy(), "age": torch.cat(ages).numpy().astype(np.float64)}, epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", default=".", help="project folder whose split, store and raw images to use")
    p.add_argument("--variant", default="resnet18-none-gender+age", help="faceattr variant to train")
    p.add_argument("--epochs", type=int, default=0, help="override finetune_multitask.optim.epochs (0: keep)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=2000, help="resamples of the test images")
    p.add_argument(
        "--plain-input",
        choices=["raw", "aligned"],
        default="raw",
        help="what the plain loop trains on: the data set's own images resized (default), or faceattr's aligned "
        "crops (isolates the crop geometry from the training recipe)",
    )
    p.add_argument(
        "--plain-age-loss",
        choices=["years", "standardised"],
        default="years",
        help="the plain loop's age loss: L1 in years (default), or L1 on standardised age as faceattr's",
    )
    p.add_argument(
        "--plain-schedule",
        choices=["constant", "warmup_cosine"],
        default="constant",
        help="the plain loop's learning rate: constant (default, a first loop), or one epoch of linear warm-up then "
        "cosine decay (the schedule a careful user gives it)",
    )
    p.add_argument(
        "--plain-size",
        type=int,
        default=0,
        help="the plain loop's input size in px (raw input only; 0: the aligned store's, faceattr's)",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--plain-epochs", type=int, default=0, help="the plain loop's epochs (0: faceattr's)")
    budget.add_argument(
        "--plain-budget-s",
        type=float,
        default=0.0,
        help="give the plain loop this wall time instead (seconds, decoding included): as many epochs as fit, "
        "counted from its first epoch (e.g. the wall_s of faceattr's run)",
    )
    p.add_argument(
        "--model", help="score this trained faceattr run (its folder or model.pt) instead of training --variant"
    )
    p.add_argument("--plain-only", action="store_true", help="train and score the plain loop only (diagnostics)")
    args = p.parse_args()
    ws = Path(args.workspace)
    store, split, raw = ws / "data/aligned/finetune", ws / "data/splits/finetune.csv", ws / "data/raw/finetune"
    cfg = load_section(ws / "params.yaml", "finetune_multitask", FinetuneConfig)
    if args.epochs:
        cfg = replace(cfg, optim=replace(cfg.optim, epochs=args.epochs))
    train = load_split(store, split, ("train",))
    test = load_split(store, split, ("test",))
    size = args.plain_size = args.plain_size or train.size
    if args.plain_input == "aligned" and size != train.size:
        p.error(f"--plain-size {size} needs --plain-input raw: the aligned store '{store}' holds {train.size}-px crops")
    print(
        f"{len(train)} train / {len(test)} test images of '{split}', plain loop at {size} px, faceattr at "
        f"{train.size} px, {cfg.optim.epochs} epochs, "
        f"batch {cfg.optim.batch_size}, AdamW lr {cfg.optim.lr} wd {cfg.optim.weight_decay}, seed {args.seed}",
        flush=True,
    )

    start = time.perf_counter()
    if args.plain_input == "aligned":
        train_x, test_x = train.images, test.images
    else:
        train_x, test_x = read_raw(raw, train, size), read_raw(raw, test, size)
    plain, args.plain_epochs = plain_loop(
        train_x,
        train,
        test_x,
        cfg,
        args.seed,
        args.plain_age_loss,
        args.plain_schedule,
        args.plain_epochs,
        args.plain_budget_s,
        time.perf_counter() - start,
    )
    plain_s = time.perf_counter() - start
    if args.plain_only:
        s_plain = per_image_scores(plain, test, cfg.age_head.group_edges, 5.0)
        acc, mae = 100 * np.nanmean(s_plain["gender_correct"]), np.nanmean(s_plain["age_abs_err"])
        print(
            f"plain loop on {args.plain_input} images, age loss {args.plain_age_loss}: gender {acc:.2f} %, "
            f"age MAE {mae:.2f} years ({plain_s:.0f} s)"
        )
        return

    start = time.perf_counter()
    if args.model:
        from faceattr.models.checkpoint import load_multitask

        path = Path(args.model)
        model, meta = load_multitask(path / "model.pt" if path.is_dir() else path)
        args.variant = f"{meta['variant']}-s{meta['seed']} (trained before)"
    else:
        model, meta = train_variant(args, cfg, ws, store, split)
    args.half = bf16(torch.device("cpu"), cfg.accel)  # scored as the evaluate stage scores it on this machine
    ours = predict(model, meta, test, torch.device("cpu"), 256, half=args.half)
    ours_s = time.perf_counter() - start
    report(args, plain, ours, test, cfg, plain_s, ours_s)


def train_variant(args: argparse.Namespace, cfg: FinetuneConfig, ws: Path, store: Path, split: Path) -> tuple:
    variant = parse_variant(args.variant)
    model, meta, _ = finetune(
        variant,
        cfg,
        seed=args.seed,
        store=store,
        split_file=split,
        identity_checkpoint=ws / "models/pretrain_identity/trunk.pt" if variant.pretraining == "identity" else None,
        device=torch.device("cpu"),
        resume_path=None,
        on_epoch=lambda row: print(f"  faceattr: epoch {int(row['epoch'])}/{cfg.optim.epochs}", flush=True),
    )
    return model, meta


def report(args, plain, ours, test, cfg, plain_s: float, ours_s: float) -> None:
    edges = cfg.age_head.group_edges
    s_plain = per_image_scores(plain, test, edges, 5.0)
    s_ours = per_image_scores(ours, test, edges, 5.0)
    groups = np.asarray(test.groups) if test.groups else None
    unit = f"{len(set(test.groups))} clusters ({test.group_unit})" if test.groups else f"{len(test)} images"
    print(f"\nQuality floor on {len(test)} test images (CI: bootstrap over {unit}, one seed each)")
    plain_name = "plain loop" if args.plain_input == "raw" else "plain on aligned"
    budget = f" (as many as fit in {args.plain_budget_s:.0f} s)" if args.plain_budget_s else ""
    print(
        f"  plain loop: {args.plain_size} px, {args.plain_epochs} epochs{budget}, {args.plain_schedule} learning "
        "rate, fp32"
    )
    print(f"  {'metric':16} {plain_name:>24} {'faceattr ' + args.variant:>40} {'faceattr/plain':>15}")
    for metric, key, scale in (("gender acc %", "gender_correct", 100), ("age MAE years", "age_abs_err", 1)):
        a, b = s_ours[key] * scale, s_plain[key] * scale
        ca, cb = bootstrap_ci(a, args.bootstrap, groups=groups), bootstrap_ci(b, args.bootstrap, groups=groups)
        print(
            f"  {metric:16} {np.nanmean(b):8.2f} [{cb[0]:6.2f}, {cb[1]:6.2f}] "
            f"{np.nanmean(a):24.2f} [{ca[0]:6.2f}, {ca[1]:6.2f}] {np.nanmean(a) / np.nanmean(b):15.3f}"
        )
        d = paired_bootstrap(a, b, args.bootstrap, groups=groups)
        diff = f"{d['diff']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}], p = {d['p']:.3f}"
        print(f"  {'':16} faceattr − plain {diff} (paired bootstrap over the test clusters)")
    print(
        f"  wall time: plain loop {plain_s:.0f} s (incl. decoding), faceattr {ours_s:.0f} s"
        f"{' (scoring only: the run trained before)' if args.model else ''}, {precision_name(args.half)}; "
        f"peak RSS {peak_rss_mib():.0f} MiB"
    )


if __name__ == "__main__":
    main()
