"""Getting archives: resumable HTTP(S) downloads with a sha256 check, and safe extraction.

A source is a URL (``http://``/``https://``) or a local path. Downloads resume from a ``.part``
file with an HTTP Range request and show a progress bar. Archives (tar, tar.gz, zip) are
extracted member by member; a member that would land outside the target folder (``../``, an
absolute path) or that is a link or device is refused, never silently skipped.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import urllib.request
import zipfile
import zlib
from collections.abc import Collection
from pathlib import Path, PurePosixPath

from tqdm import tqdm

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file whose sha256 is not the expected one."""


class UnsafeArchiveError(ValueError):
    """An archive member that would escape the target folder, or a link/device member."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise :class:`ChecksumError` naming the file and both hashes when they differ."""
    if not expected:
        return
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(f"checksum mismatch for '{path}': expected sha256 {expected.lower()}, got {actual}")


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def download_url(url: str, dest: Path, sha256: str = "", timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part``; verify ``sha256`` if given."""
    if dest.is_file():
        verify_sha256(dest, sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = have > 0 and response.status == 206
        if have and not resumed:
            log.info("server ignored the range request; downloading %s from the start", url)
            have = 0
        length = response.headers.get("Content-Length")
        total = (int(length) + have) if length is not None else None
        with (
            part.open("ab" if resumed else "wb") as fh,
            tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar,
        ):
            for chunk in iter(lambda: response.read(CHUNK), b""):
                fh.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise OSError(f"download of {url} incomplete: {part.stat().st_size} of {total} bytes; rerun to resume")
    verify_sha256(part, sha256)
    part.rename(dest)
    return dest


def _check_member(name: str, target: Path) -> Path:
    path = PurePosixPath(name)
    drive = bool(path.parts) and ":" in path.parts[0]  # C:\\... written by Windows tools
    if path.is_absolute() or name.startswith(("/", "\\")) or drive:
        raise UnsafeArchiveError(f"archive member '{name}' has an absolute path")
    resolved = (target / path).resolve()
    if not resolved.is_relative_to(target.resolve()):
        raise UnsafeArchiveError(f"archive member '{name}' would be written outside '{target}'")
    return resolved


def safe_extract(
    archive: Path, target: Path, password: str | None = None, members: Collection[str] | None = None
) -> None:
    """Extract a tar (optionally compressed) or zip archive into ``target``, refusing unsafe members.

    ``password`` opens encrypted zip members (AgeDB is distributed that way); ``members``: only the
    members of these names (every one otherwise).

    Raises:
        UnsafeArchiveError: a member escapes ``target`` or is a link/device.
        ValueError: the file is truncated or not an archive, or the password is missing or wrong.
    """
    target.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if members is not None and info.filename not in members:
                        continue
                    dest = _check_member(info.filename, target)
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise UnsafeArchiveError(f"archive member '{info.filename}' is a symbolic link")
                    if info.is_dir():
                        dest.mkdir(parents=True, exist_ok=True)
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        with zf.open(info, pwd=password.encode() if password else None) as src, dest.open("wb") as out:
                            shutil.copyfileobj(src, out, CHUNK)
                    except RuntimeError as err:  # zipfile's "password required" / "Bad password"
                        dest.unlink(missing_ok=True)
                        raise ValueError(f"'{archive}': {err}; a missing or wrong password") from None

            return
        with tarfile.open(archive) as tf:
            for member in tf:
                if members is not None and member.name not in members:
                    continue
                dest = _check_member(member.name, target)
                if member.issym() or member.islnk() or member.isdev():
                    raise UnsafeArchiveError(f"archive member '{member.name}' is a link or device")
                if member.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(member)
                    assert src is not None
                    with src, dest.open("wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise ValueError(f"'{archive}' is truncated or not a tar/zip archive: {err}") from None
