"""Fine-tuning variants, named ``<backbone>-<pretraining>-<task>+<task>...``.

A name such as ``face_resnet18-identity-gender+age+landmarks`` is readable in the DVC DAG, in
``dvc exp show`` and in MLflow, and it is the only place a variant is defined: the DVC ``matrix``
iterates over the names listed in ``params.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

from faceattr.config import TASKS
from faceattr.models.backbones import BACKBONES, PRETRAININGS


@dataclass(frozen=True)
class Variant:
    backbone: str
    pretraining: str
    tasks: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.backbone}-{self.pretraining}-{'+'.join(self.tasks)}"


def parse_variant(name: str) -> Variant:
    """Parse and check a variant name.

    Raises:
        ValueError: naming the part that is wrong and the accepted choices.
    """
    parts = name.split("-")
    if len(parts) != 3:
        raise ValueError(f"variant '{name}' must read <backbone>-<pretraining>-<task>+<task>")
    backbone, pretraining, tasks = parts
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
    return Variant(backbone, pretraining, ordered)
