"""One ProteinGym assay without the whole zip: its member read out of the remote zip with HTTP ranges.

ProteinGym publishes its assays as two large zips (:data:`~revdistill.proteingym.data.PROTEINGYM_FILES`).
:func:`fetch_assay` gets just one assay's CSV from them:

1. read the end of the zip (end-of-central-directory record, and the ZIP64 one when present), then the
   central directory, to find the member ``<DMS_id>.csv`` and where its bytes are;
2. read the member's local header, then download its compressed bytes (resumable:
   :func:`revdistill.io.download.download_file` with a byte range), inflate them and check the CRC-32;
3. write ``<data folder>/<zip stem>/<DMS_id>.csv`` atomically, where
   :func:`~revdistill.proteingym.data.find_assay_csv` looks.

When the server does not serve byte ranges (it answers 200 with the whole file), the whole zip is
downloaded once instead (resumable, SHA-256 recorded) into the data folder and read in place from then on.

The base URL is :data:`~revdistill.proteingym.data.BASE_URL`, or ``$REVDISTILL_PROTEINGYM_URL``, or the
``base_url`` argument; it serves ``<base>/cv_folds_singles_substitutions.zip`` and
``<base>/DMS_ProteinGym_substitutions.zip``.
"""
from __future__ import annotations

import logging
import os
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from revdistill.io.download import (
    ChecksumError, ProgressCallback, RangeNotSupportedError, check_online as _check_online, download_file,
    fetch_range, record_checksum,
)
from revdistill.io.files import file_lock, open_zip, sha256_of
from revdistill.proteingym.data import (
    PROTEINGYM_URL_ENV, _unknown_assay, data_folders, load_reference, proteingym_base_url, writable_data_folder,
)

logger = logging.getLogger(__name__)

__all__ = ["PROTEINGYM_URL_ENV", "SINGLES", "ALL_VARIANTS", "ZipMember", "proteingym_base_url", "zip_url",
           "read_zip_directory", "fetch_assay", "check_online"]

SINGLES = "cv_folds_singles_substitutions"      # singles with the official folds (preferred)
ALL_VARIANTS = "DMS_ProteinGym_substitutions"   # every variant, multiples included, no folds
_STAGING = ".partial"

_EOCD = struct.Struct("<4s4H2LH")             # end of central directory, 22 bytes
_ZIP64_LOCATOR = struct.Struct("<4sLQL")      # 20 bytes
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")     # 56 bytes
_CENTRAL = struct.Struct("<4s6H3L5H2L")       # central directory entry, 46 bytes
_LOCAL = struct.Struct("<4s5H3L2H")           # local file header, 30 bytes
_TAIL = _EOCD.size + _ZIP64_LOCATOR.size + 0xFFFF  # the EOCD can be followed by a comment of up to 64 kB
_MAX32, _MAX16 = 0xFFFFFFFF, 0xFFFF


@dataclass(frozen=True)
class ZipMember:
    """One entry of a zip's central directory (sizes in bytes; ``method`` 0 stored, 8 deflate)."""

    name: str
    method: int
    flags: int
    crc32: int
    compressed_size: int
    file_size: int
    header_offset: int


def zip_url(source: str, base_url: str | None = None) -> str:
    """URL of ``<source>.zip``; ``source`` is :data:`SINGLES` or :data:`ALL_VARIANTS`."""
    if source not in (SINGLES, ALL_VARIANTS):
        raise ValueError(f"source={source!r} must be {SINGLES!r} or {ALL_VARIANTS!r}")
    return f"{proteingym_base_url(base_url)}/{source}.zip"


def check_online(base_url: str | None = None, timeout: float = 5.0) -> str | None:
    """``None`` if the ProteinGym server answers, else a one-line reason (DNS failure, refused, proxy …)."""
    return _check_online(proteingym_base_url(base_url) + "/", timeout=timeout)


