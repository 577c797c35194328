"""ESM-2 weights: status, download from a local server in fair-esm's layout, resume, errors, then load."""
from __future__ import annotations

import collections
import socket
import urllib.error

import pytest
import torch

from http_servers import refused_url, serve_checkpoint, serve_directory
from revdistill.io.download import (
    ChecksumError, DiskFullError, DownloadError, describe_network_error, read_checksums,
)
from revdistill.io.files import sha256_of
from revdistill.esm.models import weights as w
from revdistill.esm.forward import stock_forward
from revdistill.esm.models.loading import load_esm2
from revdistill.esm.models.weights import checkpoint_paths

NAME_8M = "esm2_t6_8M_UR50D"


@pytest.fixture
def server(tmp_path):
    with serve_directory(tmp_path / "server") as running:
        running.model = serve_checkpoint(running, "8M", seed=3)
        yield running


def _served(server, relative):
    return (server.root / relative).read_bytes()


def _tokens(alphabet):
    converter = alphabet.get_batch_converter()
    return converter([("a", "MKTAYIAKQRQISFVKSHFSRQ"), ("b", "MKVLA")])[2]


def test_table_lists_the_six_models_with_the_official_urls(monkeypatch):
    monkeypatch.delenv(w.WEIGHTS_URL_ENV, raising=False)
    assert [entry.alias for entry in w.ESM2_WEIGHTS] == ["8M", "35M", "150M", "650M", "3B", "15B"]
    sizes = [entry.approx_bytes for entry in w.ESM2_WEIGHTS]
    assert sizes == sorted(sizes) and 25e6 < sizes[0] < 35e6 and 2.4e9 < sizes[3] < 2.8e9
    assert w.weights_urls("650M") == (
        "https://dl.fbaipublicfiles.com/fair-esm/models/esm2_t33_650M_UR50D.pt",
        "https://dl.fbaipublicfiles.com/fair-esm/regression/esm2_t33_650M_UR50D-contact-regression.pt")
    monkeypatch.setenv(w.WEIGHTS_URL_ENV, "http://mirror.example/esm/")
    assert w.weights_urls("esm2_t6_8M_UR50D")[0] == "http://mirror.example/esm/models/esm2_t6_8M_UR50D.pt"
    assert w.weights_urls("8M", base_url="http://other")[1] == (
        "http://other/regression/esm2_t6_8M_UR50D-contact-regression.pt")
    monkeypatch.setenv(w.WEIGHTS_URL_ENV, "dl.example/esm")
    with pytest.raises(ValueError, match="REVDISTILL_WEIGHTS_URL='dl.example/esm' must be an http"):
        w.weights_urls("8M")


def test_status_of_an_empty_folder(tmp_path):
    statuses = w.weights_status(tmp_path)
    assert [(s.alias, s.state, s.size_on_disk, s.partial) for s in statuses][:2] == [
        ("8M", "missing", 0, False), ("35M", "missing", 0, False)]
    assert statuses[3].path == tmp_path / "esm2_t33_650M_UR50D.pt"
    assert not statuses[0].expected_exact


def test_download_then_load_gives_the_same_model(server, tmp_path, one_torch_thread):
    folder = tmp_path / "weights"
    calls = []
    paths = w.download_weights("8M", folder, base_url=server.url, progress=lambda *a: calls.append(a))
    model_path, regression_path = checkpoint_paths("8M", folder)
    assert paths == [model_path]
    assert model_path.read_bytes() == _served(server, f"models/{NAME_8M}.pt")
    assert regression_path.read_bytes() == _served(server, f"regression/{NAME_8M}-contact-regression.pt")
    assert read_checksums(folder) == {model_path.name: sha256_of(model_path),
                                      regression_path.name: sha256_of(regression_path)}
    assert not list(folder.glob("*.part"))
    total = model_path.stat().st_size + regression_path.stat().st_size
    assert calls[-1] == (total, total, "8M")
    assert [done for done, _, _ in calls] == sorted(done for done, _, _ in calls)
    status = w.weights_status(folder)[0]
    assert (status.state, status.size_on_disk, status.regression_present) == ("present", total, True)
    loaded, alphabet = load_esm2("8M", weights_dir=folder)
    for key, value in server.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        tokens = _tokens(alphabet)
        torch.testing.assert_close(stock_forward(loaded, tokens), stock_forward(server.model, tokens), rtol=0, atol=0)
    # a second call finds the files and downloads nothing
    before = len(server.requests)
    assert w.download_weights(["8M"], folder, base_url=server.url) == [model_path]
    assert len(server.requests) == before


def test_load_esm2_download_true_uses_the_env_base_url(server, tmp_path, monkeypatch):
    monkeypatch.setenv(w.WEIGHTS_URL_ENV, server.url)
    with pytest.raises(FileNotFoundError, match=f"{NAME_8M}.pt  \\(from {server.url}/models/{NAME_8M}.pt\\)"):
        load_esm2("8M", weights_dir=tmp_path / "w")
    model, _ = load_esm2("8M", weights_dir=tmp_path / "w", download=True)
    assert torch.equal(model.layers[1].fc2.weight, server.model.layers[1].fc2.weight)
    assert {r["path"] for r in server.requests} == {f"/models/{NAME_8M}.pt",
                                                    f"/regression/{NAME_8M}-contact-regression.pt"}


