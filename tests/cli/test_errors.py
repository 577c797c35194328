"""The command line's error contract: one line ``revdistill <command>: error: ...``, a non-zero status, no
traceback (unless ``--debug``), every argument checked before any work, no input or store file changed."""
from __future__ import annotations

import errno
import gzip
import os
import re
from importlib import resources
from pathlib import Path

import pytest
import torch

from revdistill import Moments
from revdistill.cli import main
from revdistill.cli.common import check_device, check_output, describe_error, split_list, write_atomically
from revdistill.esm.store import EmbeddingStore

from conftest import make_levels
from cli_errors import MODELS, assert_one_line_error, run_cli
from filecheck import unchanged

DEMO = Path(str(resources.files("revdistill") / "data" / "demo.fasta"))
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_case_files(tmp: Path) -> None:
    (tmp / "notes.h5").write_text("my notes, not a store\n")
    (tmp / "latin.fasta").write_bytes(">a\nMK\xe9V\n".encode("latin-1"))
    (tmp / "plain").write_text("x")
    (tmp / "dir.h5").mkdir()


def embed_cases(tmp: Path, fasta: Path, store: Path) -> dict[str, tuple[list, str]]:
    """Case name -> (arguments after ``embed``, the message expected)."""
    text_file, latin, plain = tmp / "notes.h5", tmp / "latin.fasta", tmp / "plain"
    out = ["--out", store]
    return {
        "missing FASTA": ([tmp / "missing.fasta", *out], r"missing.fasta does not exist"),
        "FASTA is a folder": ([tmp, *out], r"is a folder"),
        "FASTA not UTF-8": ([latin, *out], r"latin.fasta: line 2, byte 5 \(0xe9\) is not UTF-8 text"),
        "repeated model": ([fasta, "--models", "tiny-32,tiny-32", *out], r"--models='tiny-32,tiny-32' names "
                                                                          r"\['tiny-32'\] more than once"),
        "same model twice by two names": ([fasta, "--models", "8M,esm2_t6_8M_UR50D", *out], r"more than once"),
        "empty model item": ([fasta, "--models", "tiny-32,,tiny-48", *out], r"has an empty item"),
        "no models": ([fasta, "--models", "", *out], r"--models is empty"),
        "unknown model": ([fasta, "--models", "tiny-32,9M", *out], r"unknown model '9M'"),
        "per-residue unknown id": ([fasta, "--models", MODELS, *out, "--per-residue", "nope"],
                                   r"--per-residue names 1 id\(s\) that are not in .*in.fasta: \['nope'\]; ids are "
                                   r"the first word"),
        "per-residue repeated id": ([fasta, "--models", MODELS, *out, "--per-residue", "r5,r5"], r"more than once"),
        "per-residue for stored records": ([fasta, "--models", MODELS, *out, "--per-residue", "r1,r5"],
                                           r"--per-residue: 1 record\(s\) are already in .* without per-residue "
                                           r"values \(\['r1'\]\)"),
        "out is the input": ([fasta, "--models", MODELS, "--out", fasta], r"the file name must end in \.h5"),
        "out is the input (.h5 name)": ([store, "--models", MODELS, "--out", store], r"is also an input"),
        "out is a folder": ([fasta, "--models", MODELS, "--out", tmp / "dir.h5"], r"dir.h5 is a directory"),
        "out is another file": ([fasta, "--models", MODELS, "--out", text_file],
                                r"notes.h5 exists and is not a revdistill embedding store; refusing to extend it"),
        "out has another suffix": ([fasta, "--models", MODELS, "--out", tmp / "results.csv"],
                                   r"results.csv: the file name must end in \.h5 or \.hdf5"),
        "out folder is a file": ([fasta, "--models", MODELS, "--out", plain / "s.h5"], r"plain is not a folder"),
        "cuda without CUDA": ([fasta, "--models", MODELS, *out, "--device", "cuda"],
                              r"--device cuda: CUDA is not available here"),
        "unknown device": ([fasta, "--models", MODELS, *out, "--device", "tpu"],
                           r"--device 'tpu': allowed: cpu, cuda, cuda:<index>, mps"),
        "bad dtype": ([fasta, "--models", MODELS, *out, "--dtype", "int8"], r"argument --dtype: invalid choice"),
        "flush-every 0": ([fasta, "--models", MODELS, *out, "--flush-every", "0"],
                          r"flush_every=0 must be a positive integer"),
        "token budget 1": ([fasta, "--models", MODELS, *out, "--token-budget", "1"],
                           r"token_budget=1 must be an integer of at least 3"),
        "other models than the store": ([fasta, "--models", "tiny-32", *out],
                                        r"holds models \['tiny-32', 'tiny-48'\]; asked for \['tiny-32'\]"),
        "other storage dtype": ([fasta, "--models", MODELS, *out, "--storage-dtype", "float16"],
                                r"created with storage_dtype='float32'; asked for 'float16'"),
        "unknown option": ([fasta, "--models", MODELS, *out, "--bogus"], r"unrecognized arguments: --bogus"),
        "no weights for 650M": ([fasta, "--models", "650M", "--out", tmp / "new.h5", "--device", "cpu",
                                 "--weights-dir", tmp], r"esm2_t33_650M_UR50D.pt"),
    }


