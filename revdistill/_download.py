"""Resumable HTTP downloads with SHA-256 checksums, for the ProteinGym data files.

The one place in :mod:`revdistill.proteingym` that touches the network. A download streams into
``<name>.part``; when that file exists, the next attempt asks the server for the rest with an HTTP
``Range`` header (servers that ignore the header send the whole file, which restarts the download).
When the file is complete its SHA-256 is compared with the expected digest (if one is given) and
recorded in ``SHA256SUMS`` beside it (``sha256sum`` format), so later runs can verify the cache.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["ChecksumError", "download_file", "sha256_of", "read_checksums", "record_checksum"]

MANIFEST_NAME = "SHA256SUMS"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class ChecksumError(ValueError):
    """A downloaded or cached file does not have the expected SHA-256 digest."""


def sha256_of(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 digest of a file, read in chunks of ``chunk_size`` bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_checksums(folder: str | Path) -> dict[str, str]:
    """Return ``{file name: sha256}`` from ``folder/SHA256SUMS`` (empty when there is none)."""
    manifest = Path(folder) / MANIFEST_NAME
    if not manifest.exists():
        return {}
    checksums = {}
    for line in manifest.read_text().splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2:
            checksums[parts[1].lstrip("*")] = parts[0]
    return checksums


def record_checksum(folder: str | Path, name: str, digest: str) -> None:
    """Write ``digest`` for ``name`` into ``folder/SHA256SUMS``, replacing an older entry."""
    checksums = read_checksums(folder)
    checksums[name] = digest
    lines = [f"{value}  {key}\n" for key, value in sorted(checksums.items())]
    manifest = Path(folder) / MANIFEST_NAME
    tmp = manifest.with_name(MANIFEST_NAME + ".tmp")
    tmp.write_text("".join(lines))
    os.replace(tmp, manifest)


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "revdistill"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _stream_once(url: str, part: Path, timeout: float, chunk_size: int) -> None:
    """One attempt: append the missing bytes to ``part`` (or rewrite it if the server ignores Range)."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to send: the partial file is complete
            logger.info("%s: server reports %s already complete", url, part.name)
            return
        raise
    with response:
        status = getattr(response, "status", 200)
        if offset and status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                raise RuntimeError(
                    f"download of {url}: asked for bytes from {offset}, server answered "
                    f"Content-Range={response.headers.get('Content-Range')!r}"
                )
            mode = "ab"
            logger.info("resuming %s at byte %d", url, offset)
        else:
            if offset:
                logger.info("%s: server ignored the Range request; restarting", url)
            mode, offset = "wb", 0
        length = response.headers.get("Content-Length")
        expected_total = offset + int(length) if length is not None else None
        with open(part, mode) as handle:
            for chunk in iter(lambda: response.read(chunk_size), b""):
                handle.write(chunk)
    size = part.stat().st_size
    if expected_total is not None and size != expected_total:
        raise ConnectionError(f"download of {url} stopped at {size} of {expected_total} bytes")


def download_file(
    url: str,
    dest: str | Path,
    *,
    expected_sha256: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    retry_wait: float = 2.0,
) -> str:
    """Download ``url`` to ``dest``, resuming a partial download, and return the file's SHA-256.

    Parameters
    ----------
    url : str
        Source URL (``http``, ``https`` or ``file``).
    dest : str or Path
        Final path. Bytes go to ``dest.part`` until the file is complete and checked.
    expected_sha256 : str, optional
        Expected hex digest. On mismatch the partial file is deleted and :class:`ChecksumError`
        is raised naming both digests. Without it, the digest is recorded but not checked.
    retries : int
        Attempts before giving up; each attempt resumes where the last one stopped.
    timeout : float
        Socket timeout in seconds.

    Returns
    -------
    str
        Hex SHA-256 digest of ``dest``, also recorded in ``dest.parent / "SHA256SUMS"``.
    """
    if retries < 1:
        raise ValueError(f"retries={retries} must be at least 1")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        digest = sha256_of(dest)
        _check_digest(dest, digest, expected_sha256, url)
        record_checksum(dest.parent, dest.name, digest)
        return digest
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, retries + 1):
        try:
            _stream_once(url, part, timeout, chunk_size)
            break
        except urllib.error.HTTPError as error:
            if error.code < 500 or attempt == retries:
                raise RuntimeError(f"download of {url} failed: HTTP {error.code} {error.reason}") from error
            logger.warning("download of %s: HTTP %s; retrying", url, error.code)
        except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out, cut short
            if attempt == retries:
                raise RuntimeError(
                    f"download of {url} failed after {retries} attempt(s) ({error!r}); the partial file "
                    f"{part} is kept and the next call resumes from it"
                ) from error
            logger.warning("download of %s interrupted (%r); resuming", url, error)
        time.sleep(retry_wait)
    digest = sha256_of(part)
    try:
        _check_digest(part, digest, expected_sha256, url)
    except ChecksumError:
        part.unlink()
        raise
    os.replace(part, dest)
    record_checksum(dest.parent, dest.name, digest)
    return digest


def _check_digest(path: Path, digest: str, expected: str | None, url: str) -> None:
    if expected is not None and digest.lower() != expected.lower():
        raise ChecksumError(
            f"checksum mismatch for {path.name} from {url}: expected sha256 {expected.lower()}, "
            f"got {digest}; the file was removed, download it again"
            if path.suffix == ".part"
            else f"checksum mismatch for {path}: expected sha256 {expected.lower()}, got {digest}; "
            f"delete it and download again"
        )