def test_broken_connection_is_resumed_with_a_range_request(server, tmp_path):
    folder = tmp_path / "weights"
    size = len(_served(server, f"models/{NAME_8M}.pt"))
    server.cut_next(after=40_000, min_length=100_000)
    with pytest.raises(DownloadError, match=r"failed after 1 attempt\(s\): connection closed after 40000 of \d+ "
                                            r"bytes; the partial file .*\(40000 bytes\) is kept and the next call "
                                            r"resumes"):
        w.download_weights("8M", folder, base_url=server.url, retries=1)
    model_path, _ = checkpoint_paths("8M", folder)
    assert not model_path.exists()
    status = w.weights_status(folder)[0]
    assert (status.state, status.partial_bytes) == ("partial", 40_000)
    w.download_weights("8M", folder, base_url=server.url)
    last = server.requests[-1]
    assert (last["range"], last["status"], last["sent"]) == ("bytes=40000-", 206, size - 40_000)
    assert model_path.read_bytes() == _served(server, f"models/{NAME_8M}.pt")


def test_retries_resume_within_one_call(server, tmp_path):
    server.cut_next(after=50_000, min_length=100_000)
    w.download_weights("8M", tmp_path, base_url=server.url, retries=2, timeout=10, retry_wait=0)
    ranges = [r["range"] for r in server.requests if r["path"].startswith("/models/")]
    assert ranges == [None, "bytes=50000-"]


def test_recorded_digest_mismatch_removes_the_download(server, tmp_path):
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  {NAME_8M}.pt\n")
    with pytest.raises(ChecksumError, match=f"checksum mismatch for {NAME_8M}.pt.part from .*expected sha256 0{{64}}"):
        w.download_weights("8M", tmp_path, base_url=server.url)
    assert not (tmp_path / f"{NAME_8M}.pt").exists() and not (tmp_path / f"{NAME_8M}.pt.part").exists()


def test_missing_file_is_a_404(server, tmp_path):
    with pytest.raises(DownloadError, match=r"esm2_t12_35M_UR50D-contact-regression\.pt failed: HTTP 404"):
        w.download_weights("8M,35M", tmp_path, base_url=server.url)
    assert (tmp_path / f"{NAME_8M}.pt").exists()  # the first model is kept
    assert sorted(p.name for p in tmp_path.glob("esm2_t12*")) == []


def test_offline_is_said_before_and_during_a_download(tmp_path, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    url = refused_url()
    assert w.check_online(url) == "cannot reach 127.0.0.1: connection refused"
    with pytest.raises(DownloadError, match="failed after 2 attempt.*connection refused; nothing was written"):
        w.download_weights("8M", tmp_path, base_url=url.rsplit("/", 1)[0], retries=2, retry_wait=0)
    assert not list(tmp_path.iterdir())
    assert "DNS lookup failed" in w.check_online("http://revdistill-test.invalid/", timeout=5)


def test_check_online_names_the_proxy(monkeypatch):
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    proxy = refused_url().rsplit("/", 1)[0]
    monkeypatch.setenv("http_proxy", proxy)
    assert w.check_online("http://dl.example.org/fair-esm/") == (
        f"cannot reach dl.example.org: connection refused (through the proxy {proxy})")


def test_reachable_server_is_online(server):
    assert w.check_online(server.url + "/") is None
    assert w.check_online(server.url + "/no/such/file") is None  # a 404 still means the server is there


@pytest.mark.parametrize("error, reason", [
    (urllib.error.URLError(socket.gaierror(-2, "Name or service not known")),
     "DNS lookup failed (Name or service not known)"),
    (urllib.error.URLError(ConnectionRefusedError(111, "refused")), "connection refused"),
    (urllib.error.URLError(socket.timeout("timed out")), "timed out"),
    (OSError("Tunnel connection failed: 407 Proxy Authentication Required"), "the proxy refused to connect"),
])
def test_network_errors_read_as_one_reason(error, reason):
    assert describe_network_error(error).startswith(reason)


def test_disk_full_is_said_before_writing(server, tmp_path, monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr("revdistill.io.download.shutil.disk_usage", lambda path: usage(10**9, 10**9 - 10, 10))
    with pytest.raises(DiskFullError, match=f"not enough disk space for .*{NAME_8M}-contact-regression.pt: "
                                            r"\d+ bytes still to download, 10 free in"):
        w.download_weights("8M", tmp_path, base_url=server.url)
    assert not list(tmp_path.glob("esm2*"))


def test_tiny_and_unknown_models_are_refused(tmp_path):
    with pytest.raises(ValueError, match="'tiny-32' is a random-init tiny model.*choose from 8M, 35M"):
        w.download_weights("tiny-32", tmp_path)
    with pytest.raises(ValueError, match="unknown model '9M'"):
        w.download_weights("8M,9M", tmp_path)
    with pytest.raises(ValueError, match="aliases is empty"):
        w.download_weights(" , ", tmp_path)
    with pytest.raises(ValueError, match=r"names \['8M'\] more than once"):
        w.download_weights("8M, esm2_t12_35M_UR50D,8M", tmp_path)
    assert not list(tmp_path.iterdir())
