"""Config parsing rejects bad params with the key's name; params.yaml and dvc.yaml agree."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import pytest
import yaml

from faceattr.config import SECTIONS, AlignConfig, ConfigError, FinetuneConfig, flatten, load_params, parse
from faceattr.variants import parse_variant

from .conftest import ROOT


@dataclass(frozen=True)
class Inner:
    rate: float = 0.1


@dataclass(frozen=True)
class Outer:
    name: str
    count: int = 1
    mode: Literal["a", "b"] = "a"
    inner: Inner = Inner()
    items: tuple[str, ...] = ()


def test_parse_values_and_defaults() -> None:
    cfg = parse(Outer, {"name": "x", "inner": {"rate": 2}, "items": ["p", "q"]}, "sec")
    assert cfg == Outer("x", 1, "a", Inner(2.0), ("p", "q"))
    assert isinstance(cfg.inner.rate, float)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "x", "cuont": 2}, "unknown key 'sec.cuont'"),
        ({"name": "x", "inner": {"rat": 1}}, "unknown key 'sec.inner.rat'"),
        ({"name": "x", "count": "2"}, "'sec.count' must be int"),
        ({"name": "x", "count": True}, "'sec.count' must be int"),
        ({"name": "x", "inner": {"rate": "fast"}}, "'sec.inner.rate' must be a number"),
        ({"name": "x", "mode": "c"}, "'sec.mode' must be one of ['a', 'b']"),
        ({}, "missing key 'sec.name'"),
        ({"name": "x", "items": "p"}, "'sec.items' must be a list"),
    ],
)
def test_parse_rejects_with_key_name(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse(Outer, raw, "sec")


def test_value_checks_name_the_section() -> None:
    with pytest.raises(ConfigError, match=r"align.*multiple of 16"):
        parse(AlignConfig, {"size": 50}, "align")


def test_every_params_section_parses() -> None:
    params = load_params(ROOT / "params.yaml")
    assert set(SECTIONS) | {"paths"} == set(params)
    for name, cls in SECTIONS.items():
        parse(cls, params[name], name)
    for variant in parse(FinetuneConfig, params["finetune_multitask"], "finetune_multitask").variants:
        assert parse_variant(variant).name == variant


def _lookup(params: dict, dotted: str) -> object:
    node: object = params
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"dvc.yaml uses '{dotted}', missing from params.yaml"
        node = node[part]
    return node


def test_dvc_yaml_references_exist_in_params() -> None:
    params = load_params(ROOT / "params.yaml")
    text = (ROOT / "dvc.yaml").read_text()
    for ref in set(re.findall(r"\$\{([^}]+)\}", text)):
        if ref != "item" and not ref.startswith("item."):
            _lookup(params, ref)
    for name, stage in yaml.safe_load(text)["stages"].items():
        items = stage.get("foreach", [None])  # foreach stages: one generated stage per data role
        stage = stage.get("do", stage)
        for item in items:
            for key in stage.get("params", []):
                _lookup(params, key.replace("${item}", str(item)))
        assert (ROOT / "stages" / f"{name}.py").is_file()
        assert f"stages/{name}.py" in stage["deps"], f"stage {name} must depend on its script"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("vgg-none-age", "unknown backbone 'vgg'"),
        ("attn_cnn-imagenet-age", "pretraining 'imagenet' is not available for attn_cnn"),
        ("face_resnet18-none-height", "tasks must be distinct names"),
        ("face_resnet18-none", "must read"),
        ("face_resnet18-none-gender-dldl", "age options need the age task"),
        ("face_resnet18-none-age-cond", "'cond' (gender-conditioned age) needs the gender task"),
        ("face_resnet18-none-age-frac100", "bad or repeated option 'frac100'"),
        ("face_resnet18-none-age-dldl-group", "bad or repeated option 'group'"),
        ("face_resnet18-none-age-fast", "options are"),
    ],
)
def test_bad_variant_names(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_variant(name)


_LIST_IMPORTS = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("stage", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
for name, mod in sorted(sys.modules.items()):
    if name == "faceattr" or name.startswith("faceattr."):
        print(mod.__file__)
"""


def test_every_imported_library_module_is_a_dep() -> None:
    """Editing library code a stage imports must rerun that stage: each such file is a dep."""
    import subprocess
    import sys
    from pathlib import Path

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # foreach stages
        deps = [ROOT / d for d in stage["deps"] if d.startswith("src/")]
        out = subprocess.run(
            [sys.executable, "-c", _LIST_IMPORTS, str(ROOT / "stages" / f"{name}.py")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for file in map(Path, out):
            assert any(file == d or d in file.parents for d in deps), (
                f"stage {name} imports {file} but lacks it as a dep"
            )


@pytest.mark.parametrize(
    "name",
    [
        "face_resnet18-identity-gender+age+landmarks",
        "attn_cnn-none-gender+age-group-cond",
        "resnet18-imagenet-age+attributes-dldl-uw-frac25",
    ],
)
def test_variant_names_round_trip(name: str) -> None:
    assert parse_variant(name).name == name


def test_variant_options_parse_in_any_order() -> None:
    v = parse_variant("face_resnet18-none-age+gender-frac10-uw-cond-dldl")
    assert v.name == "face_resnet18-none-gender+age-dldl-cond-uw-frac10"
    assert (v.age_head, v.gender_conditioned, v.uncertainty_weighting, v.fraction) == ("dldl", True, True, 10)
    assert v.family == "face_resnet18-none-gender+age-dldl-cond-uw"


def test_params_yaml_is_the_one_source_of_defaults() -> None:
    """Deleting any key of params.yaml is an error naming it, never a silent fallback to a
    dataclass default (which may differ: the code's defaults are not the experiment's)."""
    import copy

    params = load_params(ROOT / "params.yaml")
    checked = 0
    for name, cls in SECTIONS.items():
        for key in flatten(params[name]):
            raw = copy.deepcopy(params[name])
            *path, leaf = key.split(".")
            node = raw
            for part in path:
                node = node[part]
            del node[leaf]
            with pytest.raises(ConfigError) as err:  # a field, or an entry of a mapping such as split pools
                parse(cls, raw, name, complete=True)
            assert f"missing key '{name}.{key}'" in str(err.value) or leaf in str(err.value), (key, err.value)
            checked += 1
    assert checked > 100


def test_params_yaml_survives_dvcs_set_param_round_trip(tmp_path) -> None:
    """`dvc exp run -S` rewrites params.yaml through Hydra: the committed file is in the form it
    writes back, so a run that sets one key changes that line only and keeps every comment (before:
    '""' became "''", flow lists became block lists and the comments inside `variants` were lost)."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    original = (ROOT / "params.yaml").read_text()
    path.write_text(original)
    apply_overrides(str(path), ["base.seed=0"])  # a value it already has
    assert path.read_text() == original
    apply_overrides(str(path), ["finetune_multitask.optim.lr=0.002"])
    changed = [(a, b) for a, b in zip(original.splitlines(), path.read_text().splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and "lr: 0.002" in changed[0][1] and "#" in changed[0][1], changed
