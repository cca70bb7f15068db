"""Shared fixtures: a tiny params file and a tiny pipeline run in a temporary folder."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
os.environ.setdefault("FACEATTR_TRACKING", "off")
os.environ.setdefault("FACEATTR_DEVICE", "cpu")

TINY_VARIANTS = [
    "face_resnet18-identity-gender+age+landmarks",
    "face_resnet18-none-gender+age+landmarks",
    "face_resnet18-identity-age",
    "resnet18-none-gender",
    "resnet18-imagenet-gender",
    "face_resnet18-identity-gender+age+landmarks-frac50",
]
TINY_SEEDS = [0, 1]


def load_stage(name: str) -> ModuleType:
    """Import ``stages/<name>.py`` as a module (stages are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def load_bench(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` as a module (benches are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def tiny_params(tmp: Path) -> Path:
    """The project's params.yaml shrunk to seconds of CPU work."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for role in ("pretrain", "finetune"):
        params["datasets"][role]["synthetic"].update(identities=20, images_per_identity=4, image_size=64)
    params["align"]["size"] = 32
    for section in ("pretrain_identity", "finetune_multitask"):
        params[section].update(width=4, embedding_size=16)
        params[section]["optim"].update(epochs=2, batch_size=16)
    params["pretrain_identity"].update(verify_folds=2, verify_pairs_per_fold=8)
    params["finetune_multitask"]["variants"] = TINY_VARIANTS
    params["finetune_multitask"]["seeds"] = TINY_SEEDS
    params["evaluate"]["bootstrap"] = 200
    params["probe"]["bootstrap"] = 200
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def run_pipeline(tmp: Path, params: Path) -> dict[str, Path]:
    """Every stage's ``main(argv)`` in order, as dvc.yaml wires them (both data roles)."""
    names = ("raw", "aligned", "splits", "models", "ckpt", "metrics", "plots", "reports", "predictions")
    p = {k: tmp / k for k in names}
    a = ["--params", str(params)]
    for role in ("pretrain", "finetune"):
        load_stage("download").main(
            [
                *a,
                "--role",
                role,
                "--out",
                str(p["raw"] / role),
                "--metrics",
                str(p["metrics"] / f"download_{role}.json"),
            ]
        )
        load_stage("align").main(
            [
                *a,
                "--raw",
                str(p["raw"] / role),
                "--out",
                str(p["aligned"] / role),
                "--dropped",
                str(p["metrics"] / f"dropped_{role}.csv"),
                "--metrics",
                str(p["metrics"] / f"align_{role}.json"),
            ]
        )
    load_stage("split").main(
        [
            *a,
            "--pretrain-labels",
            str(p["aligned"] / "pretrain" / "labels.csv"),
            "--finetune-labels",
            str(p["aligned"] / "finetune" / "labels.csv"),
            "--pretrain-raw",
            str(p["raw"] / "pretrain"),
            "--out",
            str(p["splits"]),
            "--metrics",
            str(p["metrics"] / "split.json"),
        ]
    )
    p["split.csv"] = p["splits"] / "finetune.csv"  # what fine-tuning and evaluate read
    p["store"] = p["aligned"] / "finetune"
    trunk = p["models"] / "pretrain_identity" / "trunk.pt"
    load_stage("pretrain_identity").main(
        [
            *a,
            "--store",
            str(p["aligned"] / "pretrain"),
            "--split",
            str(p["splits"] / "pretrain.csv"),
            "--raw",
            str(p["raw"] / "pretrain"),
            "--out",
            str(trunk),
            "--resume",
            str(p["ckpt"] / "pretrain.pt"),
            "--metrics",
            str(p["metrics"] / "pretrain_identity.json"),
            "--curve",
            str(p["plots"] / "pretrain_identity.csv"),
        ]
    )
    load_stage("finetune_multitask").main(
        [
            *a,
            "--all",
            "--store",
            str(p["store"]),
            "--split",
            str(p["split.csv"]),
            "--identity",
            str(trunk),
            "--out",
            str(p["models"] / "finetune"),
            "--resume",
            str(p["ckpt"]),
            "--metrics",
            str(p["metrics"] / "finetune"),
            "--curve",
            str(p["plots"] / "finetune"),
        ]
    )
    load_stage("evaluate").main(
        [
            *a,
            "--models",
            str(p["models"] / "finetune"),
            "--store",
            str(p["store"]),
            "--split",
            str(p["split.csv"]),
            "--out",
            str(p["metrics"] / "evaluate.json"),
            "--summary",
            str(p["metrics"] / "summary.json"),
            "--headline",
            str(p["metrics"] / "headline.json"),
            "--variant-metrics",
            str(p["metrics"] / "variants"),
            "--predictions",
            str(p["predictions"]),
        ]
    )
    load_stage("probe").main(
        [
            *a,
            "--store",
            str(p["store"]),
            "--split",
            str(p["split.csv"]),
            "--identity",
            str(trunk),
            "--out",
            str(p["metrics"] / "probe.json"),
        ]
    )
    load_stage("export").main(
        [
            *a,
            "--evaluation",
            str(p["metrics"] / "evaluate.json"),
            "--models",
            str(p["models"] / "finetune"),
            "--store",
            str(p["store"]),
            "--split",
            str(p["split.csv"]),
            "--out",
            str(p["models"] / "export" / "model.onnx"),
            "--metrics",
            str(p["metrics"] / "export.json"),
        ]
    )
    load_stage("report").main(
        [
            *a,
            "--evaluation",
            str(p["metrics"] / "evaluate.json"),
            "--pretrain",
            str(p["metrics"] / "pretrain_identity.json"),
            "--pretrain-curve",
            str(p["plots"] / "pretrain_identity.csv"),
            "--curves",
            str(p["plots"] / "finetune"),
            "--out",
            str(p["reports"] / "report.md"),
            "--figures",
            str(p["reports"] / "figures"),
            "--vega-template",
            str(p["reports"] / "vega_offline.html"),
            "--dvc-curves",
            str(p["plots"] / "curves.csv"),
            "--dvc-efficiency",
            str(p["plots"] / "data_efficiency.csv"),
            "--attention",
            str(p["predictions"] / "figures"),
            "--split-metrics",
            str(p["metrics"] / "split.json"),
            "--align-metrics",
            str(p["metrics"] / "align_finetune.json"),
            "--probe",
            str(p["metrics"] / "probe.json"),
        ]
    )
    return p


def training_argv(pipeline: dict[str, Path], params: Path, tmp: Path, role: str = "finetune") -> list[str]:
    """Arguments every training stage takes, reading the tiny pipeline's ``role`` and writing into ``tmp``."""
    extra = ["--raw", str(pipeline["raw"] / "pretrain")] if role == "pretrain" else []
    return [
        *extra,
        "--params",
        str(params),
        "--store",
        str(pipeline["aligned"] / role),
        "--split",
        str(pipeline["splits"] / f"{role}.csv"),
        "--out",
        str(tmp / "o.pt"),
        "--resume",
        str(tmp / "r.pt"),
        "--metrics",
        str(tmp / "m.json"),
        "--curve",
        str(tmp / "c.csv"),
    ]


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("pipeline")
    paths = run_pipeline(tmp, tiny_params(tmp))
    paths["params"] = tmp / "params.yaml"
    return paths


@pytest.fixture(autouse=True)
def _tracking_store_answers():
    """Each test starts with the tracking store's process-wide outage latch cleared."""
    from faceattr import tracking

    tracking.OUTAGE.reset()
    yield
    tracking.OUTAGE.reset()
