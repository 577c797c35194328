"""``revdistill weights list | download`` against a local server in fair-esm's layout."""
from __future__ import annotations

import collections
import io

import pytest

from http_servers import refused_url, serve_checkpoint, serve_directory
from revdistill.cli import main
from revdistill.cli.weights import ProgressPrinter, format_bytes

NAME_8M = "esm2_t6_8M_UR50D"


def cli(*argv) -> int:
    return main([str(arg) for arg in argv])


@pytest.fixture
def server(tmp_path):
    with serve_directory(tmp_path / "server") as running:
        serve_checkpoint(running, "8M", seed=5)
        yield running


def _one_error_line(err: str, *fragments: str) -> None:
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_list_then_download_then_list(server, tmp_path, capsys):
    folder = tmp_path / "weights"
    assert cli("weights", "list", "--weights-dir", folder) == 0
    out = capsys.readouterr().out
    rows = [line.split()[:2] for line in out.splitlines()[1:7]]
    assert rows == [[alias, "missing"] for alias in ("8M", "35M", "150M", "650M", "3B", "15B")]
    assert f"0 of 6 present in {folder}" in out and str(folder / f"{NAME_8M}.pt") in out

    assert cli("weights", "download", "8M", "--weights-dir", folder, "--base-url", server.url) == 0
    captured = capsys.readouterr()
    model = folder / f"{NAME_8M}.pt"
    assert captured.out.strip() == f"8M: {model}"
    assert model.read_bytes() == (server.root / "models" / f"{NAME_8M}.pt").read_bytes()
    assert "100.0%" in captured.err.splitlines()[-1] and captured.err.splitlines()[-1].startswith("8M: ")

    assert cli("weights", "list", "--weights-dir", folder) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:2] == ["8M", "present"]
    assert "1 of 6 present" in out


def test_download_resumes_a_partial_file_from_the_env_url(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REVDISTILL_WEIGHTS_URL", server.url)
    served = (server.root / "models" / f"{NAME_8M}.pt").read_bytes()
    (tmp_path / f"{NAME_8M}.pt.part").write_bytes(served[:30_000])
    assert cli("weights", "list", "--weights-dir", tmp_path) == 0
    assert "partial (30.0 kB)" in capsys.readouterr().out
    assert cli("weights", "download", "8M", "--weights-dir", tmp_path) == 0
    model_requests = [r for r in server.requests if r["path"].startswith("/models/")]
    assert [(r["range"], r["sent"]) for r in model_requests] == [("bytes=30000-", len(served) - 30_000)]
    assert (tmp_path / f"{NAME_8M}.pt").read_bytes() == served


def test_offline_is_one_line(tmp_path, capsys, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    base = refused_url().rsplit("/", 1)[0]
    assert cli("weights", "download", "8M,35M", "--weights-dir", tmp_path, "--base-url", base) != 0
    _one_error_line(capsys.readouterr().err, "offline: cannot reach 127.0.0.1: connection refused",
                    "nothing was downloaded")
    assert not list(tmp_path.iterdir())


def test_not_found_is_one_line(server, tmp_path, capsys):
    assert cli("weights", "download", "35M", "--weights-dir", tmp_path, "--base-url", server.url) != 0
    _one_error_line(capsys.readouterr().err, "esm2_t12_35M_UR50D-contact-regression.pt failed: HTTP 404")


def test_digest_mismatch_is_one_line(server, tmp_path, capsys):
    (tmp_path / "SHA256SUMS").write_text(f"{'f' * 64}  {NAME_8M}.pt\n")
    assert cli("weights", "download", "8M", "--weights-dir", tmp_path, "--base-url", server.url) != 0
    _one_error_line(capsys.readouterr().err, f"checksum mismatch for {NAME_8M}.pt.part", "f" * 64)
    assert not (tmp_path / f"{NAME_8M}.pt").exists()


def test_disk_full_is_one_line(server, tmp_path, capsys, monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr("revdistill.io.download.shutil.disk_usage", lambda path: usage(100, 99, 1))
    assert cli("weights", "download", "8M", "--weights-dir", tmp_path, "--base-url", server.url) != 0
    _one_error_line(capsys.readouterr().err, "not enough disk space", "1 free in")


def test_unknown_model_is_one_line(tmp_path, capsys):
    assert cli("weights", "download", "8M,tiny-32", "--weights-dir", tmp_path) != 0
    _one_error_line(capsys.readouterr().err, "'tiny-32' is a random-init tiny model")


def test_progress_printer_without_a_terminal_prints_tenths():
    stream = io.StringIO()
    printer = ProgressPrinter(stream)
    for done in range(0, 1001, 50):
        printer(done, 1000, "35M")
    printer(1000, 1000, "35M")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "35M: 0 B of 1.0 kB   0.0%" and lines[-1] == "35M: 1.0 kB of 1.0 kB 100.0%"
    assert len(lines) == 11
    assert format_bytes(2_600_000_000) == "2.6 GB" and format_bytes(None) == "?"
