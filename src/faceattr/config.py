"""Typed, frozen configuration parsed once at the edge.

Every stage reads exactly one section of ``params.yaml`` (plus the shared ``base``) into a frozen
dataclass. Unknown keys and wrong types are rejected with the dotted name of the key, so a typo in
``params.yaml`` or in ``dvc exp run -S`` fails at once with a message that names it, instead of
being silently ignored deep inside training.
"""

from __future__ import annotations

import dataclasses
import itertools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from faceattr.io import parse_yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A params file or section that cannot be used as given."""


def parse(cls: type[T], raw: Any, where: str, complete: bool = False) -> T:
    """Parse ``raw`` (plain YAML data) into the frozen dataclass ``cls``.

    Args:
        cls: a dataclass type whose fields carry type hints.
        raw: the mapping read from YAML.
        where: dotted location of ``raw`` in the params file, used in error messages.
        complete: every field must be given (a params file: ``params.yaml`` is the one source of
            defaults, so a deleted key is an error, never a silent fallback to a code default).

    Raises:
        ConfigError: on an unknown or missing key, or a value of the wrong type.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"'{where}' must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key '{where}.{unknown[0]}'; expected one of {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        if name not in raw:
            if complete:
                raise ConfigError(f"missing key '{where}.{name}': the params file must set every key (see params.yaml)")
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing key '{where}.{name}'")
            continue
        values[name] = _coerce(hints[name], raw[name], f"{where}.{name}", complete)
    try:
        return cls(**values)
    except ValueError as err:  # __post_init__ checks of value ranges
        raise ConfigError(f"bad value in '{where}': {err}") from None


def _coerce(hint: Any, value: Any, where: str, complete: bool = False) -> Any:
    """Check ``value`` against the type hint ``hint`` and convert containers to immutable ones."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, where, complete)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for option in inner:  # the first that takes the value (e.g. int | Literal["auto"])
            try:
                return _coerce(option, value, where, complete)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(" or ".join(errors)) if len(errors) > 1 else ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"'{where}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"'{where}' must be a list, got {type(value).__name__}")
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or origin is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{where}' must be a mapping, got {type(value).__name__}")
        return types.MappingProxyType({str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()})
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"'{where}' must be a number, got {value!r}")
        return float(value)
    if hint is int or hint is bool or hint is str:
        if type(value) is not hint:
            raise ConfigError(f"'{where}' must be {hint.__name__}, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at '{where}'")  # a programming error


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data view of a config, for logging as MLflow params and storing in checkpoints."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a params YAML file, with a clear error if it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file '{path}' not found")
    data = parse_yaml(path.read_text())
    if not isinstance(data, dict):
        raise ConfigError(f"params file '{path}' must hold a mapping of sections")
    return data


def check_same_trunk(pretrain: PretrainIdentityConfig, finetune: FinetuneConfig) -> None:
    """Table 1 compares an identity-pretrained trunk with untrained ones: they must be the same
    size, so a fine-tuning width or embedding other than the pretrained trunk's is an error."""
    for key in ("width", "embedding_size"):
        a, b = getattr(finetune, key), getattr(pretrain, key)
        if a != b:
            raise ConfigError(
                f"finetune_multitask.{key} ({a}) differs from pretrain_identity.{key} ({b}): the pretraining "
                "comparison would set networks of different sizes side by side; set both to the same value"
            )


def load_section(path: str | Path, name: str, cls: type[T]) -> T:
    """Parse section ``name`` of the params file at ``path`` into ``cls``."""
    params = load_params(path)
    if name not in params:
        raise ConfigError(f"params file '{path}' has no section '{name}'")
    return parse(cls, params[name], name, complete=True)


# --------------------------------------------------------------------------------------------
# One dataclass per params.yaml section. Units and meaning live in params.yaml's comments.


@dataclass(frozen=True)
class BaseConfig:
    seed: int = 0