CASES = list(embed_cases(Path("/x"), Path("/x/in.fasta"), Path("/x/store.h5")))


@pytest.mark.parametrize("case", CASES)
def test_embed_refuses_bad_arguments_in_one_line_before_any_work(work, capsys, case):
    tmp, fasta, store = work
    make_case_files(tmp)
    argv, message = embed_cases(tmp, fasta, store)[case]
    with unchanged(tmp):
        status, out, err = run_cli(capsys, "embed", *argv, "--no-progress")
    assert_one_line_error(status, err, "embed", message)
    assert "added" not in out


def test_a_damaged_store_is_refused_before_embedding(work, capsys):
    tmp, fasta, store = work
    data = bytearray(store.read_bytes())
    vectors = EmbeddingStore(store).pooled("tiny-48")[1]
    data[data.find(vectors[1].tobytes()) + 3] ^= 0x08
    store.write_bytes(bytes(data))
    with unchanged(tmp):
        status, _, err = run_cli(capsys, "embed", fasta, "--models", MODELS, "--out", store, "--no-progress")
    assert_one_line_error(status, err, "embed", r"store .*store.h5 is damaged: pooled/tiny-48")


def test_gzip_fasta_and_resume_work(work, capsys):
    tmp, fasta, store = work
    packed = tmp / "in.fa.gz"
    packed.write_bytes(gzip.compress(fasta.read_bytes()))
    status, out, err = run_cli(capsys, "embed", packed, "--models", MODELS, "--out", store, "--device", "cpu",
                               "--per-residue", "r5", "--no-progress")
    assert status == 0, err
    assert "added 2 record(s); 6 records" in out
    assert EmbeddingStore(store).per_residue_ids() == ["r5"]


def test_debug_shows_the_traceback_and_global_flags_work_after_the_command(work, capsys):
    tmp, fasta, store = work
    with pytest.raises(ValueError, match="more than once"):
        main(["--debug", "embed", str(fasta), "--models", "tiny-32,tiny-32", "--out", str(store)])
    with pytest.raises(ValueError, match="more than once"):
        main(["embed", str(fasta), "--models", "tiny-32,tiny-32", "--out", str(store), "--debug"])
    assert main(["embed", "--help"]) == 0
    assert "--debug" in capsys.readouterr().out


@pytest.mark.parametrize("error, status, message", [
    (KeyboardInterrupt(), 130, r"^revdistill embed: interrupted \(finished work is kept\)$"),
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/store.h5"), 2,
     r"^revdistill embed: error: no space left on the device while writing /data/store.h5; free some space"),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/store.h5"), 2,
     r"^revdistill embed: error: permission denied: /data/store.h5"),
    (IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), "/data"), 2, r"error: /data is a directory"),
    (KeyError("no per-residue values stored for record 'x'"), 2,
     r"error: no per-residue values stored for record 'x'$"),
    (UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "invalid continuation byte"), 2, r"error: 'utf-8' codec can't decode"),
    (RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB"), 2, r"error: CUDA out of memory. Tried to allocate"),
    (MemoryError(), 2, r"error: not enough memory"),
    (TypeError("unsupported operand"), 1, r"^revdistill embed: internal error: TypeError: unsupported operand \(rerun "
                                          r"with --debug"),
])
def test_every_failure_is_one_line(work, capsys, monkeypatch, error, status, message):
    tmp, fasta, store = work

    def fail(args):
        raise error

    monkeypatch.setattr("revdistill.cli.embed.run_embed", fail)
    got, _, err = run_cli(capsys, "embed", fasta, "--out", store)
    assert got == status and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err.strip()), err


