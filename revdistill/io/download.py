"""Resumable HTTP downloads with size and SHA-256 checks: the one place revdistill touches the network.

Used for the ProteinGym files (:mod:`revdistill.proteingym.data`), single assays read out of the remote
zips (:mod:`revdistill.proteingym.remote`) and the ESM-2 weights (:mod:`revdistill.esm.models.weights`).

A download streams into ``<name>.part``; when that file exists, the next attempt asks the server for the
rest with an HTTP ``Range`` header (servers that ignore the header send the whole file, which restarts
the download). The size is checked against ``Content-Length`` / ``Content-Range`` (a short body is a
broken connection: the next attempt resumes). When the file is complete its SHA-256 is compared with the
expected digest (if one is given) and recorded in ``SHA256SUMS`` beside it (``sha256sum`` format), so
later runs can verify the cache. Only then is ``.part`` renamed to the final name (atomic).

Errors are one line and name the URL or file: :class:`DownloadError` (HTTP errors, offline, gave up),
:class:`DiskFullError`, :class:`RangeNotSupportedError`, :class:`ChecksumError` (digest or size).
"""
from __future__ import annotations

import errno
import http.client
import logging
import os
import re
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from revdistill.io.files import sha256_of

logger = logging.getLogger(__name__)

__all__ = [
    "ChecksumError", "DownloadError", "DiskFullError", "RangeNotSupportedError", "ProgressCallback",
    "download_file", "fetch_range", "check_online", "describe_network_error",
    "read_checksums", "record_checksum",
]

MANIFEST_NAME = "SHA256SUMS"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
#: ``progress(done_bytes, total_bytes or None, label)``, called after every chunk written.
ProgressCallback = Callable[[int, Optional[int], str], None]


class ChecksumError(ValueError):
    """A downloaded or cached file does not have the expected SHA-256 digest (or size)."""


class DownloadError(RuntimeError):
    """A download failed: an HTTP error, the server unreachable, or a broken transfer after all retries."""


class DiskFullError(DownloadError):
    """Not enough free space for the bytes still to download."""


class RangeNotSupportedError(DownloadError):
    """The server answered a byte-range request with the whole file (it does not serve ranges)."""


class _TransferCutError(ConnectionError):
    """The body ended before ``Content-Length`` bytes (retried; the next attempt resumes)."""


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


# ------------------------------------------------------------------ describing network failures
def _proxy_note(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname or ""):
        return f" (through the proxy {proxy})"
    return ""


def describe_network_error(error: BaseException) -> str:
    """A short reason for a failed request: DNS failure, refused, timed out, TLS, proxy, reset."""
    reason = error.reason if isinstance(error, urllib.error.URLError) and not isinstance(
        error, urllib.error.HTTPError) else error
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, _TransferCutError):
        return str(error)
    if isinstance(reason, socket.gaierror):
        return f"DNS lookup failed ({reason.strerror or reason})"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error ({getattr(reason, 'reason', None) or reason})"
    if isinstance(reason, (ConnectionResetError, http.client.RemoteDisconnected, http.client.IncompleteRead)):
        return "connection closed by the server before the end of the transfer"
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "network unreachable" if reason.errno == errno.ENETUNREACH else "host unreachable"
    text = str(reason)
    if "Tunnel connection failed" in text:
        return f"the proxy refused to connect ({text})"
    return f"{type(reason).__name__}: {text}" if text else type(reason).__name__


def check_online(url: str, timeout: float = 5.0) -> str | None:
    """Whether ``url``'s server can be reached: ``None`` if it answers, else a one-line reason.

    A ``HEAD`` request is sent; any HTTP answer below 500 counts as reachable (even 403/404: the
    server is there), except 407 (a proxy asks for credentials). 5xx answers, DNS failures, refused or
    timed-out connections, TLS and proxy errors give ``"cannot reach <host>: <reason>"``.
    """
    host = urllib.parse.urlsplit(url).hostname or url
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "revdistill"})
    try:
        with urllib.request.build_opener().open(request, timeout=timeout):
            return None
    except urllib.error.HTTPError as error:
        if error.code == 407:
            return f"cannot reach {host}: the proxy asks for authentication (HTTP 407){_proxy_note(url)}"
        if error.code >= 500:
            return f"cannot reach {host}: the server answered HTTP {error.code} {error.reason}{_proxy_note(url)}"
        return None
    except (OSError, http.client.HTTPException, ValueError) as error:
        return f"cannot reach {host}: {describe_network_error(error)}{_proxy_note(url)}"


# ------------------------------------------------------------------ requests
def _open(url: str, range_header: str | None, timeout: float):
    """GET ``url``; a fresh opener each time, so proxy settings are read from the environment now."""
    headers = {"User-Agent": "revdistill"}
    if range_header:
        headers["Range"] = range_header
    return urllib.request.build_opener().open(urllib.request.Request(url, headers=headers), timeout=timeout)