@dataclass(frozen=True)
class SyntheticConfig:
    identities: int = 300
    images_per_identity: int = 8
    image_size: int = 128
    age_spread: float = 8.0
    max_rotation: float = 15.0  # degrees of in-plane head rotation
    lighting: float = 0.35  # largest strength of the directional light gradient

    def __post_init__(self) -> None:
        if self.identities < 1 or self.images_per_identity < 1:
            raise ValueError("identities and images_per_identity must be positive")
        if self.max_rotation < 0 or self.lighting < 0:
            raise ValueError("max_rotation and lighting must be non-negative")


# Sources whose records name the person: only these can feed identity pretraining.
IDENTITY_SOURCES = ("agedb", "casia", "celeba", "lfw", "synthetic")
# The labels each source carries (landmarks: given, or MTCNN's at alignment).
SOURCE_TASKS = {
    "synthetic": ("gender", "age", "landmarks", "attributes"),
    "utkface": ("gender", "age", "landmarks"),
    "celeba": ("gender", "landmarks", "attributes"),
    "agedb": ("gender", "age", "landmarks"),
    "casia": ("landmarks",),
    "lfw": ("landmarks",),
}


@dataclass(frozen=True)
class DownloadConfig:
    """One data set: where it comes from and which of its records to keep (``datasets.<role>``)."""

    dataset: str = "synthetic"
    source: str = "synthetic"
    uri: str = ""
    sha256: str = ""
    password_env: str = "FACEATTR_ARCHIVE_PASSWORD"

    duplicates: Literal["keep_one", "drop", "keep_all"] = "keep_one"
    age_range: tuple[float, ...] = (0.0, 120.0)
    max_images: int = 0
    max_identities: int = 0  # 0: all; else a seeded subset of whole people by count, nested across counts
    pairs: str = ""  # verification list (LFW pairs.txt or insightface .bin), inside the data set or absolute
    pair_folds: int = 0  # folds of that list to score (its first N); 0: all
    synthetic: SyntheticConfig = SyntheticConfig()

    def __post_init__(self) -> None:
        if len(self.age_range) != 2 or self.age_range[0] > self.age_range[1]:
            raise ValueError("age_range must be [min, max] with min <= max")
        if self.source not in SOURCE_TASKS:
            raise ValueError(f"unknown source '{self.source}'; choose from {sorted(SOURCE_TASKS)}")
        if self.pair_folds < 0:
            raise ValueError("pair_folds must be >= 0")
        if self.max_identities < 0 or self.max_images < 0:
            raise ValueError("max_identities and max_images must be >= 0 (0: all)")


ROLES = ("pretrain", "finetune")


@dataclass(frozen=True)
class DatasetsConfig:
    """The two data roles: identities for ``pretrain_identity``, labels for fine-tuning and evaluation.

    They may name the same source (CelebA people for both); the split then gives each person to
    one role only.
    """

    pretrain: DownloadConfig = DownloadConfig()
    finetune: DownloadConfig = DownloadConfig()

    def __post_init__(self) -> None:
        if self.pretrain.source not in IDENTITY_SOURCES:
            raise ValueError(
                f"datasets.pretrain.source '{self.pretrain.source}' has no identities, and identity "
                f"pretraining needs them; choose a source that names its people: {list(IDENTITY_SOURCES)} "
                f"(use '{self.pretrain.source}' as datasets.finetune)"
            )
        if self.pretrain.pairs and Path(self.pretrain.pairs).suffix not in (".txt", ".bin"):
            raise ValueError("datasets.pretrain.pairs must be an LFW-style .txt or an insightface .bin")

    def role(self, name: str) -> DownloadConfig:
        if name not in ROLES:
            raise ConfigError(f"unknown data role '{name}'; choose from {list(ROLES)}")
        return getattr(self, name)


