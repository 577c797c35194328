"""ProteinGym data: reference, assays, mutants, folds, errors and the resumable download."""
from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from revdistill import proteingym as pg
from revdistill.io.download import ChecksumError, download_file, read_checksums

KENNOUCHE = "A0A1I9GEU1_NEIME_Kennouche_2019"
PIN1 = "PIN1_HUMAN_Tsuboyama_2023_1I6C"


@pytest.fixture(scope="module")
def reference(proteingym_dir):
    return pg.load_reference(proteingym_dir)


def test_reference_has_the_217_assays(reference):
    assert len(reference) == 217
    assert set(pg.REFERENCE_COLUMNS) <= set(reference.columns)
    assert reference.loc[PIN1, "coarse_selection_type"] == "Stability"
    assert pg.list_assays(reference, max_variants=100) == sorted(
        reference.index[reference["DMS_number_single_mutants"] <= 100].tolist(), key=list(reference.index).index)


def test_official_folds_are_used_and_sequences_checked(proteingym_dir, reference):
    assay = pg.read_assay(KENNOUCHE, data_dir=proteingym_dir, reference=reference)
    assert assay.n_variants == 922
    assert assay.fold_source == {s: "official" for s in pg.SCHEMES}
    raw = pd.read_csv(proteingym_dir / "assays" / f"{KENNOUCHE}.csv")
    for scheme in pg.SCHEMES:
        np.testing.assert_array_equal(assay.folds(scheme), raw[scheme].to_numpy())
    assert assay.variants["mutated_sequence"].tolist() == raw["mutated_sequence"].tolist()
    assert assay.selection_type == "Activity" and assay.uniprot_id == "A0A1I9GEU1_NEIME"


def test_generated_folds_reproduce_the_official_position_folds(proteingym_dir, reference):
    """ProteinGym's modulo and contiguous folds are deterministic: regenerate Kennouche's exactly."""
    assay = pg.read_assay(KENNOUCHE, data_dir=proteingym_dir, reference=reference)
    for scheme in ("fold_modulo_5", "fold_contiguous_5"):
        np.testing.assert_array_equal(pg.generate_folds(assay.variants["position"], scheme), assay.folds(scheme))


def test_generated_folds_follow_the_rules(proteingym_dir, reference):
    assay = pg.read_assay(proteingym_dir / "assays" / f"{PIN1}.csv", reference=reference)
    assert assay.n_variants == 686  # singles only; the 116 doubles are dropped
    assert assay.fold_source == {s: "generated" for s in pg.SCHEMES}
    positions = assay.variants["position"].to_numpy()
    distinct = np.unique(positions)
    modulo = assay.folds("fold_modulo_5")
    for rank, position in enumerate(distinct):
        assert set(modulo[positions == position]) == {rank % 5}
    contiguous = assay.folds("fold_contiguous_5")
    blocks = [np.unique(positions[contiguous == k]) for k in range(5)]
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert all(b.max() < c.min() for b, c in zip(blocks[:-1], blocks[1:]))  # consecutive, ordered blocks
    assert all(np.array_equal(b, np.arange(b.min(), b.max() + 1)) for b in blocks)
    random = assay.folds("fold_random_5")
    np.testing.assert_array_equal(random, pg.generate_folds(positions, "fold_random_5", seed=42))
    assert not np.array_equal(random, pg.generate_folds(positions, "fold_random_5", seed=1))
    counts = np.bincount(random, minlength=5)
    assert counts.min() > 0.7 * len(random) / 5
    again = pg.read_assay(proteingym_dir / "assays" / f"{PIN1}.csv", reference=reference)
    pd.testing.assert_frame_equal(again.variants, assay.variants)


def test_read_by_id_from_environment_variable(proteingym_dir, monkeypatch):
    monkeypatch.setenv(pg.ENV_VAR, str(proteingym_dir))
    assert pg.resolve_data_dir() == proteingym_dir
    assay = pg.read_assay(PIN1)
    assert assay.source.startswith("assays:")


def test_read_from_zip_in_place(proteingym_dir, tmp_path):
    shutil.copy(proteingym_dir / "reference_files" / "DMS_substitutions.csv", tmp_path)
    with zipfile.ZipFile(tmp_path / "cv_folds_singles_substitutions.zip", "w") as archive:
        archive.write(proteingym_dir / "assays" / f"{KENNOUCHE}.csv", f"cv_folds_singles_substitutions/{KENNOUCHE}.csv")
    assay = pg.read_assay(KENNOUCHE, data_dir=tmp_path)
    assert assay.source == "cv_folds_singles_substitutions:cv_folds_singles_substitutions.zip"
    assert assay.fold_source["fold_random_5"] == "official"


def test_csv_outside_the_reference_infers_its_target(proteingym_dir, tmp_path, reference):
    path = tmp_path / "my_assay.csv"
    shutil.copy(proteingym_dir / "assays" / f"{PIN1}.csv", path)
    assay = pg.read_assay(path, reference=reference)
    assert assay.target_seq == reference.loc[PIN1, "target_seq"]
    assert assay.selection_type == "unknown" and assay.uniprot_id == "my_assay"