# ------------------------------------------------------------------ reading the remote zip's directory
def _bytes_at(url: str, offset: int, length: int, tail: bytes, tail_start: int, options: dict) -> bytes:
    """``length`` bytes at ``offset``: from the tail already read when they are in it, else one range request."""
    if offset >= tail_start and offset + length <= tail_start + len(tail):
        return tail[offset - tail_start: offset - tail_start + length]
    data, _ = fetch_range(url, offset, offset + length - 1, **options)
    return data


def _find_eocd(url: str, tail: bytes) -> int:
    end = len(tail)
    while True:
        position = tail.rfind(b"PK\x05\x06", 0, end)
        if position < 0:
            raise ValueError(f"{url} is not a zip file: no end-of-central-directory record in its last "
                             f"{len(tail)} bytes")
        if len(tail) - position >= _EOCD.size:
            comment_length = _EOCD.unpack_from(tail, position)[-1]
            if position + _EOCD.size + comment_length == len(tail):
                return position
        end = position  # the signature was inside the comment: look further back


def _zip64_extra(extra: bytes, values: list[int]) -> list[int]:
    """Replace the 0xFFFFFFFF fields of ``values`` (size, compressed size, offset) from the ZIP64 extra field."""
    position = 0
    while position + 4 <= len(extra):
        header_id, size = struct.unpack_from("<2H", extra, position)
        if header_id == 0x0001:
            field = extra[position + 4: position + 4 + size]
            cursor = 0
            for index, value in enumerate(values):
                if value == _MAX32 and cursor + 8 <= len(field):
                    values[index] = struct.unpack_from("<Q", field, cursor)[0]
                    cursor += 8
            return values
        position += 4 + size
    return values


def _parse_central_directory(url: str, directory: bytes, count: int) -> dict[str, ZipMember]:
    members, position = {}, 0
    for _ in range(count):
        if directory[position: position + 4] != b"PK\x01\x02":
            raise ValueError(f"{url}: malformed zip central directory at entry {len(members)}")
        fields = _CENTRAL.unpack_from(directory, position)
        flags, method, crc, compressed, size = fields[3], fields[4], fields[7], fields[8], fields[9]
        name_length, extra_length, comment_length, offset = fields[10], fields[11], fields[12], fields[16]
        start = position + _CENTRAL.size
        raw_name = directory[start: start + name_length]
        extra = directory[start + name_length: start + name_length + extra_length]
        size, compressed, offset = _zip64_extra(extra, [size, compressed, offset])
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
        members[name] = ZipMember(name, method, flags, crc, compressed, size, offset)
        position = start + name_length + extra_length + comment_length
    return members


def read_zip_directory(url: str, *, timeout: float = 60.0, retries: int = 3) -> tuple[dict[str, ZipMember], int]:
    """The members of a remote zip, read with two or three range requests (ZIP64 handled).

    Returns
    -------
    (members, size) : ``{member name: ZipMember}`` and the zip's size in bytes

    Raises
    ------
    RangeNotSupportedError
        The server does not serve byte ranges (use the whole zip instead).
    ValueError
        Not a zip file, or a malformed directory.
    revdistill.io.download.DownloadError
        HTTP error or server unreachable.
    """
    options = {"timeout": timeout, "retries": retries}
    tail, total = fetch_range(url, -_TAIL, **options)
    total = total if total is not None else len(tail)
    tail_start = total - len(tail)
    eocd = _find_eocd(url, tail)
    _, _, _, _, count, directory_size, directory_offset, _ = _EOCD.unpack_from(tail, eocd)
    locator = eocd - _ZIP64_LOCATOR.size
    if locator >= 0 and tail[locator: locator + 4] == b"PK\x06\x07":
        zip64_offset = _ZIP64_LOCATOR.unpack_from(tail, locator)[2]
        record = _bytes_at(url, zip64_offset, _ZIP64_EOCD.size, tail, tail_start, options)
        if record[:4] != b"PK\x06\x06":
            raise ValueError(f"{url}: the ZIP64 locator points to byte {zip64_offset}, which holds no ZIP64 record")
        _, _, _, _, _, _, _, count, directory_size, directory_offset = _ZIP64_EOCD.unpack(record)
    elif _MAX16 == count or _MAX32 in (directory_size, directory_offset):
        raise ValueError(f"{url}: the zip needs ZIP64 fields but has no ZIP64 locator")
    directory = _bytes_at(url, directory_offset, directory_size, tail, tail_start, options)
    return _parse_central_directory(url, directory, count), total


