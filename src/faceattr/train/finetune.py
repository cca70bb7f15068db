"""Fine-tuning one variant: a trunk (from identity pretraining, ImageNet, or scratch) + task heads."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from faceattr.config import SOURCE_TASKS, AgeHeadConfig, AugmentConfig, FinetuneConfig, OptimConfig, to_dict
from faceattr.distributed import current
from faceattr.inference.batches import decoded_batches
from faceattr.io import atomic_path, write_json, write_rows_csv
from faceattr.metrics import MetricSums
from faceattr.models.backbones import create_backbone, output_size
from faceattr.models.checkpoint import build_trunk, load_checkpoint
from faceattr.models.heads import MultiTaskModel
from faceattr.profile import phase
from faceattr.train.calibration import calibration
from faceattr.train.data import (
    NORMALISATION,
    FaceTensors,
    LabelCodec,
    Prefetch,
    augment,
    epoch_batches,
    for_device,
    load_split,
    subset,
    to_input,
)
from faceattr.train.loop import (
    bf16,
    code_fingerprint,
    fingerprint,
    fit,
    lr_at,
    make_optimizer,
    nhwc,
    precision_name,
    prepare,
    recipe,
    seed_epoch,
    set_lr,
    steps_per_epoch,
    store_files,
)
from faceattr.train.losses import LossWeighting, multitask_loss
from faceattr.variants import Variant

log = logging.getLogger(__name__)
EVAL_BATCH_SIZE = 256  # inference only: any size gives the same metrics; larger is faster


def imagenet_weights_path(configured: str) -> Path:
    """Where torchvision's ImageNet ResNet-18 weights must be; raise with the remedy if absent."""
    from torchvision.models import ResNet18_Weights

    url = ResNet18_Weights.IMAGENET1K_V1.url
    path = Path(configured) if configured else Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not path.is_file():
        raise FileNotFoundError(
            f"ImageNet weights for resnet18 not found at '{path}'. This pipeline never downloads at "
            f"run time: fetch {url} to that path (or set finetune_multitask.imagenet_weights)."
        )
    return path


def initial_weights(variant: Variant, cfg: FinetuneConfig) -> Path | None:
    """The weights file a variant starts from other than an identity checkpoint: ImageNet's for
    ``imagenet``, dlib's ``.dat`` for ``dlib``; None from scratch. Raises with the remedy where
    the file is absent."""
    if variant.pretraining == "imagenet":
        return imagenet_weights_path(cfg.imagenet_weights)
    if variant.pretraining == "dlib":
        from faceattr.models.dlib_resnet import dat_path

        return dat_path()
    return None


