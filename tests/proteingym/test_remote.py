"""One assay out of ProteinGym's remote zips: HTTP ranges (ZIP64 too), whole-zip fallback, resume, errors.

The zips are built here from the real assay CSVs in ``shared/data/proteingym/assays`` (deflated, with a
stored incompressible filler so the member lies outside the zip's tail), laid out like ProteinGym's.
"""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from http_servers import refused_url, serve_directory
from revdistill import proteingym as pg
from revdistill.io.download import ChecksumError, DownloadError, read_checksums
from revdistill.io.files import sha256_of
from revdistill.proteingym import remote

KENNOUCHE = "A0A1I9GEU1_NEIME_Kennouche_2019"
PIN1 = "PIN1_HUMAN_Tsuboyama_2023_1I6C"
FILLER = np.random.default_rng(0).bytes(200_000)  # incompressible: the zip is larger than its 64 kB tail


def _dms_layout(csv: bytes) -> bytes:
    """The DMS_ProteinGym_substitutions layout of a cv-folds file: its first four columns."""
    return b"".join(b",".join(line.split(b",")[:4]) + b"\n" for line in csv.splitlines())


def build_zips(root, assays_dir, zip64: bool = False, monkeypatch=None) -> dict[str, bytes]:
    """Write both ProteinGym zips under ``root``; return ``{member file name: bytes}`` as stored."""
    kennouche = (assays_dir / f"{KENNOUCHE}.csv").read_bytes()
    pin1 = (assays_dir / f"{PIN1}.csv").read_bytes()
    if zip64:  # every size and offset above 1000 bytes goes through the ZIP64 fields, as in the real zips
        monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1000)
    root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(root / f"{remote.SINGLES}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{remote.SINGLES}/{KENNOUCHE}.csv", kennouche)
        zf.writestr(f"{remote.SINGLES}/ZZZ_filler.csv", FILLER, compress_type=zipfile.ZIP_STORED)
        zf.comment = b"ProteinGym v1.3 (test copy)"
    with zipfile.ZipFile(root / f"{remote.ALL_VARIANTS}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{remote.ALL_VARIANTS}/{PIN1}.csv", pin1, compress_type=zipfile.ZIP_STORED)
        zf.writestr(f"{remote.ALL_VARIANTS}/ZZZ_filler.csv", FILLER, compress_type=zipfile.ZIP_STORED)
        zf.writestr(f"{remote.ALL_VARIANTS}/{KENNOUCHE}.csv", _dms_layout(kennouche))
    if zip64:
        monkeypatch.undo()
        for name in (f"{remote.SINGLES}.zip", f"{remote.ALL_VARIANTS}.zip"):  # as a > 4 GB zip has them
            raw = bytearray((root / name).read_bytes())
            eocd = raw.rindex(b"PK\x05\x06")
            raw[eocd + 8: eocd + 20] = struct.pack("<2H2L", 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
            (root / name).write_bytes(bytes(raw))
    return {"kennouche": kennouche, "pin1": pin1, "kennouche_all": _dms_layout(kennouche)}


@pytest.fixture
def served(tmp_path, proteingym_dir):
    with serve_directory(tmp_path / "server", ranges=True) as server:
        server.files = build_zips(server.root, proteingym_dir / "assays")
        yield server


def _member(server, source, dms_id):
    members, size = remote.read_zip_directory(f"{server.url}/{source}.zip")
    return next(m for name, m in members.items() if name.endswith(f"/{dms_id}.csv")), size


def test_official_urls_and_env_override(monkeypatch):
    monkeypatch.delenv(remote.PROTEINGYM_URL_ENV, raising=False)
    for source in (remote.SINGLES, remote.ALL_VARIANTS):
        assert remote.zip_url(source) == pg.PROTEINGYM_FILES[f"{source}.zip"]
    monkeypatch.setenv(remote.PROTEINGYM_URL_ENV, "http://mirror.example/pg/")
    assert remote.zip_url(remote.SINGLES) == "http://mirror.example/pg/cv_folds_singles_substitutions.zip"
    with pytest.raises(ValueError, match="source='x' must be"):
        remote.zip_url("x")
    monkeypatch.setenv(remote.PROTEINGYM_URL_ENV, "ftp://x")
    with pytest.raises(ValueError, match="REVDISTILL_PROTEINGYM_URL='ftp://x' must be an http"):
        remote.zip_url(remote.SINGLES)


def _assert_directory_matches_zipfile(server, name):
    members, size = remote.read_zip_directory(f"{server.url}/{name}")
    with zipfile.ZipFile(server.root / name) as zf:
        expected = {i.filename: (i.CRC, i.compress_size, i.file_size, i.header_offset, i.compress_type)
                    for i in zf.infolist()}
    assert {n: (m.crc32, m.compressed_size, m.file_size, m.header_offset, m.method)
            for n, m in members.items()} == expected
    assert size == (server.root / name).stat().st_size


def test_directory_matches_zipfile(served):
    for source in (remote.SINGLES, remote.ALL_VARIANTS):
        _assert_directory_matches_zipfile(served, f"{source}.zip")


def test_fetch_singles_with_range_requests(served, tmp_path):
    data = tmp_path / "data"
    calls = []
    fetched = remote.fetch_assay(KENNOUCHE, data, base_url=served.url, progress=lambda *a: calls.append(a))
    target = data / remote.SINGLES / f"{KENNOUCHE}.csv"
    assert fetched == {remote.SINGLES: target}
    assert target.read_bytes() == served.files["kennouche"]
    assert all(r["range"] and r["status"] == 206 for r in served.requests)
    zip_size = (served.root / f"{remote.SINGLES}.zip").stat().st_size
    assert sum(r["sent"] for r in served.requests) < 0.5 * zip_size  # the filler was never sent
    member, _ = _member(served, remote.SINGLES, KENNOUCHE)
    assert calls[-1] == (member.compressed_size, member.compressed_size, f"{KENNOUCHE} ({remote.SINGLES})")
    assert read_checksums(target.parent) == {target.name: sha256_of(target)}
    assert not list((data / ".partial").glob("*.zipdata*"))
    assay = pg.read_assay(KENNOUCHE, data_dir=data)
    assert assay.n_variants == 922 and assay.fold_source["fold_random_5"] == "official"
    assert assay.source == f"{remote.SINGLES}:{target.name}"
    before = len(served.requests)
    assert remote.fetch_assay(KENNOUCHE, data, base_url=served.url) == fetched
    assert len(served.requests) == before  # already there: nothing asked


def test_all_variants_and_fallback_to_the_all_variants_zip(served, tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv(remote.PROTEINGYM_URL_ENV, served.url)
    both = remote.fetch_assay(KENNOUCHE, data, include_multiples=True)
    assert both[remote.ALL_VARIANTS].read_bytes() == served.files["kennouche_all"]
    # PIN1 is not in the singles zip: it comes from the other one (a stored member), multiples included
    assert remote.fetch_assay(PIN1, data) == {remote.ALL_VARIANTS: data / remote.ALL_VARIANTS / f"{PIN1}.csv"}
    assert (data / remote.ALL_VARIANTS / f"{PIN1}.csv").read_bytes() == served.files["pin1"]
    assay = pg.read_assay(PIN1, data_dir=data)
    assert assay.n_variants == 686 and assay.fold_source["fold_modulo_5"] == "generated"
    assert len(pg.read_assay(PIN1, data_dir=data, singles_only=False).variants) == 802


def test_zip64_archive(tmp_path, proteingym_dir, monkeypatch):
    with serve_directory(tmp_path / "server") as server:
        files = build_zips(server.root, proteingym_dir / "assays", zip64=True, monkeypatch=monkeypatch)
        raw = (server.root / f"{remote.ALL_VARIANTS}.zip").read_bytes()
        assert b"PK\x06\x06" in raw and b"PK\x06\x07" in raw  # ZIP64 end records, as written by CPython
        with zipfile.ZipFile(server.root / f"{remote.ALL_VARIANTS}.zip") as zf:
            assert zf.read(f"{remote.ALL_VARIANTS}/{KENNOUCHE}.csv") == files["kennouche_all"]
        entry = raw.index(b"PK\x01\x02")
        assert struct.unpack_from("<2L", raw, entry + 20) == (0xFFFFFFFF, 0xFFFFFFFF)  # sizes in the ZIP64 extra
        eocd = raw[raw.rindex(b"PK\x05\x06"):]
        assert struct.unpack_from("<H2L", eocd, 10) == (0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)  # all in the ZIP64 record
        _assert_directory_matches_zipfile(server, f"{remote.ALL_VARIANTS}.zip")
        fetched = remote.fetch_assay(KENNOUCHE, tmp_path / "data", include_multiples=True, base_url=server.url)
        assert fetched[remote.ALL_VARIANTS].read_bytes() == files["kennouche_all"]
        assert fetched[remote.SINGLES].read_bytes() == files["kennouche"]


def test_server_without_range_support_gives_the_whole_zip_once(tmp_path, proteingym_dir):
    with serve_directory(tmp_path / "server", ranges=False) as server:
        build_zips(server.root, proteingym_dir / "assays")
        data = tmp_path / "data"
        calls = []
        fetched = remote.fetch_assay(KENNOUCHE, data, base_url=server.url, progress=lambda *a: calls.append(a))
        archive = data / f"{remote.SINGLES}.zip"
        assert fetched == {remote.SINGLES: archive}
        assert archive.read_bytes() == (server.root / archive.name).read_bytes()
        assert [r["range"] is None for r in server.requests] == [False, True]  # asked a range, got 200: whole zip
        assert calls[-1] == (archive.stat().st_size, archive.stat().st_size, archive.name)
        assert read_checksums(data) == {archive.name: sha256_of(archive)}
        assay = pg.read_assay(KENNOUCHE, data_dir=data)  # read in place
        assert assay.source == f"{remote.SINGLES}:{archive.name}" and assay.n_variants == 922


def test_broken_connection_then_resume(served, tmp_path):
    data = tmp_path / "data"
    member, _ = _member(served, remote.SINGLES, KENNOUCHE)
    served.cut_next(after=5_000, min_length=member.compressed_size, max_length=member.compressed_size)
    with pytest.raises(DownloadError, match=r"failed after 1 attempt\(s\): connection closed after 5000 of "
                                            r"\d+ bytes; the partial file .*zipdata.part \(5000 bytes\) is kept"):
        remote.fetch_assay(KENNOUCHE, data, base_url=served.url, retries=1)
    assert not (data / remote.SINGLES / f"{KENNOUCHE}.csv").exists()
    remote.fetch_assay(KENNOUCHE, data, base_url=served.url)
    last = served.requests[-1]
    data_start = member.header_offset + 30 + len(member.name)
    end = data_start + member.compressed_size - 1
    assert (last["range"], last["status"], last["sent"]) == (
        f"bytes={data_start + 5000}-{end}", 206, member.compressed_size - 5000)
    assert (data / remote.SINGLES / f"{KENNOUCHE}.csv").read_bytes() == served.files["kennouche"]


def test_crc_mismatch_writes_nothing(served, tmp_path):
    path = served.root / f"{remote.SINGLES}.zip"
    raw = bytearray(path.read_bytes())
    entry = raw.index(b"PK\x01\x02")  # the first central-directory entry is Kennouche
    raw[entry + 16: entry + 20] = struct.pack("<L", 0xDEADBEEF)
    path.write_bytes(bytes(raw))
    data = tmp_path / "data"
    with pytest.raises(ChecksumError, match=r"CRC-32 mismatch for cv_folds_singles_substitutions/"
                                            rf"{KENNOUCHE}\.csv from .*expected crc deadbeef.*nothing was written"):
        remote.fetch_assay(KENNOUCHE, data, base_url=served.url)
    assert not list((data / remote.SINGLES).iterdir())
    assert not list((data / ".partial").glob("*.zipdata*"))


def test_not_a_zip_and_not_found(served, tmp_path):
    served.add(f"broken/{remote.SINGLES}.zip", b"not a zip at all" * 10)
    with pytest.raises(ValueError, match="is not a zip file: no end-of-central-directory record"):
        remote.fetch_assay(KENNOUCHE, tmp_path / "a", base_url=served.url + "/broken")
    with pytest.raises(DownloadError, match=rf"download of {served.url}/nowhere/{remote.SINGLES}.zip failed: HTTP 404"):
        remote.fetch_assay(KENNOUCHE, tmp_path / "b", base_url=served.url + "/nowhere")
    assert not (tmp_path / "b" / remote.SINGLES).exists()


def test_offline_and_unknown_assay(tmp_path, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    base = refused_url().rsplit("/", 1)[0]
    assert remote.check_online(base) == "cannot reach 127.0.0.1: connection refused"
    with pytest.raises(DownloadError, match="failed after 1 attempt.*connection refused; nothing was written"):
        remote.fetch_assay(KENNOUCHE, tmp_path, base_url=base, retries=1)
    with pytest.raises(pg.UnknownAssayError, match=f"did you mean {PIN1}"):
        remote.fetch_assay("PIN1_HUMAN_Tsuboyama_2023", tmp_path, base_url=base)


def test_a_read_only_data_folder_is_read_and_fetches_go_to_the_cache(tmp_path, monkeypatch, proteingym_dir):
    """A shared, read-only ProteinGym folder stays first; an assay missing from it is fetched into the
    cache, and both are found afterwards."""
    import shutil

    from revdistill.proteingym import data as pg_data

    shared = tmp_path / "shared"
    (shared / "assays").mkdir(parents=True)
    shutil.copy(proteingym_dir / "assays" / "PIN1_HUMAN_Tsuboyama_2023_1I6C.csv", shared / "assays")
    monkeypatch.setenv("REVDISTILL_CACHE", str(tmp_path / "cache"))
    real = pg_data._can_write
    monkeypatch.setattr(pg_data, "_can_write", lambda folder: folder != shared and real(folder))  # a read-only mount
    assert pg_data.data_folders(shared) == [shared, tmp_path / "cache" / "proteingym"]
    assert pg_data.writable_data_folder(shared) == tmp_path / "cache" / "proteingym"
    assert pg_data.find_assay_csv("PIN1_HUMAN_Tsuboyama_2023_1I6C", shared)[1].parent == shared / "assays"
    fetched = tmp_path / "cache" / "proteingym" / "cv_folds_singles_substitutions" / "OTHER_ASSAY.csv"
    fetched.parent.mkdir(parents=True)
    fetched.write_text("mutant,DMS_score\n")
    assert pg_data.find_assay_csv("OTHER_ASSAY", shared)[1] == fetched
    assert pg_data.local_assay_ids(shared) == {"PIN1_HUMAN_Tsuboyama_2023_1I6C": "assays",
                                               "OTHER_ASSAY": "cv_folds_singles_substitutions"}
    assert real(tmp_path / "new" / "folder") and not real(Path("/proc/1"))


def test_fetch_into_a_fresh_default_cache(served, tmp_path, monkeypatch):
    """No data folder given, none configured, no cache folder yet (a new user's first fetch): the
    assay goes to the cache's proteingym folder and reads back from there."""
    monkeypatch.delenv("REVDISTILL_PROTEINGYM_DIR", raising=False)
    monkeypatch.setenv("REVDISTILL_CACHE", str(tmp_path / "new-cache"))
    fetched = remote.fetch_assay(KENNOUCHE, base_url=served.url)
    target = tmp_path / "new-cache" / "proteingym" / remote.SINGLES / f"{KENNOUCHE}.csv"
    assert fetched == {remote.SINGLES: target}
    assert target.read_bytes() == served.files["kennouche"]
    assert pg.read_assay(KENNOUCHE).n_variants == 922