def _retrying(url: str, attempt_once, retries: int, retry_wait: float, kept: Path | None = None):
    """Run ``attempt_once()`` up to ``retries`` times: HTTP 4xx fail at once, 5xx and broken connections retry."""
    if retries < 1:
        raise ValueError(f"retries={retries} must be at least 1")
    for attempt in range(1, retries + 1):
        try:
            return attempt_once()
        except urllib.error.HTTPError as error:
            if error.code < 500 or attempt == retries:
                raise DownloadError(f"download of {url} failed: HTTP {error.code} {error.reason}") from error
            logger.warning("download of %s: HTTP %s; retrying", url, error.code)
        except PermissionError as error:  # local, not the network: retrying cannot help
            raise DownloadError(f"download of {url}: cannot write {kept or 'the file'} ({error})") from error
        except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out, cut short
            if attempt == retries:
                size = kept.stat().st_size if kept is not None and kept.exists() else 0
                keep = (f"the partial file {kept} ({size} bytes) is kept and the next call resumes from it"
                        if size else "nothing was written")
                raise DownloadError(f"download of {url} failed after {retries} attempt(s): "
                                    f"{describe_network_error(error)}{_proxy_note(url)}; {keep}") from error
            logger.warning("download of %s interrupted (%s); retrying", url, describe_network_error(error))
        time.sleep(retry_wait)
    raise AssertionError("unreachable")  # pragma: no cover


def _parse_content_range(url: str, response, first: int) -> int | None:
    """Check that a 206 answer starts at ``first``; return the resource's total size (None if ``*``)."""
    header = response.headers.get("Content-Range", "")
    match = _CONTENT_RANGE.match(header)
    if match is None or int(match.group(1)) != first:
        raise DownloadError(f"download of {url}: asked for bytes from {first}, server answered "
                            f"Content-Range={header!r}")
    return None if match.group(3) == "*" else int(match.group(3))


def fetch_range(url: str, first: int, last: int | None = None, *, timeout: float = 30.0,
                retries: int = 3, retry_wait: float = 1.0) -> tuple[bytes, int | None]:
    """Read bytes ``first..last`` (inclusive) of ``url`` into memory; a negative ``first`` reads the last ``-first``.

    For small reads (a zip's directory); big ones go through :func:`download_file` with ``byte_range``.

    Returns
    -------
    (data, total_size) : bytes and the resource's size from ``Content-Range`` (None if not given)

    Raises
    ------
    RangeNotSupportedError
        The server answered 200 with the whole file; the body is not read.
    DownloadError
        HTTP error, server unreachable, or short answers after ``retries`` attempts.
    """
    header = f"bytes={first}" if first < 0 else f"bytes={first}-{'' if last is None else last}"

    def once() -> tuple[bytes, int | None]:
        with _open(url, header, timeout) as response:
            if response.status != 206:
                raise RangeNotSupportedError(f"{url} does not serve byte ranges (asked {header!r}, "
                                             f"got HTTP {response.status} with the whole file)")
            content_range = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if content_range is None:
                raise DownloadError(f"{url}: HTTP 206 without a valid Content-Range header")
            start, end, total = content_range.groups()
            if first >= 0 and int(start) != first:
                raise DownloadError(f"{url}: asked {header!r}, server answered bytes {start}-{end}")
            data = response.read()
        if len(data) != int(end) - int(start) + 1:
            raise _TransferCutError(f"connection closed after {len(data)} of {int(end) - int(start) + 1} bytes")
        return data, None if total == "*" else int(total)

    return _retrying(url, once, retries, retry_wait)