def normalisation(variant: Variant) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input mean and std of a variant: ImageNet's for its weights, dlib's for dlib's network
    (from its weights or from scratch alike), [-1, 1] otherwise."""
    if variant.pretraining == "imagenet":
        return NORMALISATION["imagenet"]
    return NORMALISATION["dlib" if variant.backbone == "dlib_resnet" else "default"]


def check_geometry(variant: Variant, data: FaceTensors) -> None:
    """dlib's weights learned dlib's 150-px chips: stop before training on any other crop."""
    if variant.pretraining == "dlib" and (data.template_name != "dlib" or data.size != 150):
        raise ValueError(
            f"variant '{variant.name}' starts from dlib's weights, which learned dlib's 150-px face chips, but the "
            f"fine-tuning crops are {data.size} px on the {data.template_name} template: set align.template: dlib "
            "and align.size: 150 ($(faceattr preset dlib))"
        )


def missing_weights(variant: Variant, cfg: FinetuneConfig) -> str | None:
    """Why the variant cannot start (ImageNet weights absent), when ``imagenet_missing`` allows
    marking it "not run" instead of failing; None when it can train."""
    if variant.pretraining != "imagenet" or cfg.imagenet_missing == "fail":
        return None
    try:
        imagenet_weights_path(cfg.imagenet_weights)
    except FileNotFoundError as err:
        return str(err)
    return None


def write_not_run(reason: str, out: Path, resume: Path, metrics: Path, curve: Path) -> None:
    """The declared outputs of a run that did not train: a status file where the model would be,
    the reason in its metrics, an empty curve and resume state (DVC needs every output)."""
    status = {"status": "not run", "reason": reason}
    write_json(status, out.with_name("status.json"))
    write_json(status, metrics)
    write_rows_csv([], curve, columns=("epoch",))
    with atomic_path(resume) as tmp:
        torch.save({"key": "not run"}, tmp)


def build_model(
    variant: Variant,
    cfg: FinetuneConfig,
    input_size: int,
    identity_checkpoint: Path | None,
    attribute_names: tuple[str, ...] = (),
) -> tuple[MultiTaskModel, dict[str, Any]]:
    """Create the variant's model with its initial weights; returns it and its structural meta."""
    if variant.pretraining == "identity":
        if identity_checkpoint is None:
            raise ValueError(f"variant '{variant.name}' needs the pretrain_identity checkpoint")
        state, meta = load_checkpoint(identity_checkpoint)
        if meta["input_size"] != input_size:
            raise ValueError(f"identity checkpoint is for {meta['input_size']} px crops, data is {input_size} px")
        if meta["backbone"] != variant.backbone:
            raise ValueError(
                f"variant '{variant.name}' wants an identity-pretrained {variant.backbone}, but pretrain_identity "
                f"trained {meta['backbone']}: set pretrain_identity.backbone to {variant.backbone}"
            )
        trunk = build_trunk(meta)
        trunk.load_state_dict(state)
        trunk_meta = {k: meta[k] for k in ("backbone", "width", "embedding_size", "stem")}
        if meta.get("norm"):
            trunk_meta["norm"] = meta["norm"]
    else:
        trunk = create_backbone(
            variant.backbone,
            input_size=input_size,
            embedding_size=cfg.embedding_size,
            width=cfg.width,
            weights_path=initial_weights(variant, cfg),
            stem=cfg.resnet_stem,
            features=cfg.dlib_features,
        )
        trunk_meta = {
            "backbone": variant.backbone,
            "width": cfg.width,
            "embedding_size": cfg.embedding_size,
            "stem": cfg.resnet_stem,
        }
        if variant.backbone == "dlib_resnet":
            trunk_meta["features"], trunk_meta["norm"] = cfg.dlib_features, trunk.norm
    trunk_meta["head_input"] = output_size(trunk)  # what the heads see (dlib_resnet pooled: 256)
    heads_meta = {
        "tasks": list(variant.tasks),
        "age_head": variant.age_head,
        "max_age": cfg.age_head.max_age,
        "group_edges": list(cfg.age_head.group_edges),
        "gender_conditioned": variant.gender_conditioned,
        "attribute_names": list(attribute_names) if "attributes" in variant.tasks else [],
    }
    model = MultiTaskModel(
        trunk,
        variant.tasks,
        trunk_meta["head_input"],
        age_head=variant.age_head,
        max_age=cfg.age_head.max_age,
        group_edges=cfg.age_head.group_edges,
        gender_conditioned=variant.gender_conditioned,
        attributes=len(heads_meta["attribute_names"]),
    )
    return model, {**trunk_meta, **heads_meta}