# ------------------------------------------------------------------------------------------ helpers
@pytest.mark.parametrize("text, allowed, message", [
    ("", None, r"--x is empty"),
    ("a,,b", None, r"--x='a,,b' has an empty item"),
    ("a,b,", None, r"has an empty item"),
    ("a,b,a", None, r"--x='a,b,a' names \['a'\] more than once"),
    ("a,zz", ("a", "b"), r"--x='a,zz': unknown \['zz'\]; choose from a,b"),
])
def test_split_list_refuses(text, allowed, message):
    with pytest.raises(ValueError, match=message):
        split_list(text, "--x", allowed)


def test_split_list_keeps_order_and_strips():
    assert split_list(" esm2, rd ", "--representations", ("esm2", "rd", "naive")) == ["esm2", "rd"]


def test_check_output_protects_inputs_and_other_files(tmp_path):
    source = tmp_path / "assay.csv"
    source.write_text("mutant,DMS_score\nA1G,0.5\n")
    results = tmp_path / "results.csv"
    results.write_text("assay,scheme,representation\n")
    (tmp_path / "hard.csv").hardlink_to(source)
    (tmp_path / "link.csv").symlink_to(source)
    ladder_file = tmp_path / "ladder.npz"
    moments = Moments.from_arrays(make_levels(50, dims=(3, 4)))
    moments.save(tmp_path / "moments.npz")
    with unchanged(tmp_path):
        assert check_output(results, inputs=[source], kind="csv", suffixes=(".csv",)) == results
        assert check_output(tmp_path / "new" / "r.csv", inputs=[source], kind="csv") == tmp_path / "new" / "r.csv"
        for path in (source, tmp_path / "hard.csv", tmp_path / "link.csv"):
            with pytest.raises(ValueError, match="is also an input"):
                check_output(path, inputs=[source, None], kind="csv")
        with pytest.raises(ValueError, match=r"exists and is not a results table written by revdistill "
                                             r"\(header 'assay,scheme,...'\); refusing to replace it"):
            check_output(source, inputs=[], kind="csv")
        with pytest.raises(ValueError, match="is a directory"):
            check_output(tmp_path, inputs=[], kind="csv")
        with pytest.raises(ValueError, match=r"must end in \.npz"):
            check_output(tmp_path / "ladder.txt", inputs=[], kind="ladder", suffixes=(".npz",))
        assert check_output(ladder_file, inputs=[], kind="ladder")  # does not exist yet
        with pytest.raises(ValueError, match="moments.npz exists and is not a ladder written by revdistill"):
            check_output(tmp_path / "moments.npz", inputs=[], kind="ladder")
        assert check_output(tmp_path / "moments.npz", inputs=[], kind="npz")
        with pytest.raises(ValueError, match=r"kind='pdf' is not an output kind"):
            check_output(results, inputs=[], kind="pdf")


def test_write_atomically_all_or_nothing(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    write_atomically(target, lambda temporary: temporary.write_text("new\n"))
    assert target.read_text() == "new\n"

    def half_then_full_disk(temporary):
        temporary.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match=r"no space left on the device holding .* while writing out.csv; nothing was "
                                      r"changed") as caught:
        write_atomically(target, half_then_full_disk)
    assert caught.value.errno == errno.ENOSPC
    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, lambda temporary: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert target.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    with pytest.raises(IsADirectoryError, match="is a directory"):
        write_atomically(tmp_path, lambda temporary: None)


def test_check_device():
    assert check_device(None) in ("cpu", "cuda") and check_device("cpu") == "cpu"
    for bad in ("tpu", "cuda:x", "CPU", "cuda:-1"):
        with pytest.raises(ValueError, match="allowed: cpu, cuda, cuda:<index>, mps"):
            check_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"--device cuda:1: CUDA is not available here"):
            check_device("cuda:1")
    else:
        with pytest.raises(ValueError, match="GPU\\(s\\) visible"):
            check_device(f"cuda:{torch.cuda.device_count()}")


def test_describe_error_tells_bugs_apart():
    assert describe_error(AttributeError("x")) is None and describe_error(ZeroDivisionError()) is None
    assert describe_error(ValueError("a\n  b")) == "a b"
    assert describe_error(FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "f.txt")) == \
        "no such file or directory: f.txt"
    assert describe_error(OSError(errno.ENOSPC, "store s.h5: no space, nothing changed", "s.h5")) == \
        "store s.h5: no space, nothing changed"