@dataclass(frozen=True)
class AlignConfig:
    size: int = 112
    landmarks: Literal["provided", "mtcnn", "auto"] = "auto"
    scale: float = 1.0  # template scale about the crop centre: > 1 zooms in (larger face, less context)
    fill: Literal["black", "edge", "reflect"] = "black"  # how crop pixels outside the photo are filled
    crop: Literal["template", "resize"] = "template"  # resize: keep the data set's own (already aligned) crop
    template: Literal["arcface", "dlib"] = "arcface"  # the five points of crop: template (dlib: its 150-px chips)
    fit: Literal["mtcnn", "dlib"] = "mtcnn"  # whose five points the warp fits (dlib: its shape predictor's)

    min_probability: float = 0.9
    min_face_size: int = 20
    detect_max_side: int = 640  # px; detect on a copy this large at most (0: full resolution)
    retry_rotated: bool = False  # no confident face: search the photo turned by 90°, 180°, 270°
    batch_size: int = 32
    workers: int = 2
    max_drop_fraction: float = 0.05

    def __post_init__(self) -> None:
        if not 0.5 <= self.scale <= 2.0:
            raise ValueError(f"scale must lie in [0.5, 2], got {self.scale}")
        if self.size % 16 and self.template != "dlib":
            raise ValueError(
                f"size must be a multiple of 16 (FaceResNet's four strides), got {self.size}; only align.template: "
                "dlib (dlib_resnet's 150-px chips) takes other sizes"
            )
        if self.template == "dlib" and (self.crop != "template" or self.scale != 1.0):
            raise ValueError(
                "align.template: dlib is dlib's own chip: it needs align.crop: template and align.scale: 1"
            )
        if self.fit == "dlib" and (self.template != "dlib" or self.landmarks == "provided"):
            raise ValueError(
                "align.fit: dlib fits dlib's own five points onto dlib's chip: it needs align.template: dlib, and "
                "MTCNN's box to find them in (align.landmarks: mtcnn or auto, not provided)"
            )
        if not 0.0 <= self.max_drop_fraction <= 1.0:
            raise ValueError("max_drop_fraction must lie in [0, 1]")


ROLE_POOLS = {"pretrain": ("pretrain", "verify"), "finetune": ("train", "val", "test")}