@dataclass(frozen=True)
class Batches:
    """What one pass over a split needs besides the model."""

    data: FaceTensors
    codec: LabelCodec
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    channels_last: bool = False
    age_cfg: AgeHeadConfig = field(default_factory=AgeHeadConfig)
    bf16: bool = False  # bf16 autocast (``faceattr.train.loop.bf16``)

    def targets(self, idx: torch.Tensor, landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training targets of the rows ``idx`` (landmarks already moved by augmentation)."""
        d, dev = self.data, self.device
        attrs = None if d.attributes is None else d.attributes[idx].to(dev)
        return self.codec.encode(d.gender[idx].to(dev), d.age[idx].to(dev), landmarks, attrs)


class MultitaskObjective(nn.Module):
    """The model and, with uncertainty weighting, the learned loss weights as one module whose
    forward returns the loss dict: every trained parameter sits under DistributedDataParallel and
    gets averaged gradients (the weights' log-variances drifted apart per rank when only the
    model was wrapped). The network runs under bf16 autocast where ``half``, the losses in fp32."""

    def __init__(
        self,
        model: MultiTaskModel,
        weighting: dict[str, float] | LossWeighting,
        age_head: str,
        age_cfg: AgeHeadConfig,
        half: bool,
    ) -> None:
        super().__init__()
        self.model, self.age_head, self.age_cfg, self.half = model, age_head, age_cfg, half
        if isinstance(weighting, LossWeighting):
            self.weighting: dict[str, float] | LossWeighting = weighting  # a submodule: trained, under DDP
        else:
            self.fixed = dict(weighting)

    @property
    def weights(self) -> dict[str, float] | LossWeighting:
        return self.weighting if hasattr(self, "weighting") else self.fixed

    def forward(self, x: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.half):
            outputs = self.model(x)
        return multitask_loss(outputs, targets, self.weights, self.age_head, self.age_cfg)


def train_one_epoch(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    b: Batches,
    optim: OptimConfig,
    aug: AugmentConfig,
    epoch: int,
    seed: int,
    steps: int | None = None,
    ema: EMA | None = None,
) -> dict[str, float]:
    """One epoch of masked multi-task training of ``net`` (the possibly DDP-wrapped
    ``MultitaskObjective``); returns the mean of each loss term and the last learning rate.
    ``steps``: the epoch's optimizer steps on this rank (default: one pass over this rank's shard
    of the data); the schedule spans ``steps × epochs``. ``ema``: updated after every step."""
    net.train()
    generator = seed_epoch(seed, epoch)
    per_epoch = steps if steps is not None else steps_per_epoch(len(b.data), optim.batch_size, current().world)
    total, warmup = per_epoch * optim.epochs, int(optim.warmup_epochs * per_epoch)
    sums: dict[str, torch.Tensor] = {}
    count, lr = 0, float("nan")
    batches = Prefetch.on(
        b.device, epoch_batches(len(b.data), optim.batch_size, generator, steps), b.data.images.__getitem__
    )
    for i, (idx, images) in enumerate(batches):
        if len(idx) < 2:  # BatchNorm needs two samples
            continue
        lr = lr_at(epoch * per_epoch + i, total, warmup, optim)
        set_lr(optimizer, lr)
        x = to_input(images, b.device, b.mean, b.std)
        x, lm = augment(x, b.data.landmarks[idx].to(b.device, non_blocking=True), aug, generator)
        batches.ahead()  # this step's random numbers are drawn: gather the next batch while it trains
        if b.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        losses = net(x, b.targets(idx, lm))
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        if ema is not None:
            ema.update()
        for k, v in losses.items():
            sums[k] = sums.get(k, 0) + v.detach()
        count += 1
    row = {f"train_{k}": float(v) / max(count, 1) for k, v in sums.items()}
    row["lr"] = lr  # the last step's: the schedule's end value after the last epoch
    weighting = getattr(net, "module", net).weights  # DDP keeps the objective as .module
    if isinstance(weighting, LossWeighting):  # where uncertainty weighting has moved the weights
        row.update({f"weight_{t}": w for t, w in weighting.weights().items()})
    return row


class EMA(nn.Module):
    """An exponential moving average of ``model``'s weights and BatchNorm statistics
    (``finetune_multitask.ema``, the decay per optimizer step); the first update copies them.
    A module, so the resume state holds it beside the model."""

    def __init__(self, model: MultiTaskModel, decay: float) -> None:
        super().__init__()
        self.average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self._source = [model]  # not a submodule: its weights are saved as the model's own

    @property
    def model(self) -> MultiTaskModel:
        return self.average.module

    @torch.no_grad()
    def update(self) -> None:
        self.average.update_parameters(self._source[0])


@torch.no_grad()
def evaluate(model: nn.Module, b: Batches, batch_size: int, cs_threshold: float = 5.0) -> dict[str, float]:
    """Metrics of ``model`` on a split (gender accuracy, age MAE and CS@k, landmark NME)."""
    sums = MetricSums(b.device, cs_threshold)
    batches = decoded_batches(
        model, b.codec, b.data.images, b.device, b.mean, b.std, batch_size, half=b.bf16, channels_last=b.channels_last
    )
    for idx, pred in batches:  # decode and metrics in fp32
        true = {"gender": b.data.gender[idx], "age": b.data.age[idx], "landmarks": b.data.landmarks[idx]}
        if b.data.attributes is not None:
            true["attributes"] = b.data.attributes[idx]
        sums.update(pred, {k: v.to(b.device) for k, v in true.items()})
    return sums.compute()


def validation_calibration(model: nn.Module, b: Batches, val: FaceTensors) -> dict[str, Any]:
    """Gender temperature and age-spread scale of the trained ``model``, chosen on the validation
    split (:mod:`faceattr.train.calibration`), as the checkpoint's meta keeps them."""
    chunks: dict[str, list[torch.Tensor]] = {}
    batches = decoded_batches(
        model, b.codec, b.data.images, b.device, b.mean, b.std, EVAL_BATCH_SIZE, half=b.bf16,
        channels_last=b.channels_last,
    )  # fmt: skip
    for _, pred in batches:
        for k in ("gender", "age", "age_std"):
            if k in pred:
                chunks.setdefault(k, []).append(pred[k].float().cpu())
    pred = {k: torch.cat(v) for k, v in chunks.items()}
    return calibration(pred, val.gender, val.age.float())