# ------------------------------------------------------------------ one member, inflated and checked
def _inflate(member: ZipMember, raw: Path, target: Path, url: str) -> None:
    """Inflate ``raw`` (the member's compressed bytes) into ``target`` atomically, checking size and CRC-32."""
    if member.method == zipfile.ZIP_DEFLATED:
        inflater = zlib.decompressobj(-15)
    elif member.method == zipfile.ZIP_STORED:
        inflater = None
    else:
        raise ValueError(f"{member.name} in {url} uses zip compression method {member.method}; only 0 (stored) "
                         f"and 8 (deflate) are read")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    crc, size = 0, 0
    try:
        with os.fdopen(handle, "wb") as out, open(raw, "rb") as source:
            for chunk in iter(lambda: source.read(1 << 20), b""):
                data = inflater.decompress(chunk) if inflater is not None else chunk
                crc, size = zlib.crc32(data, crc), size + len(data)
                out.write(data)
            if inflater is not None:
                data = inflater.flush()
                crc, size = zlib.crc32(data, crc), size + len(data)
                out.write(data)
        if crc != member.crc32 or size != member.file_size:
            raise ChecksumError(
                f"CRC-32 mismatch for {member.name} from {url}: expected crc {member.crc32:08x} and {member.file_size} "
                f"bytes, got {crc:08x} and {size}; nothing was written, the next call downloads it again")
        os.replace(tmp_name, target)
    except zlib.error as error:
        raise ChecksumError(f"{member.name} from {url} does not inflate ({error}); nothing was written, the next "
                            f"call downloads it again") from error
    finally:
        Path(tmp_name).unlink(missing_ok=True)
        raw.unlink(missing_ok=True)


def _fetch_member(url: str, member: ZipMember, target: Path, staging: Path, label: str,
                  progress: ProgressCallback | None, options: dict) -> Path:
    if member.flags & 0x1:
        raise ValueError(f"{member.name} in {url} is encrypted")
    header, _ = fetch_range(url, member.header_offset, member.header_offset + _LOCAL.size - 1, **options)
    if header[:4] != b"PK\x03\x04":
        raise ValueError(f"{url}: no local file header for {member.name} at byte {member.header_offset}")
    name_length, extra_length = _LOCAL.unpack(header)[-2:]
    start = member.header_offset + _LOCAL.size + name_length + extra_length
    download_file(url, staging, byte_range=(start, start + member.compressed_size), progress=progress,
                  label=label, record=False, **options)
    _inflate(member, staging, target, url)
    record_checksum(target.parent, target.name, sha256_of(target))
    return target


def _local_copy(folder: Path, source: str, dms_id: str) -> Path | None:
    csv = folder / source / f"{dms_id}.csv"
    if csv.is_file():
        return csv
    archive = folder / f"{source}.zip"
    if archive.is_file():
        with open_zip(archive, "ProteinGym archive") as zf:
            if any(Path(name).name == f"{dms_id}.csv" for name in zf.namelist()):
                return archive
    return None


