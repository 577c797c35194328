"""The command line with files that are not what they say (issue 16): one clear line naming the file, exit 2,
and nothing on disk changed. Pairs written by ``fit``, stores made another way, checkpoints and downloads."""
from __future__ import annotations

import errno
from functools import partial
import os

import pytest
import torch


from cli_errors import MODELS, assert_one_line_error, run_cli

from filecheck import unchanged
from http_servers import serve_checkpoint, serve_directory

NAME_8M = "esm2_t6_8M_UR50D"
pytestmark = pytest.mark.usefixtures("one_torch_thread")
#: These commands may log progress before they fail: only the ``revdistill …`` lines count.
assert_error = partial(assert_one_line_error, other_lines=True)


# ------------------------------------------------------------------------------------------ data loss
def test_fit_writes_the_pair_whole_or_not_at_all(work, capsys, monkeypatch):
    tmp, _, store = work
    out = tmp / "pair.npz"
    assert run_cli(capsys, "fit", store, "--out", out)[0] == 0
    replace = os.replace

    def failing(source, target):  # the sidecar cannot be put in place (permission, full disk ...)
        if str(target).endswith("pair.naive.npz") and str(source).endswith(".tmp"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))
        return replace(source, target)
    monkeypatch.setattr("revdistill.io.files.os.replace", failing)
    with unchanged(tmp):
        status, _, err = run_cli(capsys, "fit", store, "--out", out, "--regressor", "ols")
    assert_error(status, err, "fit", r"could not write .*pair\.naive\.npz \(Permission denied\); pair\.npz "
                                              r"and pair\.naive\.npz are written together, so nothing was changed")


def test_a_sidecar_from_another_fit_is_refused_by_the_cli(work, capsys):
    tmp, _, store = work
    assert run_cli(capsys, "fit", store, "--out", tmp / "a.npz")[0] == 0
    assert run_cli(capsys, "fit", store, "--out", tmp / "b.npz", "--regressor", "ols")[0] == 0
    os.replace(tmp / "b.naive.npz", tmp / "a.naive.npz")
    from revdistill.experiment.ladders import ladder_from_file

    with unchanged(tmp), pytest.raises(ValueError, match=r"a\.naive\.npz was written with another ladder than"):
        ladder_from_file(tmp / "a.npz")


# ------------------------------------------------------------------------------------------ store identity
@pytest.mark.parametrize("first, second, differs", [
    (["--dtype", "fp32"], ["--dtype", "bf16"], "dtype"),
    (["--long-sequences", "truncate"], ["--long-sequences", "window"], "long_sequences"),
])
def test_embed_into_a_store_made_another_way_is_refused(tmp_path, capsys, first, second, differs):
    fasta = tmp_path / "x.fasta"
    fasta.write_text(">a\nMKVLAAGIVG\n>b\nMKKLLV\n")
    store = tmp_path / "s.h5"
    assert run_cli(capsys, "embed", fasta, "--models", MODELS, "--out", store, *first)[0] == 0
    with unchanged(tmp_path):
        status, _, err = run_cli(capsys, "embed", fasta, "--models", MODELS, "--out", store, *second)
    assert_error(status, err, "embed", rf"store .*s\.h5 holds vectors made with .*\(differs: {differs}\)\. "
                                                r"Vectors made two ways cannot share a store: use another --store")


# ------------------------------------------------------------------------------------------ checkpoints
class _Harmless:
    def __reduce__(self):
        return (os.getpid, ())  # a global the weights-only loader must refuse (harmless if it ever ran)


@pytest.mark.parametrize("content, message", [
    (b"<!doctype html><html>Not found</html>", r"is not a PyTorch checkpoint: it is text starting with"),
    (b"\x00\x01 random bytes, not a checkpoint" * 10, r"is not a (readable )?PyTorch checkpoint"),
    ("pickle", r"holds Python objects other than tensors \(.*getpid.*\): such a pickle could run code when "
               r"loaded, so revdistill \(weights_only=True\) refuses it"),
    ("tiny", r"is not esm2_t6_8M_UR50D: encoder_layers=2 \(expected 6\), encoder_embed_dim=32 \(expected 320\)"),
])
def test_a_checkpoint_that_is_not_one_is_a_clear_error(tmp_path, capsys, content, message):
    weights = tmp_path / "weights"
    weights.mkdir()
    model = weights / f"{NAME_8M}.pt"
    if content == "pickle":
        torch.save({"model": _Harmless()}, model)
    elif content == "tiny":
        from revdistill.esm.models.loading import save_esm2_checkpoint, tiny_esm2

        save_esm2_checkpoint(tiny_esm2(2, 32, 4)[0], model)
    else:
        model.write_bytes(content)
    fasta = tmp_path / "x.fasta"
    fasta.write_text(">a\nMKVLAAGIVG\n")
    with unchanged(tmp_path):
        status, _, err = run_cli(capsys, "embed", fasta, "--models", "8M", "--weights-dir", weights,
                                 "--out", tmp_path / "s.h5")
    assert_error(status, err, "embed", rf"{NAME_8M}\.pt .*{message}")


def test_a_download_that_is_not_a_checkpoint_leaves_nothing_under_the_final_name(tmp_path, capsys):
    """A mirror answers an HTML page with status 200 and no digest is known: refused before the rename."""
    with serve_directory(tmp_path / "server") as server:
        serve_checkpoint(server, "8M", seed=5)
        server.add(f"models/{NAME_8M}.pt", b"<html><body>Mirror maintenance</body></html>\n")
        folder = tmp_path / "weights"
        status, _, err = run_cli(capsys, "weights", "download", "8M", "--weights-dir", folder, "--base-url",
                                 server.url)
    assert_error(status, err, "weights", rf"{NAME_8M}\.pt from .* is not what was asked for: .*is not a "
                                                  r"PyTorch checkpoint: it is text starting with b'<html>.*Nothing "
                                                  r"was saved under")
    assert not (folder / f"{NAME_8M}.pt").exists() and not list(folder.glob("*.part"))


# ------------------------------------------------------------------------------------------ zip bombs
def test_a_zip_bomb_given_to_ladder_is_one_clear_line(tmp_path, capsys, proteingym_dir):
    from test_hostile_files import write_bomb

    bomb = write_bomb(tmp_path / "bomb.npz", 64 << 20, entry="meta")
    with unchanged(tmp_path):
        status, _, err = run_cli(capsys, "proteingym", "PIN1_HUMAN_Tsuboyama_2023_1I6C", "--models", MODELS,
                                 "--ladder", bomb, "--out", tmp_path / "r.csv", "--data-dir", proteingym_dir,
                                 "--store", tmp_path / "s.h5")
    assert_error(status, err, "proteingym", r"bomb\.npz: entry 'meta' declares 64\.0 MiB that compress to "
                                                     r".*a zip bomb\?\); refusing to expand it")