def labelled(data: FaceTensors, task: str) -> int:
    """How many rows of ``data`` carry a label for ``task``."""
    if task == "gender":
        return int((data.gender >= 0).sum())
    if task == "age":
        return int(torch.isfinite(data.age).sum())
    if task == "landmarks":
        return int(torch.isfinite(data.landmarks).flatten(1).all(1).sum())
    if data.attributes is None or not data.attributes.shape[1]:
        return 0
    return int(torch.isfinite(data.attributes).any(1).sum())


def check_task_labels(variant: Variant, data: FaceTensors) -> None:
    """Stop before training when the fine-tuning data has no label for one of the variant's tasks."""
    for task in variant.tasks:
        if not labelled(data, task):
            having = sorted(src for src, tasks in SOURCE_TASKS.items() if task in tasks)
            raise ValueError(
                f"variant '{variant.name}' trains '{task}', but the fine-tuning data (datasets.finetune) has no "
                f"{task} labels in its training pool; sources with {task} labels: {having}"
            )


def epoch_steps(variant: Variant, cfg: FinetuneConfig, pool: int, train: int, world: int) -> int:
    """Optimizer steps per epoch on each rank. A ``frac<P>`` variant with ``fraction_budget:
    steps`` takes the steps of the whole training pool (``pool`` images), cycling through its
    ``train`` images, so a data-efficiency curve compares the same optimisation on less data;
    with ``epochs`` it takes one pass over its images (P % of the steps)."""
    rows = pool if variant.fraction < 100 and cfg.fraction_budget == "steps" else train
    return steps_per_epoch(rows, cfg.optim.batch_size, world)


def run_key(
    variant: Variant,
    cfg: FinetuneConfig,
    seed: int,
    *,
    store: Path,
    split_file: Path,
    identity_checkpoint: Path | None,
    device: torch.device,
) -> str:
    """The inputs a run's resume state is valid for, and only those: variant, params, seed, split,
    the store's crops, labels and geometry, the trunk it starts from (the identity checkpoint, or
    the ImageNet weights file), its precision and the training code.

    Params that cannot change this run are left out: the matrix (``variants``, ``seeds``) and how
    it is scheduled (``runs_per_device``), and ``imagenet_weights`` / ``imagenet_missing`` for a run
    that does not start from ImageNet.
    """
    if variant.pretraining == "identity":
        init: Path | None = identity_checkpoint
    elif variant.pretraining == "imagenet" and missing_weights(variant, cfg) is not None:
        init = None  # an ImageNet run marked "not run"
    else:  # ImageNet's or dlib's weights file (raises with the remedy where absent); None from scratch
        init = initial_weights(variant, cfg)
    half = bf16(device, cfg.accel)
    unused = ("variants", "seeds", "imagenet_weights", "imagenet_missing", "runs_per_device")
    if variant.backbone != "dlib_resnet":
        unused += ("dlib_features",)
    params = {k: v for k, v in recipe(cfg).items() if k not in unused}
    return fingerprint(variant.name, params, seed, split_file, *store_files(store), init, half, code_fingerprint())