def _fetch_from(source: str, dms_id: str, folder: Path, base_url: str | None,
                progress: ProgressCallback | None, options: dict) -> Path | None:
    """Fetch one assay from one zip; ``None`` if that zip has no such member."""
    url = zip_url(source, base_url)
    staging = folder / _STAGING / f"{source}.{dms_id}.zipdata"
    staging.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(staging.with_suffix(".lock")):
        local = _local_copy(folder, source, dms_id)  # another process may have fetched it meanwhile
        if local is not None:
            return local
        try:
            members, _ = read_zip_directory(url, **options)
        except RangeNotSupportedError:
            logger.info("%s does not serve byte ranges: downloading the whole zip once", url)
            archive = folder / f"{source}.zip"
            download_file(url, archive, progress=progress, label=archive.name, **options)
            return _local_copy(folder, source, dms_id)
        member = next((m for name, m in members.items() if Path(name).name == f"{dms_id}.csv"), None)
        if member is None:
            return None
        target = folder / source / f"{dms_id}.csv"
        logger.info("fetching %s (%d compressed bytes) from %s", member.name, member.compressed_size, url)
        return _fetch_member(url, member, target, staging, f"{dms_id} ({source})", progress, options)


def fetch_assay(
    dms_id: str,
    data_dir: str | Path | None = None,
    *,
    include_multiples: bool = False,
    progress: ProgressCallback | None = None,
    base_url: str | None = None,
    timeout: float = 60.0,
    retries: int = 3,
) -> dict[str, Path]:
    """Get one assay's CSV(s) from ProteinGym's remote zips into the data folder (nothing if already there).

    Parameters
    ----------
    dms_id : str
        A ``DMS_id`` of the reference file (checked first, offline: unknown ids list close matches).
    data_dir : str or Path, optional
        Data folder; default :func:`~revdistill.proteingym.data.resolve_data_dir`. Every folder of
        :func:`~revdistill.proteingym.data.data_folders` is searched first; a fetch goes to the first
        writable one (a shared read-only folder is skipped for the cache).
    include_multiples : bool, default=False
        Also get the ``DMS_ProteinGym_substitutions`` member (every variant, multiples included). By default
        only the ``cv_folds_singles_substitutions`` member (singles with the official folds); an assay
        missing from that zip is taken from the other one.
    progress : callable, optional
        ``progress(done_bytes, total_bytes, label)``, label ``"<DMS_id> (<zip stem>)"`` (or the zip's
        name when the whole zip is downloaded).
    base_url : str, optional
        Where the zips are; default ``$REVDISTILL_PROTEINGYM_URL``, else ProteinGym's v1.3 URL.

    Returns
    -------
    dict
        ``{zip stem: path}``: the CSV written (``<data>/<zip stem>/<DMS_id>.csv``), or the whole zip when
        the server does not serve ranges; either way where :func:`read_assay` finds it.

    Raises
    ------
    UnknownAssayError
        ``dms_id`` is not in the reference file.
    revdistill.io.download.DownloadError
        Offline (the reason), HTTP errors such as 404, disk full, transfer broken after ``retries``
        attempts (the partial bytes are kept; the next call resumes).
    revdistill.io.download.ChecksumError
        CRC-32 or digest mismatch (nothing is written).
    """
    if data_dir is not None:
        Path(data_dir).expanduser().mkdir(parents=True, exist_ok=True)
    folders = data_folders(data_dir)
    reference = load_reference(data_dir)  # the default folder may not exist yet (a fresh cache)
    if dms_id not in reference.index:
        raise _unknown_assay(dms_id, reference)
    options = {"timeout": timeout, "retries": retries}
    sources = [SINGLES, ALL_VARIANTS] if include_multiples else [SINGLES]
    fetched: dict[str, Path] = {}
    for source in sources:
        path = next((found for found in (_local_copy(f, source, dms_id) for f in folders) if found), None)
        if path is None:  # fetched into the first folder we may write (a shared read-only one is skipped)
            path = _fetch_from(source, dms_id, writable_data_folder(data_dir), base_url, progress, options)
        if path is not None:
            fetched[source] = path
        elif ALL_VARIANTS not in sources:
            logger.info("%s is not in %s.zip; taking it from %s.zip", dms_id, source, ALL_VARIANTS)
            sources.append(ALL_VARIANTS)
    if not fetched:
        raise FileNotFoundError(f"{dms_id}.csv is in neither {zip_url(SINGLES, base_url)} nor "
                                f"{zip_url(ALL_VARIANTS, base_url)}")
    return fetched
