"""AgeDB (password zip), identity folders, insightface RecordIO, and verification pair files."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import struct
import subprocess

import numpy as np
import pytest
from PIL import Image

from faceattr.data import manifest
from faceattr.data.fetch import safe_extract
from faceattr.data.pairs import UnsafePickleError, read_bin_pairs, read_pairs_txt
from faceattr.data.sources import RECORDIO_MAGIC, agedb, identity_folders, unpack_recordio


def _jpeg_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_agedb_names(tmp_path) -> None:
    for name in ("0_MariaCallas_35_f.jpg", "1_MariaCallas_40_f.jpg", "7_Albert_Einstein_70_m.jpg", "bad.jpg"):
        (tmp_path / name).write_bytes(_jpeg_bytes(len(name)))
    frame, dropped = agedb(tmp_path, (0, 120))
    frame = manifest.validate(frame).set_index("path")
    assert frame.loc["7_Albert_Einstein_70_m.jpg", ["identity", "age", "gender"]].tolist() == ["Albert_Einstein", 70, 0]
    assert frame.loc["0_MariaCallas_35_f.jpg", "gender"] == 1
    assert dropped.values.tolist() == [["bad.jpg", "unparseable_name"]]


@pytest.mark.skipif(shutil.which("zip") is None, reason="the zip command is needed to make an encrypted zip")
def test_password_protected_zip(tmp_path, monkeypatch) -> None:
    src = tmp_path / "AgeDB"
    src.mkdir()
    (src / "0_MariaCallas_35_f.jpg").write_bytes(_jpeg_bytes(0))
    subprocess.run(["zip", "-q", "-r", "-P", "s3cret", str(tmp_path / "AgeDB.zip"), "AgeDB"], cwd=tmp_path, check=True)
    with pytest.raises(ValueError, match="password"):
        safe_extract(tmp_path / "AgeDB.zip", tmp_path / "nopass")
    with pytest.raises(ValueError, match="password"):
        safe_extract(tmp_path / "AgeDB.zip", tmp_path / "wrong", password="nope")
    safe_extract(tmp_path / "AgeDB.zip", tmp_path / "out", password="s3cret")
    assert (tmp_path / "out/AgeDB/0_MariaCallas_35_f.jpg").read_bytes() == (src / "0_MariaCallas_35_f.jpg").read_bytes()


def test_identity_folders(tmp_path) -> None:
    for ident, n in (("0000045", 2), ("0000099", 1)):
        (tmp_path / ident).mkdir()
        for i in range(n):
            (tmp_path / ident / f"{i:03d}.jpg").write_bytes(_jpeg_bytes(i))
    (tmp_path / "stray.jpg").write_bytes(_jpeg_bytes(9))
    frame, dropped = identity_folders(tmp_path)
    assert frame["identity"].tolist() == ["0000045", "0000045", "0000099"]
    assert dropped.values.tolist() == [["stray.jpg", "not_in_identity_folder"]]


def _record(flag: int, label: float, payload: bytes, extra: tuple[float, ...] = ()) -> bytes:
    body = struct.pack("<IfQQ", flag, label, 0, 0) + struct.pack(f"<{len(extra)}f", *extra) + payload
    return struct.pack("<II", RECORDIO_MAGIC, len(body)) + body + b"\0" * ((4 - len(body) % 4) % 4)


def test_unpack_recordio(tmp_path) -> None:
    images = [_jpeg_bytes(i) for i in range(3)]
    rec = tmp_path / "train.rec"
    rec.write_bytes(
        _record(2, 0.0, b"", (1.0, 4.0))
        + _record(0, 0, images[0])
        + _record(0, 0, images[1])
        + _record(0, 1, images[2])
    )
    assert unpack_recordio(rec, tmp_path / "out") == 3
    assert (tmp_path / "out/0/2.jpg").read_bytes() == images[1] and (tmp_path / "out/1/3.jpg").read_bytes() == images[2]
    rec.write_bytes(rec.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        unpack_recordio(rec, tmp_path / "again")


def test_lfw_pairs_txt(tmp_path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(
        "2\t1\nAbel_Pacheco\t1\t4\nAbel_Pacheco\t1\tAkhmed_Zakayev\t3\n"
        "Aaron_Peirsol\t1\t2\nAaron_Peirsol\t2\tAdam_Sandler\t1\n"
    )
    pairs = read_pairs_txt(path)
    assert pairs["fold"].tolist() == [0, 0, 1, 1] and pairs["same"].tolist() == [True, False, True, False]
    assert pairs.loc[0, ["file_a", "file_b"]].tolist() == [
        "Abel_Pacheco/Abel_Pacheco_0001.jpg",
        "Abel_Pacheco/Abel_Pacheco_0004.jpg",
    ]
    assert pairs.loc[1, "identity_b"] == "Akhmed_Zakayev"


def test_celeba_derived_pairs_use_file_names(tmp_path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text("1\t1\n234\t017653.jpg\t162371.jpg\n234\t017653.jpg\t99\t000002.jpg\n")
    pairs = read_pairs_txt(path)
    assert pairs.loc[1, ["file_a", "identity_b", "file_b"]].tolist() == ["017653.jpg", "99", "000002.jpg"]
    path.write_text("1\t1\n234\t017653.jpg\n234\t017653.jpg\t99\t000002.jpg\n")
    with pytest.raises(ValueError, match="line 2: expected 3 fields"):
        read_pairs_txt(path)


def test_insightface_bin_loads_plain_data(tmp_path) -> None:
    path = tmp_path / "lfw.bin"
    images = [_jpeg_bytes(i) for i in range(4)]
    path.write_bytes(pickle.dumps((images, [True, False]), protocol=pickle.HIGHEST_PROTOCOL))
    loaded, same = read_bin_pairs(path)
    assert loaded == images and same == [True, False]


class _Evil:
    def __reduce__(self):
        return (subprocess.call, (["touch", "/tmp/faceattr_pwned"],))


def test_insightface_bin_refuses_code(tmp_path) -> None:
    path = tmp_path / "agedb_30.bin"
    path.write_bytes(pickle.dumps(([_Evil()], [True])))
    with pytest.raises(UnsafePickleError, match=r"refusing to load 'subprocess\.call'"):
        read_bin_pairs(path)
    assert not os.path.exists("/tmp/faceattr_pwned")


@pytest.mark.parametrize("layout", ["empty", "flat"])
def test_a_bad_folder_is_named_by_the_users_uri(tmp_path, layout) -> None:
    """An empty folder, or images without identity folders, fail naming the folder the user gave,
    never the scratch folder (data/raw/.<role>.partial), and say what the layout must be."""
    from faceattr.config import DownloadConfig
    from faceattr.data.download import download

    folder = tmp_path / "my_faces"
    folder.mkdir()
    if layout == "flat":
        for i in range(3):
            Image.new("RGB", (32, 32)).save(folder / f"{i}.jpg")
    cfg = DownloadConfig(dataset="mine", source="casia", uri=str(folder))
    with pytest.raises(FileNotFoundError) as err:
        download(cfg, tmp_path / "raw" / "pretrain", seed=0)
    message = str(err.value)
    assert ".partial" not in message and str(folder) in message and "<folder>/<person>/<image>" in message
    if layout == "flat":
        assert "3 images lie at its top level, outside any identity folder" in message
    assert not (tmp_path / "raw" / ".pretrain.partial").exists()