# ------------------------------------------------------------------ resumable download to a file
def _stream_once(url: str, part: Path, window: tuple[int, int] | None, timeout: float, chunk_size: int,
                 report: Callable[[int, int | None], None]) -> None:
    """One attempt: append the missing bytes to ``part`` (or rewrite it if the server ignores Range)."""
    done = part.stat().st_size if part.exists() else 0
    start, stop = window if window is not None else (0, None)
    if stop is not None and done >= stop - start:
        return
    first = start + done
    header = None
    if window is not None or done:
        header = f"bytes={first}-" + ("" if stop is None else str(stop - 1))
    try:
        response = _open(url, header, timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and done and window is None:  # nothing left to send: the partial file is complete
            logger.info("%s: server reports %s already complete", url, part.name)
            return
        raise
    with response:
        if header is not None and response.status == 206:
            resource_total = _parse_content_range(url, response, first)
            mode = "ab"
            if done:
                logger.info("resuming %s at byte %d", url, first)
        elif window is not None:
            raise RangeNotSupportedError(f"{url} does not serve byte ranges (asked {header!r}, got HTTP "
                                         f"{response.status} with the whole file)")
        else:
            if done:
                logger.info("%s: server ignored the Range request; restarting", url)
            mode, done, resource_total = "wb", 0, None
        length = response.headers.get("Content-Length")
        expected_end = done + int(length) if length is not None else None
        total = (stop - start) if stop is not None else (resource_total or expected_end)
        if length is not None:
            free = shutil.disk_usage(part.parent).free
            if int(length) > free:
                raise DiskFullError(f"not enough disk space for {url}: {int(length)} bytes still to download, "
                                    f"{free} free in {part.parent}")
        with open(part, mode) as handle:
            report(done, total)
            for chunk in iter(lambda: response.read(chunk_size), b""):
                try:
                    handle.write(chunk)
                except OSError as error:
                    if error.errno == errno.ENOSPC:
                        raise DiskFullError(f"disk full while writing {part} (from {url}); free some space and "
                                            f"run again: the download resumes") from error
                    raise
                done += len(chunk)
                report(done, total)
    size = part.stat().st_size
    if expected_end is not None and size != expected_end:
        raise _TransferCutError(f"connection closed after {size} of {expected_end} bytes")


def download_file(
    url: str,
    dest: str | Path,
    *,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    byte_range: tuple[int, int] | None = None,
    progress: ProgressCallback | None = None,
    label: str | None = None,
    record: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    retry_wait: float = 2.0,
    check: Callable[[Path], None] | None = None,
) -> str:
    """Download ``url`` to ``dest``, resuming a partial download, and return the file's SHA-256.

    Parameters
    ----------
    url : str
        Source URL (``http``, ``https`` or ``file``).
    dest : str or Path
        Final path. Bytes go to ``dest.part`` until the file is complete and checked, then are renamed.
    expected_sha256 : str, optional
        Expected hex digest. On mismatch the partial file is deleted and :class:`ChecksumError`
        is raised naming both digests. Without it, the digest is recorded but not checked.
    expected_size : int, optional
        Exact expected size in bytes; checked like the digest.
    byte_range : (start, stop), optional
        Download only bytes ``start <= i < stop`` of the resource (needs a server that serves ranges,
        else :class:`RangeNotSupportedError`).
    progress : callable, optional
        ``progress(done_bytes, total_bytes or None, label)`` after every chunk (``chunk_size`` bytes).
    label : str, optional
        Label passed to ``progress``; default ``dest``'s name.
    record : bool, default=True
        Record the digest in ``dest.parent / "SHA256SUMS"``.
    retries : int
        Attempts before giving up; each attempt resumes where the last one stopped.
    timeout : float
        Socket timeout in seconds.
    check : callable, optional
        ``check(partial_path)`` once the bytes are complete and their digest checked, before the rename:
        raises ``ValueError`` when the content is not what was asked for (e.g. an HTML page served with
        status 200); the partial file is then removed and :class:`ChecksumError` says why.

    Returns
    -------
    str
        Hex SHA-256 digest of ``dest``.

    Raises
    ------
    DownloadError
        HTTP error (4xx at once, 5xx after retries), server unreachable or transfer broken ``retries``
        times (the partial file is kept), disk full (:class:`DiskFullError`), no range support
        (:class:`RangeNotSupportedError`).
    ChecksumError
        Digest or size differs from the expected one; the partial file is removed.
    """
    if retries < 1:
        raise ValueError(f"retries={retries} must be at least 1")
    if byte_range is not None and not 0 <= byte_range[0] <= byte_range[1]:
        raise ValueError(f"byte_range={byte_range} must be (start, stop) with 0 <= start <= stop")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        digest = sha256_of(dest)
        _check_digest(dest, digest, expected_sha256, url)
        if record:
            record_checksum(dest.parent, dest.name, digest)
        return digest
    part = dest.with_name(dest.name + ".part")
    name = label or dest.name

    def report(done: int, total: int | None) -> None:
        if progress is not None:
            progress(done, total, name)

    _retrying(url, lambda: _stream_once(url, part, byte_range, timeout, chunk_size, report),
              retries, retry_wait, kept=part)
    if not part.exists():  # an empty resource
        part.touch()
    if byte_range is not None and expected_size is None:
        expected_size = byte_range[1] - byte_range[0]
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink()
        raise ChecksumError(f"size mismatch for {dest.name} from {url}: expected {expected_size} bytes, got "
                            f"{size}; the file was removed, download it again")
    digest = sha256_of(part)
    try:
        _check_digest(part, digest, expected_sha256, url)
    except ChecksumError:
        part.unlink()
        raise
    if check is not None:
        try:
            check(part)
        except ValueError as error:
            part.unlink(missing_ok=True)
            raise ChecksumError(f"{dest.name} from {url} is not what was asked for: {error}. Nothing was saved "
                                f"under {dest}; check the server (or its mirror) and download again") from error
    os.replace(part, dest)
    if record:
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
