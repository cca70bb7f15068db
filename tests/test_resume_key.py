"""What a resume key covers: every input that changes a run's weights, and nothing else."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import torch

from faceattr.config import FinetuneConfig, PretrainIdentityConfig, load_section
from faceattr.train.finetune import run_key
from faceattr.train.loop import fingerprint, recipe
from faceattr.variants import parse_variant

from .conftest import TINY_VARIANTS


def _key(pipeline, store, cfg=None, variant=TINY_VARIANTS[0]) -> str:
    cfg = cfg or load_section(pipeline["params"], "finetune_multitask", FinetuneConfig)
    return run_key(
        parse_variant(variant),
        cfg,
        0,
        store=store,
        split_file=pipeline["split.csv"],
        identity_checkpoint=pipeline["models"] / "pretrain_identity" / "trunk.pt",
        device=torch.device("cpu"),
    )


def test_a_store_with_other_pixels_or_geometry_and_the_same_labels_gets_another_key(pipeline, tmp_path) -> None:
    """align.fill black vs edge: same labels.csv, other crops. The old key hashed labels only, so
    `--all` reused weights trained on the other crops."""
    store = tmp_path / "store"
    shutil.copytree(pipeline["store"], store)
    base = _key(pipeline, store)
    assert _key(pipeline, pipeline["store"]) == base  # a copy of the same content: the same key
    faces = np.load(store / "faces.npy")
    faces[:, :2] = 255 - faces[:, :2]  # other border pixels, as another fill gives
    np.save(store / "faces.npy", faces)
    repainted = _key(pipeline, store)
    assert repainted != base
    geometry = json.loads((store / "geometry.json").read_text())
    (store / "geometry.json").write_text(json.dumps({**geometry, "fill": "edge"}))
    assert _key(pipeline, store) not in (base, repainted)


def test_pretraining_key_covers_the_crops_too(pipeline, tmp_path) -> None:
    from faceattr.train.loop import store_files

    cfg = load_section(pipeline["params"], "pretrain_identity", PretrainIdentityConfig)
    store = tmp_path / "pre"
    shutil.copytree(pipeline["store"].parent / "pretrain", store)
    before = fingerprint(recipe(cfg), 0, *store_files(store))
    faces = np.load(store / "faces.npy")
    np.save(store / "faces.npy", faces[:, :, ::-1].copy())
    assert fingerprint(recipe(cfg), 0, *store_files(store)) != before
    assert [p.name for p in store_files(store)] == ["faces.npy", "labels.csv", "geometry.json"]


def test_params_that_cannot_change_a_run_leave_its_key_alone(pipeline) -> None:
    """`imagenet_weights` (where the ImageNet file is) means nothing to an identity or scratch run."""
    cfg = load_section(pipeline["params"], "finetune_multitask", FinetuneConfig)
    moved = dataclasses.replace(cfg, imagenet_weights="/elsewhere/resnet18.pth", imagenet_missing="fail")
    for variant in (TINY_VARIANTS[0], "face_resnet18-none-gender+age+landmarks"):
        assert _key(pipeline, pipeline["store"], moved, variant) == _key(pipeline, pipeline["store"], cfg, variant)
    other = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=cfg.optim.lr * 2))
    assert _key(pipeline, pipeline["store"], other) != _key(pipeline, pipeline["store"], cfg)


def test_code_digest_ignores_docstrings_and_comments_but_not_code() -> None:
    from faceattr.train.loop import code_digest

    a = 'def f(x):\n    """Double it."""\n    return 2 * x\n'
    documented = '"""A module."""\n\n\ndef f(x):  # why\n    """Double it, because\n    reasons."""\n    return 2 * x\n'
    changed = 'def f(x):\n    """Double it."""\n    return 3 * x\n'
    assert code_digest(a) == code_digest(documented)
    assert code_digest(a) != code_digest(changed)
    only_doc = 'class C:\n    """Only a docstring."""\n'
    assert code_digest(only_doc) == code_digest("class C:\n    pass\n")