@dataclass(frozen=True)
class SplitConfig:
    protocol: Literal["identity", "official", "file", "folds"] = "identity"
    file: str = ""
    index: int = 0  # protocol folds: which of the file's splits (AgeDB's benchmark has 0-4)

    stratify: bool = True

    pretrain: dict[str, float] = dataclasses.field(default_factory=lambda: {"pretrain": 0.8, "verify": 0.2})
    finetune: dict[str, float] = dataclasses.field(default_factory=lambda: {"train": 0.6, "val": 0.2, "test": 0.2})
    shared_to_pretrain: float = 0.5  # both roles hold the same people: share of them given to pretraining
    identity_map: str = ""  # CSV (pretrain,finetune) of identities declared one person across two data sets

    def __post_init__(self) -> None:
        for role, pools in ROLE_POOLS.items():
            fractions = getattr(self, role)
            if set(fractions) != set(pools):
                raise ValueError(f"{role} needs exactly the pools {list(pools)}")
            if any(v < 0 for v in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
                raise ValueError(f"{role} fractions must be non-negative and sum to 1")
        if not 0.0 <= self.shared_to_pretrain <= 1.0:
            raise ValueError("shared_to_pretrain must lie in [0, 1]")
        if self.protocol in ("file", "folds") and not self.file:
            raise ValueError(f"protocol '{self.protocol}' needs split.file")


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    schedule: Literal["constant", "cosine"] = "constant"
    trunk_lr_scale: float = 1.0  # fine-tuning: a trunk that starts from weights trains at lr × this (heads at lr)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_size and lr must be positive")
        if not 0 < self.trunk_lr_scale <= 1:
            raise ValueError("trunk_lr_scale must lie in (0, 1]")


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    max_rotation: float = 5.0  # degrees
    max_shift: float = 0.04  # fraction of the crop side
    max_scale: float = 0.05  # relative


@dataclass(frozen=True)
class AccelConfig:
    channels_last: bool = True
    compile: bool = False
    precision: Literal["auto", "fp32"] = "auto"  # auto: bf16 autocast on CUDA and CPUs with native bf16
    resume_every_s: float = 30.0  # write the resume state at most this often (and after the last epoch)

    def __post_init__(self) -> None:
        if self.resume_every_s < 0:
            raise ValueError(f"accel.resume_every_s must be >= 0 (0: after every epoch), got {self.resume_every_s}")


@dataclass(frozen=True)
class MarginConfig:
    head: Literal["combined", "adaface"] = "combined"
    s: float = 64.0
    m1: float = 1.0
    m2: float = 0.5
    m3: float = 0.0
    h: float = 0.333

    def __post_init__(self) -> None:
        if self.s <= 0 or self.m1 <= 0:
            raise ValueError("margin s and m1 must be positive")


@dataclass(frozen=True)
class PretrainIdentityConfig:
    backbone: str = "face_resnet18"
    width: int = 64
    embedding_size: int = 512
    margin: MarginConfig = MarginConfig()
    verify_folds: int = 10
    verify_pairs_per_fold: int = 60
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()
    accel: AccelConfig = AccelConfig()


TASKS = ("gender", "age", "landmarks", "attributes")


@dataclass(frozen=True)
class AgeHeadConfig:
    loss: Literal["l1", "smooth_l1"] = "l1"  # regression head, on standardised age
    max_age: int = 100  # dldl: one logit per whole year 0..max_age
    sigma: float = 2.0  # dldl: std (years) of the Gaussian label distribution
    group_edges: tuple[float, ...] = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0)

    def __post_init__(self) -> None:
        if self.max_age < 1 or self.sigma <= 0:
            raise ValueError("age_head.max_age and age_head.sigma must be positive")
        edges = self.group_edges
        if not edges or any(b <= a for a, b in itertools.pairwise(edges)) or edges[0] <= 0:
            raise ValueError("age_head.group_edges must be positive and strictly increasing")


@dataclass(frozen=True)
class FinetuneConfig:
    variants: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    width: int = 64
    embedding_size: int = 512
    imagenet_weights: str = ""  # empty: torch hub's cache (``$TORCH_HOME/hub/checkpoints``)
    resnet_stem: Literal["imagenet", "face"] = "imagenet"
    dlib_features: Literal["embedding", "pooled"] = (
        "embedding"  # dlib_resnet: heads on its 128-d descriptor or 256-d pool
    )
    imagenet_missing: Literal["not_run", "fail"] = "not_run"
    age_head: AgeHeadConfig = AgeHeadConfig()
    loss_weights: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"gender": 1.0, "age": 1.0, "landmarks": 1.0, "attributes": 1.0}
    )
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()
    accel: AccelConfig = AccelConfig()
    # frac<P> variants: steps (every fraction takes the optimizer steps of the whole training pool,
    # so a curve measures data, not steps) | epochs (the same epochs over fewer images: fewer steps)
    fraction_budget: Literal["steps", "epochs"] = "steps"
    # decay of an exponential moving average of the weights, updated after every optimizer step;
    # validation, calibration and the saved model use the average (0: off, the last weights)
    ema: float = 0.0
    # test-time augmentation: none | flip (each crop also mirrored, both outputs averaged; the
    # checkpoint's meta carries it, so evaluate, predict, ONNX and serving apply it alike)
    tta: Literal["none", "flip"] = "none"
    # runs trained at once per device (how the matrix is scheduled, never what a run computes: no
    # stage lists it as a param and no run's resume key holds it); auto: 1 on a CPU, 4 per CUDA GPU
    runs_per_device: int | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.runs_per_device, int) and self.runs_per_device < 1:
            raise ValueError(f"runs_per_device must be a positive number of runs or 'auto', got {self.runs_per_device}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema is the moving average's decay per step, in [0, 1) (0: off), got {self.ema}")
        if set(self.loss_weights) != set(TASKS):
            raise ValueError(f"loss_weights needs exactly the tasks {list(TASKS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be a non-empty list of distinct integers")


