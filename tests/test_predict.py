"""`faceattr predict` on real photos: every bad input gets its own row and the batch finishes;
faces are found where MTCNN finds them; every head of the model answers."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from faceattr.cli import main
from faceattr.predict import find_images, load_model

from .conftest import SHARED, TINY_VARIANTS

pytest.importorskip("facenet_pytorch")


@pytest.fixture(scope="module")
def hopper() -> Image.Image:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        return Image.open(fh).convert("RGB")


@pytest.fixture(scope="module")
def model_dir(pipeline):
    return pipeline["models"] / "finetune" / f"{TINY_VARIANTS[0]}-s0"


def _photos(folder, face: Image.Image) -> dict[str, str]:
    """A user's folder of awkward inputs, each with the status its row must have."""
    (folder / "sub").mkdir(parents=True)
    face.save(folder / "rgb.jpg")
    face.convert("L").save(folder / "sub" / "grey.jpg")
    rgba = face.convert("RGBA")
    rgba.putalpha(180)
    rgba.save(folder / "alpha.png")
    good = (folder / "rgb.jpg").read_bytes()
    (folder / "corrupt.jpg").write_bytes(good[:20] + bytes(range(256)) * 8)
    (folder / "text.jpg").write_text("this is not an image\n")
    Image.new("RGB", (400, 300), (128, 128, 128)).save(folder / "blank.jpg")
    two = Image.new("RGB", (1100, 700), (90, 90, 90))
    two.paste(face, (0, 50))
    two.paste(face.resize((face.width // 2, face.height // 2)), (700, 200))
    two.save(folder / "two.jpg")
    big = Image.new("RGB", (6000, 4000), (90, 90, 90))
    big.paste(face.resize((face.width * 4, face.height * 4)), (3000, 1200))
    big.save(folder / "big.jpg", quality=80)
    return {
        "rgb.jpg": "ok",
        "sub/grey.jpg": "ok",
        "alpha.png": "ok",
        "corrupt.jpg": "error",
        "text.jpg": "error",
        "blank.jpg": "no_face",
        "two.jpg": "ok",
        "big.jpg": "ok",
    }


def test_a_folder_of_bad_inputs_finishes_with_a_row_each(tmp_path, hopper, model_dir, capsys) -> None:
    expected = _photos(tmp_path / "photos", hopper)
    out = tmp_path / "rows.jsonl"
    code = main(["predict", str(tmp_path / "photos"), "--model", str(model_dir), "--out", str(out)])
    assert code == 1  # two inputs could not be read
    assert "error: 2 inputs could not be read" in capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_file: dict[str, list[dict]] = {}
    for r in rows:
        by_file.setdefault(str(r["path"]).split("photos/")[1], []).append(r)
    assert set(by_file) == set(expected)
    for name, status in expected.items():
        assert {r["status"] for r in by_file[name]} == {status}, (name, by_file[name])
    assert "cannot read image" in by_file["text.jpg"][0]["reason"]
    assert by_file["blank.jpg"][0]["reason"] == "no face found"
    assert [r["face"] for r in by_file["two.jpg"]] == [0, 1]  # both faces, the larger first
    big = by_file["big.jpg"][0]  # detected on a bounded copy, landmarks in the 6000x4000 photo's pixels
    assert min(x for x, _ in big["landmarks"]) > 3000 and max(x for x, _ in big["landmarks"]) < 3000 + 4 * hopper.width
    ok = by_file["rgb.jpg"][0]
    assert ok["gender"] in ("female", "male") and 0.5 <= ok["gender_prob"] <= 1 and ok["age"] > 0
    assert len(ok["landmarks"]) == 5 and ok["det_prob"] >= 0.9


def test_landmarks_are_mtcnns_own_on_grace_hopper(tmp_path, hopper, model_dir) -> None:
    from facenet_pytorch import MTCNN

    hopper.save(tmp_path / "hopper.jpg")
    out = tmp_path / "rows.csv"
    assert main(["predict", str(tmp_path / "hopper.jpg"), "--model", str(model_dir), "--out", str(out)]) == 0
    (row,) = list(csv.DictReader(out.open()))
    ours = np.array([[float(row[f"lm{i}_{a}"]) for a in "xy"] for i in range(5)])
    _, _, points = MTCNN(keep_all=True).detect(np.asarray(Image.open(tmp_path / "hopper.jpg")), landmarks=True)
    assert np.abs(ours - points[0]).max() < 3.0  # pixels (the photo is 512x600: no downscaling)
    assert row["status"] == "ok" and row["gender"] in ("female", "male") and float(row["age"]) > 0


def test_aligned_chips_are_cut_as_training_cut_them(tmp_path, pipeline, model_dir) -> None:
    """`--aligned` takes a chip's largest centred square, as the align stage does (it squashed a
    non-square chip): a store crop padded to a wider chip predicts what the crop itself predicts,
    and both what the model says of the store crop directly."""
    faces = np.load(pipeline["store"] / "faces.npy")[:3]
    rng = np.random.default_rng(0)
    for i, crop in enumerate(faces):
        Image.fromarray(crop).save(tmp_path / f"crop{i}.png")
        pad = rng.integers(0, 255, (crop.shape[0], 6, 3), dtype=np.uint8)  # wider chip: noise either side
        Image.fromarray(np.concatenate([pad, crop, pad], 1)).save(tmp_path / f"wide{i}.png")
    rows = {}
    for kind in ("crop", "wide"):
        out = tmp_path / f"{kind}.jsonl"
        argv = ["predict", str(tmp_path / f"{kind}*.png"), "--aligned", "--model", str(model_dir), "--out", str(out)]
        assert main(argv) == 0
        rows[kind] = [json.loads(line) for line in out.read_text().splitlines()]
    direct = load_model(model_dir).decode(faces)
    for i, (a, b) in enumerate(zip(rows["crop"], rows["wide"], strict=True)):
        assert a["status"] == b["status"] == "ok" and "box" not in a
        assert a["p_female"] == b["p_female"] and a["age"] == b["age"], f"chip {i} cut differently"
        assert a["age"] == pytest.approx(float(direct["age"][i]), abs=0.01)


def test_the_checkpoint_records_the_training_geometry_and_predict_follows_it(tmp_path, pipeline) -> None:
    """A model trained on edge-filled, own-crop (resize) crops: its meta holds the fill and crop
    kind, predict fills with edge by default (it used its CLI default, black), and the template
    points are the mean landmarks of the training rows, not of the whole store (test rows too)."""
    import dataclasses
    import shutil

    from faceattr.config import FinetuneConfig, load_section
    from faceattr.predict import Model, Predictor
    from faceattr.train.data import load_split
    from faceattr.train.finetune import finetune
    from faceattr.variants import parse_variant

    store = tmp_path / "store"
    shutil.copytree(pipeline["store"], store)
    (store / "geometry.json").write_text(
        json.dumps({"size": 32, "scale": 1.0, "fill": "edge", "crop": "resize", "template_points": [[0.5, 0.5]] * 5})
    )  # the align stage's all-rows mean, here deliberately not the training rows'
    cfg = load_section(pipeline["params"], "finetune_multitask", FinetuneConfig)
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, epochs=1))
    model, meta, _ = finetune(
        parse_variant("face_resnet18-none-gender+age+landmarks"),
        cfg,
        seed=0,
        store=store,
        split_file=pipeline["split.csv"],
        identity_checkpoint=None,
        device=torch.device("cpu"),
        resume_path=None,
        on_epoch=lambda row: None,
    )
    train = load_split(store, pipeline["split.csv"], ("train",))
    expected = (train.landmarks.double().mean(0) / 32).numpy()
    assert meta["geometry"]["fill"] == "edge" and meta["geometry"]["crop"] == "resize"
    np.testing.assert_allclose(np.array(meta["template_points"]), expected, atol=1e-5)
    np.testing.assert_allclose(np.array(meta["geometry"]["template_points"]), expected, atol=1e-5)
    predictor = Predictor(Model(json.loads(json.dumps(meta)), torch_model=model.eval()))
    assert predictor.fill == "edge"
    np.testing.assert_allclose(np.array(predictor.points), expected, atol=1e-5)
    assert Predictor(Model(json.loads(json.dumps(meta)), torch_model=model.eval()), fill="black").fill == "black"


def test_inputs_and_models_that_do_not_exist(tmp_path, model_dir, capsys) -> None:
    (tmp_path / "empty").mkdir()
    found = find_images([str(tmp_path / "nope.jpg"), str(tmp_path / "empty"), str(tmp_path / "*.gif")])
    assert [e for _, e in found] == ["not found", "folder holds no image files", "no file matches this pattern"]
    assert main(["predict", str(tmp_path), "--model", str(tmp_path / "no-such-run")]) == 1
    assert "model '" in capsys.readouterr().err
    assert load_model(model_dir).meta["tasks"] == ["gender", "age", "landmarks"]


def test_evaluate_and_predict_run_a_checkpoint_through_one_inference_path(pipeline, model_dir) -> None:
    """evaluate's per-image outputs and predict's Model give the same numbers for the same crops:
    both go through faceattr.inference (fp32 on the CPU here), so no loop applies its own rules."""
    from faceattr.evaluation.scoring import predict
    from faceattr.models.checkpoint import load_multitask
    from faceattr.train.data import load_split

    test = load_split(pipeline["store"], pipeline["split.csv"], ("test",))
    network, meta = load_multitask(model_dir / "model.pt")
    ours = predict(network, meta, test, torch.device("cpu"), batch_size=7)  # batches of another size
    crops = test.images[list(range(len(test)))].permute(0, 2, 3, 1).numpy()
    theirs = load_model(model_dir).decode(crops)
    female = torch.from_numpy(theirs["gender"]).softmax(1)[:, 1].numpy()
    np.testing.assert_allclose(ours["gender_prob"], female, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["age"], theirs["age"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ours["landmarks"], theirs["landmarks"], rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Which detections are answered for, and what each row says about its face (issue "full size")


def _det(x1: float, y1: float, x2: float, y2: float, p: float = 0.99):
    from faceattr.data.align import Detection

    return Detection(np.zeros((5, 2)), p, np.array([x1, y1, x2, y2], dtype=float))


def test_small_and_nested_boxes_are_left_out_and_counted() -> None:
    from faceattr.data.faces import keep_faces

    face = _det(100, 100, 300, 340)  # a face
    mouth = _det(180, 260, 230, 300)  # a box on its mouth corner, inside it
    water = _det(600, 500, 613, 517)  # 13x17 px on water
    far = _det(700, 100, 740, 150)  # a small face of its own, 40 px
    kept, dropped = keep_faces([face, far, mouth, water], (1000, 800), 32, 0.02, keep_nested=False)
    assert kept == [face, far] and dropped == {"too_small": 1, "inside_another_face": 1}
    kept, dropped = keep_faces([face, far, mouth, water], (1000, 800), 32, 0.02, keep_nested=True)
    assert kept == [face, far, mouth] and dropped == {"too_small": 1}
    # the share of the photo: in a 4000-px-high photo, 2 % is 80 px, so the 40-px face goes too
    kept, dropped = keep_faces([face, far], (6000, 4000), 32, 0.02, keep_nested=False)
    assert kept == [face] and dropped == {"too_small": 1}
    kept, _ = keep_faces([face, far, mouth, water], (1000, 800), 0, 0.0, keep_nested=True)
    assert len(kept) == 4  # every filter off


def test_a_tiny_face_is_left_out_and_rows_name_box_size_faces_and_model(tmp_path, hopper, model_dir, capsys) -> None:
    """Grace Hopper beside a copy whose face MTCNN boxes at about 27 px: the small one is left out
    by default (counted on stderr), kept with the filters off; every row carries its box size, the
    faces found in its photo and the model's id (run name and the checkpoint's sha256)."""
    import hashlib

    photo = Image.new("RGB", (640, 480), (90, 90, 90))  # no larger than detection's 640 px
    photo.paste(hopper.resize((300, 352)), (0, 60))  # face box about 107 px
    photo.paste(hopper.resize((80, 94)), (450, 200))  # about 27 px
    photo.save(tmp_path / "two.jpg")
    out = tmp_path / "rows.jsonl"
    assert main(["predict", str(tmp_path / "two.jpg"), "--model", str(model_dir), "--out", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert "detections left out: 1 too small" in capsys.readouterr().err
    sha = hashlib.sha256((model_dir / "model.pt").read_bytes()).hexdigest()
    assert row["model"] == f"{model_dir.name}@{sha[:12]}"
    assert row["faces_in_photo"] == 1 and row["box_w"] > 90 and row["box_h"] > 90
    assert row["box_w"] == pytest.approx(row["box"][2] - row["box"][0], abs=0.11)
    both = tmp_path / "both.jsonl"
    argv = ["predict", str(tmp_path / "two.jpg"), "--model", str(model_dir), "--out", str(both)]
    assert main([*argv, "--min-face", "0", "--min-face-share", "0"]) == 0
    rows = [json.loads(line) for line in both.read_text().splitlines()]
    assert len(rows) == 2 and {r["faces_in_photo"] for r in rows} == {2} and rows[1]["box_w"] < 32


LFW = SHARED / "lfw" / "lfw-deepfunneled.tgz"


@pytest.mark.skipif(not LFW.is_file(), reason=f"LFW is not at {LFW} (see ../shared/datasets/README.md)")
def test_in_the_wild_photos_give_no_tiny_or_nested_faces(tmp_path, model_dir) -> None:
    """60 of LFW's photos (news photos: people, crowds, hands at the face): no row's box is under
    32 px or inside a larger face's box of its photo, and each photo's rows agree on its count."""
    import tarfile

    from faceattr.data.faces import NESTED, _inside

    folder = tmp_path / "lfw"
    folder.mkdir()
    with tarfile.open(LFW) as tar:
        taken = 0
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg"):
                (folder / f"{taken:03d}.jpg").write_bytes(tar.extractfile(member).read())
                taken += 1
                if taken == 60:
                    break
    out = tmp_path / "rows.jsonl"
    assert main(["predict", str(folder), "--model", str(model_dir), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_photo: dict[str, list[dict]] = {}
    for r in rows:
        by_photo.setdefault(r["path"], []).append(r)
    assert len(by_photo) == 60
    for faces in by_photo.values():
        ok = [r for r in faces if r["status"] == "ok"]
        assert all(r["faces_in_photo"] == len(ok) for r in ok)
        assert all(min(r["box_w"], r["box_h"]) >= 32 for r in ok)
        for i, r in enumerate(ok):
            for larger in ok[:i]:
                assert _inside(np.array(r["box"]), np.array(larger["box"])) < NESTED
