"""Two data roles: an identity source for pretraining, an attribute source for fine-tuning.

No person in both roles; a pretraining source without identities and a task without labels stop
at once with the param's name; both fine-tuning arms see the same images; external verification
lists are scored with the LFW protocol; the crop geometry puts landmarks where the template says.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from faceattr.cli import main as cli
from faceattr.config import ConfigError, DatasetsConfig, SplitConfig, parse
from faceattr.data import manifest
from faceattr.data.align import align_face, template
from faceattr.data.packed import StoreWriter
from faceattr.data.split import split_roles
from faceattr.train.pretrain import score_pair_list

from .conftest import ROOT, TINY_SEEDS


def _labels(people: list[str], per_person: int = 4, partition: list[str] | None = None) -> pd.DataFrame:
    n = len(people) * per_person
    return pd.DataFrame(
        {
            "path": [f"img/{p}_{k}.jpg" for p in people for k in range(per_person)],
            "identity": [p for p in people for _ in range(per_person)],
            "sha256": [None] * n,
            "gender": [i % 2 for i in range(len(people)) for _ in range(per_person)],
            "age": [20.0 + i % 50 for i in range(len(people)) for _ in range(per_person)],
            "partition": partition if partition is not None else [None] * n,
        }
    )


def _used_people(labels: pd.DataFrame, frame: pd.DataFrame) -> set[str]:
    return set(labels.loc[(frame["split"] != "excluded").to_numpy(), "identity"])


def test_same_source_in_both_roles_gives_each_person_to_one_role() -> None:
    people = [f"{i}" for i in range(100)]
    labels = _labels(people)
    result = split_roles(labels, labels.copy(), SplitConfig(), seed=0, sources=("celeba", "celeba"))
    pre, fin = _used_people(labels, result.pretrain), _used_people(labels, result.finetune)
    assert not pre & fin and pre | fin == set(people)
    assert len(pre) == 50, "split.shared_to_pretrain 0.5 of 100 shared people"
    assert result.metrics["shared_identities"] == 100 and result.metrics["shared_given_to_pretraining"] == 50
    excluded = result.metrics["excluded_by_reason"]
    assert excluded == {
        "pretrain": {"identity_given_to_finetuning": 200},
        "finetune": {"identity_given_to_pretraining": 200},
    }
    assert set(result.finetune["split"]) == {"train", "val", "test", "excluded"}
    assert set(result.pretrain["split"]) == {"pretrain", "verify", "excluded"}


def test_official_partition_keeps_its_val_and_test_people_for_finetuning() -> None:
    people = [f"{i}" for i in range(50)]
    partition = ["train"] * 120 + ["val"] * 40 + ["test"] * 40  # people 0-29 train, 30-39 val, 40-49 test
    labels = _labels(people, partition=partition)
    cfg = SplitConfig(protocol="official")
    result = split_roles(labels, labels.copy(), cfg, seed=0, sources=("celeba", "celeba"))
    pre = _used_people(labels, result.pretrain)
    assert pre and all(int(p) < 30 for p in pre)
    assert (result.finetune["split"][120:160] == "val").all() and (result.finetune["split"][160:] == "test").all()
    assert not pre & _used_people(labels, result.finetune)


def test_different_sources_keep_all_their_people_and_list_people_are_not_trained() -> None:
    """CASIA names its people "0".."10571", CelebA "1".."10177": the same strings, other people.
    Raw strings collided (199 of 200 CelebA people were excluded); names are per data set."""
    ids, attrs = _labels([str(i) for i in range(40)]), _labels([str(i) for i in range(1, 41)])
    listed = frozenset({"0", "1", "2"})
    result = split_roles(ids, attrs, SplitConfig(), seed=0, pair_identities=listed, sources=("casia", "celeba"))
    assert result.metrics["shared_identities"] == 0
    assert result.metrics["identity_mapping"].startswith("none declared: casia and celeba are different data sets")
    assert (result.finetune["split"] != "excluded").all()
    in_list = ids["identity"].isin(listed).to_numpy()
    assert (result.pretrain["split"][in_list] == "pairs").all()
    assert not (result.pretrain["split"][~in_list] == "pairs").any()


def test_people_shared_across_data_sets_only_through_a_declared_map(tmp_path) -> None:
    from faceattr.data.split import read_identity_map

    ids, attrs = _labels([f"n{i}" for i in range(40)]), _labels([str(i) for i in range(40)])
    path = tmp_path / "map.csv"
    path.write_text("pretrain,finetune\nn3,3\nn7,7\n")  # two people in both sets, under other names
    mapping = read_identity_map(path, "lfw", "celeba")
    cfg = SplitConfig(identity_map=str(path))
    result = split_roles(ids, attrs, cfg, seed=0, sources=("lfw", "celeba"), identity_map=mapping)
    assert (
        result.metrics["shared_identities"] == 2
        and "declared in map.csv: 2 people" in result.metrics["identity_mapping"]
    )
    pre, fin = _used_people(ids, result.pretrain), _used_people(attrs, result.finetune)
    for p_name, f_name in (("n3", "3"), ("n7", "7")):
        assert (p_name in pre) != (f_name in fin), "each shared person in exactly one role"
    path.write_text("pretrain,person\nn3,3\n")
    with pytest.raises(ValueError, match=r"identity_map .* lacks the column\(s\) \['finetune'\]"):
        read_identity_map(path, "lfw", "celeba")


def test_pretraining_source_without_identities_fails_at_once() -> None:
    with pytest.raises(ConfigError, match=r"datasets.pretrain.source 'utkface' has no identities.*celeba"):
        parse(DatasetsConfig, {"pretrain": {"source": "utkface"}, "finetune": {"source": "utkface"}}, "datasets")
    unnamed = _labels(["a", "b"]).assign(identity=None)  # e.g. AgeDB files without names
    with pytest.raises(ValueError, match=r"datasets.pretrain\) has no identities"):
        split_roles(unnamed, _labels(["c", "d"]), SplitConfig(), seed=0, sources=("agedb", "utkface"))


def test_download_stage_stops_before_anything_on_a_source_without_identities(tmp_path) -> None:
    import subprocess
    import sys

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["datasets"]["pretrain"]["source"] = "utkface"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, str(ROOT / "stages" / "download.py"), "--params", str(tmp_path / "params.yaml")]
    proc = subprocess.run(
        [*cmd, "--role", "finetune", "--out", str(tmp_path / "raw"), "--metrics", str(tmp_path / "m.json")],
        capture_output=True,
        text=True,
        env={"FACEATTR_TRACKING": "off", "PATH": ""},
    )
    assert proc.returncode == 1 and not (tmp_path / "raw").exists()
    assert "datasets.pretrain.source 'utkface' has no identities" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_task_without_labels_fails_in_check_params_and_before_training(tmp_path, capsys, pipeline) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["datasets"]["finetune"]["source"] = "utkface"
    params["finetune_multitask"]["variants"] = ["face_resnet18-identity-gender+attributes"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    assert cli(["check-params", str(tmp_path / "p.yaml")]) == 1
    assert "'utkface' has no labels for" in capsys.readouterr().err

    from faceattr.train.data import load_split
    from faceattr.train.finetune import check_task_labels
    from faceattr.variants import parse_variant

    data = load_split(pipeline["store"], pipeline["split.csv"], ("train",))
    no_age = data.__class__(**{**data.__dict__, "age": torch.full_like(data.age, float("nan"))})
    with pytest.raises(ValueError, match=r"trains 'age'.*datasets.finetune.*\['agedb', 'synthetic', 'utkface'\]"):
        check_task_labels(parse_variant("face_resnet18-none-gender+age"), no_age)
    check_task_labels(parse_variant("face_resnet18-none-gender+age"), data)


def test_identity_and_none_arms_fine_tune_on_the_same_images(pipeline) -> None:
    models = pipeline["models"] / "finetune"
    for seed in TINY_SEEDS:
        arms = [
            json.loads((models / f"face_resnet18-{p}-gender+age+landmarks-s{seed}" / "meta.json").read_text())
            for p in ("identity", "none")
        ]
        assert arms[0]["train_images_sha256"] == arms[1]["train_images_sha256"]
        assert arms[0]["train_images"] == arms[1]["train_images"] > 0
    split = pd.read_csv(pipeline["splits"] / "pretrain.csv")
    pre_labels = pd.read_csv(pipeline["aligned"] / "pretrain" / "labels.csv")
    fin_labels = pd.read_csv(pipeline["store"] / "labels.csv")
    assert not set(pre_labels["identity"]) & set(fin_labels["identity"]), "the synthetic sets hold other people"
    assert set(split["split"]) == {"pretrain", "verify"}


class _ColourTrunk(torch.nn.Module):
    """An "embedding" that is the mean colour of the image: faces of one colour are one person."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_pair_list_scorer_on_a_fixture_with_a_known_answer(tmp_path) -> None:
    colours = {"a": (250, 10, 10), "b": (10, 250, 10), "c": (10, 10, 250), "d": (250, 250, 10)}
    rows = [(p, k) for p in colours for k in range(2)]
    writer = StoreWriter(tmp_path / "store", len(rows), 16)
    for p, _ in rows:
        writer.add(np.full((16, 16, 3), colours[p], np.uint8))
    records = [{**manifest.empty_record(f"img/{p}_{k}.jpg"), "identity": p} for p, k in rows]
    writer.close(pd.DataFrame(records))
    # 2 folds of 2 same + 2 different pairs; one pair names a file the align stage dropped
    lines = ["2\t2"]
    lines += ["a\ta_0.jpg\ta_1.jpg", "b\tb_0.jpg\tb_1.jpg", "a\ta_0.jpg\tb\tb_1.jpg", "a\ta_1.jpg\tb\tb_0.jpg"]
    lines += ["c\tc_0.jpg\tc_1.jpg", "d\td_0.jpg\tgone.jpg", "c\tc_0.jpg\td\td_1.jpg", "c\tc_1.jpg\td\td_0.jpg"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    cpu = torch.device("cpu")
    result = score_pair_list(_ColourTrunk(), tmp_path / "pairs.txt", 0, tmp_path / "store", 16, cpu)
    assert result == {"list_acc": 1.0, "list_acc_std": 0.0, "list_pairs": 7, "list_pairs_missing": 1}
    # fold 0 calls two people one: its threshold (from fold 1) gets 3 of 4 right; fold 1's (from
    # fold 0, best at 3 of 4 with the smallest threshold) gets all 4: mean 0.875, std 0.125
    wrong = ["2\t2", "a\ta_0.jpg\ta_1.jpg", "a\ta_0.jpg\tb_0.jpg", "a\ta_0.jpg\tb\tb_1.jpg", "c\tc_0.jpg\td\td_0.jpg"]
    wrong += ["c\tc_0.jpg\tc_1.jpg", "d\td_0.jpg\td_1.jpg", "a\ta_1.jpg\tc\tc_1.jpg", "b\tb_0.jpg\td\td_1.jpg"]
    (tmp_path / "wrong.txt").write_text("\n".join(wrong) + "\n")
    worse = score_pair_list(_ColourTrunk(), tmp_path / "wrong.txt", 0, tmp_path / "store", 16, cpu)
    assert worse["list_acc"] == pytest.approx(0.875) and worse["list_acc_std"] == pytest.approx(0.125)
    only_first = score_pair_list(_ColourTrunk(), tmp_path / "wrong.txt", 0, tmp_path / "store", 16, cpu)
    assert only_first["list_pairs"] == 8
    with pytest.raises(ValueError, match="fewer than 2 folds"):
        score_pair_list(_ColourTrunk(), tmp_path / "wrong.txt", 1, tmp_path / "store", 16, cpu)


@pytest.mark.parametrize("scale", [0.8, 1.0, 1.25])
def test_crop_geometry_puts_landmarks_on_the_template(scale) -> None:
    """A face of known landmarks lands where template(size, scale) says, at each scale."""
    size, photo = 64, np.zeros((240, 240, 3), np.uint8)
    angle = np.radians(12.0)
    rotation = 1.4 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = template(112) @ rotation.T + [50.0, 30.0]  # the template, rotated, scaled and moved
    for x, y in points:
        photo[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3] = 255
    face = align_face(Image.fromarray(photo), points, size, scale)
    tpl = template(size, scale)
    np.testing.assert_allclose(tpl - size / 2, (template(size) - size / 2) * scale)
    np.testing.assert_allclose(face.landmarks, tpl, atol=1e-6)
    for x, y in tpl:  # and the pixels drawn there arrive there
        patch = face.crop[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2]
        assert patch.max() > 100, (scale, x, y)


def test_fill_fraction_and_border_fill() -> None:
    """A photo that covers the crop needs no fill; a tight chip does, and `edge` fills it with the
    photo's border instead of black."""
    size = 64
    tpl = template(size)
    big = np.full((400, 400, 3), 128, np.uint8)
    face = align_face(Image.fromarray(big), tpl + 168, size)  # the face in the middle of a large photo
    assert face.fill_fraction == 0.0
    chip = np.full((40, 40, 3), 200, np.uint8)
    points = tpl - tpl.mean(0) + 20  # a 40-px chip round a face sized for a 64-px crop: the crop reaches past it
    black = align_face(Image.fromarray(chip), points, size, 1.0, "black")
    edge = align_face(Image.fromarray(chip), points, size, 1.0, "edge")
    zoomed = align_face(Image.fromarray(chip), points, size, 1.3, "black")
    assert 0.2 < black.fill_fraction < 0.9 and edge.fill_fraction == black.fill_fraction
    assert (black.crop.sum(2) == 0).mean() > 0.15 and (edge.crop.sum(2) == 0).mean() == 0
    assert zoomed.fill_fraction < black.fill_fraction


def test_bin_pair_list_scored_on_its_own_images_and_refused_for_another_geometry(tmp_path) -> None:
    """insightface .bin lists carry 112-px faces on the plain template: scored as they are (here
    one colour per person, so all pairs right), refused for a trunk trained on zoomed crops."""
    import io
    import pickle

    def jpeg(colour: tuple[int, int, int]) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (112, 112), colour).save(buf, format="JPEG", quality=95)
        return buf.getvalue()

    red, green, blue = (240, 20, 20), (20, 240, 20), (20, 20, 240)
    pairs = [(red, red, True), (green, blue, False)] * 10  # 20 pairs: insightface's 10 consecutive folds
    blobs = [jpeg(c) for a, b, _ in pairs for c in (a, b)]
    (tmp_path / "list.bin").write_bytes(pickle.dumps((blobs, [s for _, _, s in pairs])))
    for scale in (1.0, 1.25):
        writer = StoreWriter(tmp_path / f"store{scale}", 1, 16, scale)
        writer.add(np.zeros((16, 16, 3), np.uint8))
        writer.close(pd.DataFrame([manifest.empty_record("x.jpg")]))
    cpu = torch.device("cpu")
    result = score_pair_list(_ColourTrunk(), tmp_path / "list.bin", 0, tmp_path / "store1.0", 16, cpu)
    assert result == {"list_acc": 1.0, "list_acc_std": 0.0, "list_pairs": 20, "list_pairs_missing": 0}
    with pytest.raises(ValueError, match=r"align\.scale != 1"):
        score_pair_list(_ColourTrunk(), tmp_path / "list.bin", 0, tmp_path / "store1.25", 16, cpu)