def finetune(
    variant: Variant,
    cfg: FinetuneConfig,
    *,
    seed: int,
    store: Path,
    split_file: Path,
    identity_checkpoint: Path | None,
    device: torch.device,
    resume_path: Path | None,
    on_epoch: Callable[[dict[str, float]], None],
) -> tuple[MultiTaskModel, dict[str, Any], list[dict[str, float]]]:
    """Train one variant at one seed; returns the model, its checkpoint meta and the history.

    A ``frac<P>`` variant trains on a subset of the training images drawn with ``seed``, so the
    seeds of a data-efficiency point differ in both initialisation and the images they see.
    """
    torch.manual_seed(seed)
    with phase("data loading"):
        full = load_split(store, split_file, ("train",)).with_own_template()  # crop resize: train rows' mean
        check_task_labels(variant, full)
        check_geometry(variant, full)
        train = subset(full, variant.fraction, seed)
        val = replace(load_split(store, split_file, ("val",)), template_points=full.template_points)
    codec = LabelCodec.fit(
        train, age_head=variant.age_head, max_age=cfg.age_head.max_age, group_edges=cfg.age_head.group_edges
    )
    model, model_meta = build_model(variant, cfg, train.size, identity_checkpoint, train.attribute_names)
    if cfg.tta == "flip":
        model.flip_at_test(train.template().tolist(), train.size, codec.landmark_unit)
    mean, std = normalisation(variant)
    cl, half = nhwc(device, cfg.accel), bf16(device, cfg.accel)
    tb, vb = (Batches(for_device(d, device), codec, mean, std, device, cl, cfg.age_head, half) for d in (train, val))
    weighting: dict[str, float] | LossWeighting = dict(cfg.loss_weights)
    modules: dict[str, nn.Module] = {"model": model}
    if variant.uncertainty_weighting:
        weighting = LossWeighting(variant.tasks)
        modules["weighting"] = weighting
    objective = MultitaskObjective(model, weighting, codec.age_head, cfg.age_head, half)
    net = prepare(objective, device, cfg.accel)  # what we call: every trained parameter under DDP
    ema = EMA(model, cfg.ema) if cfg.ema else None  # after prepare: on the device, in its layout
    if ema is not None:
        modules["ema"] = ema
    final = ema.model if ema is not None else model  # what is validated, calibrated and saved
    pretrained = variant.pretraining != "none"  # its trunk starts from weights: optim.trunk_lr_scale applies
    optimizer = make_optimizer(objective, cfg.optim, model.trunk if pretrained else None)
    key = run_key(
        variant, cfg, seed, store=store, split_file=split_file, identity_checkpoint=identity_checkpoint, device=device
    )
    world = current().world
    steps = epoch_steps(variant, cfg, len(full), len(train), world)
    history = fit(
        modules=modules,
        optimizer=optimizer,
        epochs=cfg.optim.epochs,
        train_epoch=lambda e: train_one_epoch(net, optimizer, tb, cfg.optim, cfg.augment, e, seed, steps, ema),
        validate=lambda: {f"val_{k}": v for k, v in evaluate(final, vb, EVAL_BATCH_SIZE).items()},
        resume_path=resume_path,
        resume_key=key,
        on_epoch=on_epoch,
        resume_every_s=cfg.accel.resume_every_s,
    )
    meta = {
        "kind": "multitask",
        "variant": variant.name,
        "pretraining": variant.pretraining,
        **model_meta,
        "train_images": len(train),
        "fraction_budget": cfg.fraction_budget if variant.fraction < 100 else None,
        "steps_per_epoch": steps,  # on each rank
        "world_size": world,  # global batch = world_size × optim.batch_size
        "train_images_sha256": hashlib.sha256("\n".join(train.paths).encode()).hexdigest(),
        "input_size": train.size,
        "mean": list(mean),
        "std": list(std),
        "template": train.template().tolist(),
        "template_scale": train.template_scale,
        "template_points": train.template_points,  # align.crop resize: what predict aligns a new photo to
        "geometry": full.geometry(),  # how the crops were cut: predict cuts a new photo the same way
        "age_mean": codec.age_mean,
        "age_std": codec.age_std,
        "landmark_unit": codec.landmark_unit,
        "params": {k: v for k, v in to_dict(cfg).items() if k != "runs_per_device"},  # alone or beside others
        "ema": cfg.ema,  # the saved weights are the moving average (0: the last weights)
        "tta": cfg.tta,  # load_multitask applies it
        "calibration": validation_calibration(final, vb, val),
        "seed": seed,
        "precision": precision_name(half),  # what accel.precision came to on this machine
    }
    return final.cpu(), meta, history
