"""``revdistill proteingym`` as a job: torchrun ranks, ``kill -9`` and rerun, refusal of other settings.

Every run embeds with one torch thread (``torchrun`` sets ``OMP_NUM_THREADS=1`` for its ranks; CPU
matmuls round differently with other thread counts), so the one-process table is the reference bytes.
"""
from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from revdistill.cli import main
from synthetic_dms import write_dms_csv

TINY = "tiny-32,tiny-48,tiny-64"
#: name -> (variants, seed): three small assays of PIN1 singles (synthetic scores), largest first.
ASSAYS = {"A": (30, 1), "B": (26, 2), "C": (22, 4)}


@pytest.fixture(scope="module")
def assays(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("assays")
    full = pd.read_csv(write_dms_csv(folder / "all_singles.csv", n_variants=741, seed=0))
    paths = []
    for name, (n, seed) in ASSAYS.items():
        paths.append(folder / f"{name}.csv")
        full.sample(n, random_state=seed).to_csv(paths[-1], index=False)
    return paths


def _args(assays, out: Path, store: Path, *extra: str) -> list[str]:
    return ["proteingym", *map(str, assays), "--models", TINY, "--out", str(out), "--store", str(store),
            "--representations", "esm2,rd,naive", "--n-bootstrap", "20", *extra]


def _env(cache: Path) -> dict[str, str]:
    return dict(os.environ, REVDISTILL_CACHE=str(cache), OMP_NUM_THREADS="1")


def _cli(args: list[str], cache: Path, *, ranks: int = 1, timeout: int = 240) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)] if ranks > 1 else []
    return subprocess.run([sys.executable, *launcher, "-m", "revdistill", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(cache))


@pytest.fixture(scope="module")
def one_process(assays, tiny_cache, tmp_path_factory, one_torch_thread) -> Path:
    """The reference: the three assays in this process (one torch thread, like a torchrun rank)."""
    folder = tmp_path_factory.mktemp("one")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REVDISTILL_CACHE", str(tiny_cache))
        assert main(_args(assays, folder / "one.csv", folder / "store.h5")) == 0
    return folder / "one.csv"


def _digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())
            if path.is_file()}


@pytest.mark.slow
def test_two_gloo_ranks_write_the_same_bytes(assays, one_process, tiny_cache, tmp_path):
    out = tmp_path / "two.csv"
    done = _cli(_args(assays, out, tmp_path / "store.h5"), tiny_cache, ranks=2)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == one_process.read_bytes()
    finished = re.findall(r"\[rank (\d)\] \d/3 assays · (\w+) done", done.stderr)
    assert sorted(name for _, name in finished) == ["A", "B", "C"]  # each assay computed once, by one rank
    assert done.stderr.count("wrote ") == 1  # by rank 0 only
    stores = {rank: tmp_path / ("store.h5" if rank == "0" else f"store.rank{rank}.h5") for rank, _ in finished}
    assert all(path.is_file() for path in stores.values())  # each rank wrote its own store
    assert not (tmp_path / "two.results" / ".claims").exists()


@pytest.mark.slow
def test_killed_run_resumes_without_recomputing_and_gives_the_same_bytes(assays, one_process, tiny_cache, tmp_path,
                                                                        monkeypatch, capsys):
    out, store = tmp_path / "r.csv", tmp_path / "store.h5"
    results = tmp_path / "r.results"
    process = subprocess.Popen([sys.executable, "-m", "revdistill", *_args(assays, out, store)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(tiny_cache))
    deadline = time.monotonic() + 180
    while not list(results.glob("*.npz")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    committed = sorted(path.name for path in results.glob("*.npz"))
    assert 1 <= len(committed) < 3 and not out.exists()
    before = {name: (os.stat(results / name).st_ino, os.stat(results / name).st_mtime_ns) for name in committed}

    monkeypatch.setenv("REVDISTILL_CACHE", str(tiny_cache))
    assert main(_args(assays, out, store)) == 0
    error = capsys.readouterr().err
    assert f"{len(committed)} of 3 assay(s) already committed, {3 - len(committed)} to run" in error
    recomputed = re.findall(r"\d/3 assays · (\w+) done", error)
    assert sorted(recomputed) == sorted(set("ABC") - {name[0] for name in committed})
    assert {name: (os.stat(results / name).st_ino, os.stat(results / name).st_mtime_ns) for name in committed} == before
    assert out.read_bytes() == one_process.read_bytes()


def test_other_settings_into_the_same_results_are_refused(assays, one_process, tiny_cache, monkeypatch, capsys):
    monkeypatch.setenv("REVDISTILL_CACHE", str(tiny_cache))
    folder = one_process.with_name("one.results")
    before, table = _digests(folder), one_process.read_bytes()
    store = one_process.with_name("store.h5")
    for extra, message in ((["--n-bootstrap", "21"], r"protocol: \"p-\w+\" there, \"p-\w+\" now"),
                           (["--dtype", "fp16"], "embedding numerics"),):
        assert main(_args(assays, one_process, store, *extra)) == 2
        error = capsys.readouterr().err
        assert re.search(rf"results folder .*one.results holds another job \(job-\w+\): {message}", error), error
        assert "Rerun with the settings it was started with" in error
    assert main([*_args(assays[:2], one_process, store)]) == 2
    assert re.search(r"holds another job .*: assays: \[\"A\", \"B\", \"C\"\] there, \[\"A\", \"B\"\] now",
                     capsys.readouterr().err)
    assert _digests(folder) == before and one_process.read_bytes() == table


def test_the_same_command_again_computes_nothing(assays, one_process, tiny_cache, monkeypatch, capsys):
    monkeypatch.setenv("REVDISTILL_CACHE", str(tiny_cache))
    folder = one_process.with_name("one.results")
    before, table = _digests(folder), one_process.read_bytes()
    assert main(_args(assays, one_process, one_process.with_name("store.h5"))) == 0
    error = capsys.readouterr().err
    assert "3 of 3 assay(s) already committed, 0 to run" in error and "assays ·" not in error
    assert _digests(folder) == before and one_process.read_bytes() == table


def test_plan_prints_the_whole_job_and_does_no_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REVDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert main(["proteingym", "--all", "--models", "8M,35M,150M,650M,3B,15B", "--plan", "--device", "cuda"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("plan: 217 assays, 696,311 variants, 405.9 M residues per model")
    assert len(lines) == 11 and [line.split()[0] for line in lines[4:]] == [*"8M 35M 150M 650M 3B 15B".split(), "total"]
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing cached
