"""Fine-tuning variants, named ``<backbone>-<pretraining>-<task>+<task>[-<option>...]``.

A name such as ``face_resnet18-identity-gender+age+landmarks`` is readable in the DVC DAG, in
``dvc exp show`` and in MLflow, and it is the only place a variant is defined: the DVC ``matrix``
iterates over the names listed in ``params.yaml`` (times the seeds). Options, in any order:

- ``dldl`` / ``group``: the age head (label distribution over years / age groups); without one,
  age is regressed;
- ``cond``: gender-conditioned age (the predicted gender probability feeds the age head);
- ``uw``: uncertainty weighting of the task losses (learned log-variances) instead of fixed weights;
- ``frac<P>``: train on P % of the training images (1 to 99; data-efficiency curves).

A run is one variant at one seed, named ``<variant>-s<seed>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from faceattr.config import TASKS
from faceattr.models.backbones import BACKBONES, PRETRAININGS

OPTIONS = ("dldl", "group", "cond", "uw", "frac<P>")


@dataclass(frozen=True)
class Variant:
    backbone: str
    pretraining: str
    tasks: tuple[str, ...]
    age_head: str = "regression"
    gender_conditioned: bool = False
    uncertainty_weighting: bool = False
    fraction: int = 100  # percent of the training images

    @property
    def name(self) -> str:
        parts = [self.backbone, self.pretraining, "+".join(self.tasks)]
        if self.age_head != "regression":
            parts.append(self.age_head)
        if self.gender_conditioned:
            parts.append("cond")
        if self.uncertainty_weighting:
            parts.append("uw")
        if self.fraction != 100:
            parts.append(f"frac{self.fraction}")
        return "-".join(parts)

    @property
    def family(self) -> str:
        """The name without the training fraction: the points of one data-efficiency curve."""
        return Variant(**{**self.__dict__, "fraction": 100}).name


def run_name(variant: str, seed: int) -> str:
    """One training of a variant: the name of its outputs and of its MLflow run."""
    return f"{variant}-s{seed}"


def parse_variant(name: str) -> Variant:
    """Parse and check a variant name.

    Raises:
        ValueError: naming the part that is wrong and the accepted choices.
    """
    parts = name.split("-")
    if len(parts) < 3:
        raise ValueError(f"variant '{name}' must read <backbone>-<pretraining>-<task>+<task>[-<option>...]")
    backbone, pretraining, tasks, *options = parts
    if backbone not in BACKBONES:
        raise ValueError(f"variant '{name}': unknown backbone '{backbone}'; choose from {sorted(BACKBONES)}")
    if pretraining not in PRETRAININGS[backbone]:
        raise ValueError(
            f"variant '{name}': pretraining '{pretraining}' is not available for {backbone}; "
            f"choose from {list(PRETRAININGS[backbone])}"
        )
    task_list = tuple(tasks.split("+"))
    unknown = [t for t in task_list if t not in TASKS]
    if unknown or not task_list or len(set(task_list)) != len(task_list):
        raise ValueError(f"variant '{name}': tasks must be distinct names from {list(TASKS)}")
    ordered = tuple(t for t in TASKS if t in task_list)
    kw: dict[str, object] = {}
    for opt in options:
        frac = re.fullmatch(r"frac(\d+)", opt)
        if opt in ("dldl", "group") and "age_head" not in kw:
            kw["age_head"] = opt
        elif opt == "cond" and "gender_conditioned" not in kw:
            kw["gender_conditioned"] = True
        elif opt == "uw" and "uncertainty_weighting" not in kw:
            kw["uncertainty_weighting"] = True
        elif frac and 1 <= int(frac.group(1)) <= 99 and "fraction" not in kw:
            kw["fraction"] = int(frac.group(1))
        else:
            raise ValueError(f"variant '{name}': bad or repeated option '{opt}'; options are {list(OPTIONS)}")
    if ("age_head" in kw or "gender_conditioned" in kw) and "age" not in ordered:
        raise ValueError(f"variant '{name}': age options need the age task")
    if "gender_conditioned" in kw and "gender" not in ordered:
        raise ValueError(f"variant '{name}': 'cond' (gender-conditioned age) needs the gender task")
    return Variant(backbone, pretraining, ordered, **kw)  # type: ignore[arg-type]