INTERVALS = {
    "clusters": "bootstrap over clusters (people, or byte-identical image groups) of the seed-averaged metric",
    "seeds_and_clusters": "two-level bootstrap: seeds and clusters (people, or byte-identical image groups) drawn",
}


@dataclass(frozen=True)
class EvaluateConfig:
    cs_threshold: float = 5.0  # years, for CS@k
    batch_size: int = 256
    bootstrap: int = 2000  # resamples of the test set's clusters for CIs and paired comparisons
    confidence: float = 0.95
    ensembles: tuple[tuple[str, ...], ...] = ()  # each: the member variants, averaged
    interval: str = "clusters"  # clusters (people / duplicate groups) | seeds_and_clusters (two-level)

    def __post_init__(self) -> None:
        if self.bootstrap < 100 or not 0.5 < self.confidence < 1:
            raise ValueError("bootstrap must be >= 100 and confidence in (0.5, 1)")
        if self.interval not in INTERVALS:
            raise ValueError(f"interval '{self.interval}' unknown; choose from {sorted(INTERVALS)}")
        if any(len(m) < 2 for m in self.ensembles):
            raise ValueError("an ensemble needs at least two member variants")

    @property
    def ensemble_members(self) -> dict[str, tuple[str, ...]]:
        """Each ensemble by its name, ``ensemble(<variant>,<variant>...)``."""
        return {f"ensemble({','.join(m)})": m for m in self.ensembles}


@dataclass(frozen=True)
class ProbeConfig:
    l2_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths (C; ridge alpha = 1/C), chosen on val
    l1_path: int = 16  # points of the L1-sparse probe's path, C log-spaced from l1_min_c to l1_max_c
    l1_min_c: float = 0.001
    l1_max_c: float = 10.0
    share: float = 0.95  # sparse probe: fewest units reaching this share of the full probe (validation)
    bootstrap: int = 2000  # resamples of the test clusters for the probes' CIs
    confidence: float = 0.95
    max_train: int = 0  # 0: every training crop; else a seeded subset of about this many
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not self.l2_grid or any(c <= 0 for c in self.l2_grid):
            raise ValueError("l2_grid needs one or more positive values")
        if self.l1_path < 2 or not 0 < self.l1_min_c < self.l1_max_c:
            raise ValueError("l1_path must be >= 2 and 0 < l1_min_c < l1_max_c")
        if not 0 < self.share <= 1:
            raise ValueError("share must be in (0, 1]")
        if self.bootstrap < 100 or not 0.5 < self.confidence < 1:
            raise ValueError("bootstrap must be >= 100 and confidence in (0.5, 1)")


@dataclass(frozen=True)
class ReportConfig:
    title: str = "faceattr report"
    decimals: int = 2


@dataclass(frozen=True)
class ExportConfig:
    tasks: str = "auto"  # task set whose validation-best run is exported, e.g. gender+age+landmarks; auto: the largest
    opset: int = 18
    parity_tolerance: float = 1e-3  # largest |ONNX Runtime - PyTorch| of any raw head output; above it the stage fails

    def __post_init__(self) -> None:
        if self.tasks != "auto" and any(t not in TASKS for t in self.tasks.split("+")):
            raise ValueError(f"tasks '{self.tasks}': use auto or tasks from {list(TASKS)} joined by '+'")


SECTIONS: dict[str, type] = {
    "base": BaseConfig,
    "datasets": DatasetsConfig,
    "align": AlignConfig,
    "split": SplitConfig,
    "pretrain_identity": PretrainIdentityConfig,
    "finetune_multitask": FinetuneConfig,
    "evaluate": EvaluateConfig,
    "probe": ProbeConfig,
    "report": ReportConfig,
    "export": ExportConfig,
}