@pytest.mark.parametrize("mutant, expected", [
    ("A12G", [("A", 12, "G")]),
    ("A12G:K15R", [("A", 12, "G"), ("K", 15, "R")]),
])
def test_parse_mutant(mutant, expected):
    assert pg.parse_mutant(mutant) == expected


@pytest.mark.parametrize("bad", ["", "A0G", "12G", "A12", "a12g", "A12G;K15R", "A12G:"])
def test_parse_mutant_rejects(bad):
    with pytest.raises(ValueError, match="mutant"):
        pg.parse_mutant(bad)


def test_apply_and_check_mutants():
    assert pg.apply_mutant("MKV", "K2A:V3L") == "MAL"
    with pytest.raises(ValueError, match="position 2 is 'K' in the target, not 'Q'"):
        pg.apply_mutant("MKV", "Q2A")
    with pytest.raises(ValueError, match=r"2 mutant\(s\) do not match.*Q2A \(position 2 is K\)"
                                         r".*M9A \(position 9 is past the end\)"):
        pg.check_mutants(["M1A", "Q2A", "M9A"], "MKV", "toy")


def _write_pin1(proteingym_dir: Path, path: Path, edit) -> Path:
    frame = pd.read_csv(proteingym_dir / "assays" / f"{PIN1}.csv")
    edit(frame).to_csv(path, index=False)
    return path


def test_wild_type_mismatch_lists_the_offenders(proteingym_dir, tmp_path, reference):
    def corrupt(frame):
        frame.loc[[3, 7], "mutant"] = ["W26D", "W26E"]  # position 26 is A in PIN1's target
        return frame
    path = _write_pin1(proteingym_dir, tmp_path / f"{PIN1}.csv", corrupt)
    with pytest.raises(ValueError, match=r"2 mutant\(s\) do not match.*W26D \(position 26 is A; CSV line 5\), "
                                         r"W26E \(position 26 is A; CSV line 9\)"):
        pg.read_assay(path, reference=reference)


def test_mutated_sequence_disagreeing_with_mutant(proteingym_dir, tmp_path, reference):
    def corrupt(frame):
        frame.loc[0, "mutated_sequence"] = frame.loc[1, "mutated_sequence"]
        return frame
    path = _write_pin1(proteingym_dir, tmp_path / f"{PIN1}.csv", corrupt)
    with pytest.raises(ValueError, match=r"'mutated_sequence' disagrees .* CSV line\(s\) 2 .*A26D"):
        pg.read_assay(path, reference=reference)


def test_missing_column_and_bad_scores(proteingym_dir, tmp_path, reference):
    path = _write_pin1(proteingym_dir, tmp_path / "a.csv", lambda f: f.drop(columns=["DMS_score"]))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['DMS_score'\]"):
        pg.read_assay(path, reference=reference)
    def text_score(frame):
        frame["DMS_score"] = frame["DMS_score"].astype(object)
        frame.loc[5, "DMS_score"] = "n/a"
        return frame
    path = _write_pin1(proteingym_dir, tmp_path / "b.csv", text_score)
    with pytest.raises(ValueError,
                       match=r"column 'DMS_score' is missing or not a number at CSV line\(s\) 7 \(values empty\)"):
        pg.read_assay(path, reference=reference)


def test_malformed_csv(tmp_path, reference):
    path = tmp_path / "broken.csv"
    path.write_text('mutant,DMS_score\n"A1G,0.5\nK2R,0.1,7,8\n')
    with pytest.raises(ValueError, match="malformed assay"):
        pg.read_assay(path, reference=reference)


def test_too_few_variants_or_positions(proteingym_dir, tmp_path, reference):
    path = _write_pin1(proteingym_dir, tmp_path / "few.csv", lambda f: f.head(6))
    with pytest.raises(ValueError, match="needs at least 10"):
        pg.read_assay(path, reference=reference)
    path = _write_pin1(proteingym_dir, tmp_path / "narrow.csv",
                       lambda f: f[f["mutant"].str[1:-1].isin(["26", "27", "28"])])
    with pytest.raises(ValueError, match="only 3 distinct mutated position"):
        pg.read_assay(path, reference=reference)


def test_unknown_assay_suggests_close_matches(proteingym_dir, reference):
    with pytest.raises(pg.UnknownAssayError, match="did you mean PIN1_HUMAN_Tsuboyama_2023_1I6C"):
        pg.read_assay("PIN1_HUMAN_Tsuboyama_2023", data_dir=proteingym_dir, reference=reference)


