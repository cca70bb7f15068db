"""Downloads and archives: path escapes refused, checksums enforced, truncation named, resume works."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import tarfile
import threading
import zipfile
from pathlib import Path
from typing import ClassVar

import pytest

from faceattr.data.fetch import ChecksumError, UnsafeArchiveError, download_url, safe_extract, verify_sha256


def _tar(path: Path, members: dict[str, bytes], link: tuple[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tf.addfile(info)
    return path


def test_extracts_a_normal_tar(tmp_path) -> None:
    archive = _tar(tmp_path / "ok.tar.gz", {"UTKFace/a.jpg": b"a", "UTKFace/sub/b.jpg": b"bb"})
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out/UTKFace/sub/b.jpg").read_bytes() == b"bb"


def test_extracts_only_the_named_members_and_still_refuses_an_unsafe_one(tmp_path) -> None:
    archive = _tar(tmp_path / "lfw.tgz", {"lfw/A/A_0001.jpg": b"a", "lfw/B/B_0001.jpg": b"b"}, link=("lfw/C", "/etc"))
    safe_extract(archive, tmp_path / "out", members={"lfw/A/A_0001.jpg"})
    assert [p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.jpg")] == [
        "lfw/A/A_0001.jpg"
    ]
    with pytest.raises(UnsafeArchiveError, match="link"):
        safe_extract(archive, tmp_path / "out", members={"lfw/C"})
    zipped = tmp_path / "celeba.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("img/000001.jpg", b"x")
        zf.writestr("img/000002.jpg", b"y")
    safe_extract(zipped, tmp_path / "z", members=["img/000002.jpg"])
    assert [p.name for p in (tmp_path / "z").rglob("*.jpg")] == ["000002.jpg"]


@pytest.mark.parametrize("name", ["../evil.jpg", "UTKFace/../../evil.jpg", "/tmp/evil.jpg"])
def test_tar_member_escaping_target_is_refused(tmp_path, name) -> None:
    archive = _tar(tmp_path / "bad.tar.gz", {"UTKFace/ok.jpg": b"x", name: b"evil"})
    with pytest.raises(UnsafeArchiveError, match=re.escape(name)):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.jpg").exists() and not Path("/tmp/evil.jpg").exists()


def test_tar_symlink_is_refused(tmp_path) -> None:
    archive = _tar(tmp_path / "link.tar.gz", {"a.jpg": b"x"}, link=("passwd", "/etc/passwd"))
    with pytest.raises(UnsafeArchiveError, match="link"):
        safe_extract(archive, tmp_path / "out")


def test_zip_member_escaping_target_is_refused(tmp_path) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("img_align_celeba/000001.jpg", b"x")
        zf.writestr("../evil.jpg", b"evil")
    with pytest.raises(UnsafeArchiveError, match=r"\.\./evil\.jpg"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.jpg").exists()


def test_truncated_archive_names_the_file(tmp_path) -> None:
    archive = _tar(tmp_path / "full.tar.gz", {f"f{i}.bin": bytes(range(256)) * 400 for i in range(5)})
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.tar\.gz' is truncated"):
        safe_extract(cut, tmp_path / "out")


def test_checksum_mismatch_names_file_and_both_hashes(tmp_path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"hello")
    actual = hashlib.sha256(b"hello").hexdigest()
    verify_sha256(path, actual)
    with pytest.raises(ChecksumError, match=rf"data\.bin': expected sha256 {'0' * 64}, got {actual}"):
        verify_sha256(path, "0" * 64)


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one payload, honouring ``Range: bytes=N-`` (http.server's own handler does not)."""

    payload: ClassVar[bytes] = b""
    ranges: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        start = 0
        header = self.headers.get("Range")
        if header:
            self.ranges.append(header)
            start = int(header.removeprefix("bytes=").split("-")[0])
        body = self.payload[start:]
        self.send_response(206 if header else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    _RangeHandler.payload = bytes(range(256)) * 4096  # 1 MiB
    _RangeHandler.ranges = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/UTKFace.tar.gz", _RangeHandler
    httpd.shutdown()


def test_download_verifies_checksum(server, tmp_path) -> None:
    url, handler = server
    good = hashlib.sha256(handler.payload).hexdigest()
    path = download_url(url, tmp_path / "UTKFace.tar.gz", good)
    assert path.read_bytes() == handler.payload and handler.ranges == []
    with pytest.raises(ChecksumError, match="expected sha256 " + "f" * 64):
        download_url(url, tmp_path / "again.tar.gz", "f" * 64)
    assert not (tmp_path / "again.tar.gz").exists()


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path) -> None:
    url, handler = server
    dest = tmp_path / "UTKFace.tar.gz"
    (tmp_path / "UTKFace.tar.gz.part").write_bytes(handler.payload[:300_000])  # what a killed run left
    download_url(url, dest, hashlib.sha256(handler.payload).hexdigest())
    assert handler.ranges == ["bytes=300000-"]
    assert dest.read_bytes() == handler.payload
    assert not (tmp_path / "UTKFace.tar.gz.part").exists()