def test_offline_without_data_says_what_to_put_where(tmp_path, monkeypatch, proteingym_dir):
    monkeypatch.delenv(pg.ENV_VAR, raising=False)
    monkeypatch.delenv("REVDISTILL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # the packaged reference knows the id; the message says where its data should go
    with pytest.raises(FileNotFoundError, match=f"assay file {PIN1}.csv not found under .*--download.*{pg.ENV_VAR}"):
        pg.read_assay(PIN1)
    with pytest.raises(pg.UnknownAssayError, match="did you mean"):
        pg.read_assay("PIN1_HUMAN", data_dir=tmp_path)
    shutil.copy(proteingym_dir / "reference_files" / "DMS_substitutions.csv", tmp_path)
    with pytest.raises(FileNotFoundError, match=f"assay file {PIN1}.csv not found under"):
        pg.read_assay(PIN1, data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        pg.resolve_data_dir(tmp_path / "nope")


# ------------------------------------------------------------------ download against a local server
class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one payload; honours Range unless ``ignore_range``; can cut the first answer short."""

    payload = b""
    ignore_range = False
    cut_after: int | None = None
    requests: list = []

    def do_GET(self):  # noqa: N802 (http.server API)
        type(self).requests.append(self.headers.get("Range"))
        if self.path != "/file.zip":
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        if header and not self.ignore_range:
            start = int(header.split("=")[1].rstrip("-"))
            if start >= len(self.payload):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}")
        else:
            self.send_response(200)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_after is not None:
            self.wfile.write(body[: type(self).cut_after])
            type(self).cut_after = None
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    payload = np.random.default_rng(0).bytes(300_000)
    handler = type("Handler", (_RangeHandler,),
                   {"payload": payload, "requests": [], "ignore_range": False, "cut_after": None})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/file.zip", hashlib.sha256(payload).hexdigest()
    httpd.shutdown()
    httpd.server_close()


def test_download_records_checksum(server, tmp_path):
    handler, url, digest = server
    assert download_file(url, tmp_path / "file.zip", expected_sha256=digest) == digest
    assert (tmp_path / "file.zip").read_bytes() == handler.payload
    assert read_checksums(tmp_path) == {"file.zip": digest}
    assert not (tmp_path / "file.zip.part").exists()


def test_download_resumes_a_partial_file(server, tmp_path):
    handler, url, digest = server
    (tmp_path / "file.zip.part").write_bytes(handler.payload[:123_456])
    assert download_file(url, tmp_path / "file.zip", expected_sha256=digest) == digest
    assert handler.requests == ["bytes=123456-"]
    assert (tmp_path / "file.zip").read_bytes() == handler.payload


def test_download_with_a_complete_partial_file(server, tmp_path):
    handler, url, digest = server
    (tmp_path / "file.zip.part").write_bytes(handler.payload)
    assert download_file(url, tmp_path / "file.zip", expected_sha256=digest) == digest
    assert handler.requests == [f"bytes={len(handler.payload)}-"]  # answered 416: nothing left to fetch


def test_download_missing_file_is_loud(server, tmp_path):
    _, url, _ = server
    with pytest.raises(RuntimeError, match="HTTP 404"):
        download_file(url.replace("file.zip", "nope.zip"), tmp_path / "nope.zip", retry_wait=0.0)
    assert not (tmp_path / "nope.zip").exists()


def test_download_resumes_after_a_dropped_connection(server, tmp_path):
    handler, url, digest = server
    handler.cut_after = 100_000
    assert download_file(url, tmp_path / "file.zip", retry_wait=0.0) == digest
    assert handler.requests == [None, "bytes=100000-"]


def test_download_restarts_when_range_is_ignored(server, tmp_path):
    handler, url, digest = server
    handler.ignore_range = True
    (tmp_path / "file.zip.part").write_bytes(b"stale bytes")
    assert download_file(url, tmp_path / "file.zip") == digest
    assert (tmp_path / "file.zip").read_bytes() == handler.payload


def test_download_checksum_mismatch(server, tmp_path):
    _, url, digest = server
    with pytest.raises(ChecksumError, match=f"expected sha256 {'0' * 64}, got {digest}"):
        download_file(url, tmp_path / "file.zip", expected_sha256="0" * 64)
    assert not (tmp_path / "file.zip").exists() and not (tmp_path / "file.zip.part").exists()


def test_download_proteingym_checks_recorded_checksums(server, tmp_path):
    handler, url, digest = server
    pg.download_proteingym(tmp_path, names=["DMS_substitutions.csv"], urls={"DMS_substitutions.csv": url})
    assert read_checksums(tmp_path) == {"DMS_substitutions.csv": digest}
    (tmp_path / "DMS_substitutions.csv").write_bytes(b"corrupted")
    with pytest.raises(ChecksumError, match="delete it and download again"):
        pg.download_proteingym(tmp_path, names=["DMS_substitutions.csv"], urls={"DMS_substitutions.csv": url})
    with pytest.raises(ValueError, match="not a ProteinGym file"):
        pg.download_proteingym(tmp_path, names=["x.zip"])


def test_download_unreachable_server_is_loud(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RuntimeError, match="failed after 2 attempt.*connection refused; nothing was written"):
        download_file(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", retries=2, retry_wait=0.0, timeout=2)
