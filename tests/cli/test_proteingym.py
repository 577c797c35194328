"""``revdistill proteingym`` end to end with the tiny untrained models, and its error messages."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from revdistill.cli import main
from revdistill.experiment.paired import read_summary

PIN1 = "PIN1_HUMAN_Tsuboyama_2023_1I6C"
TINY = "tiny-32,tiny-48,tiny-64"
TIDY = ["assay", "scheme", "fit_on", "representation", "model", "dim", "spearman", "mse", "n_variants"]


@pytest.fixture(autouse=True)
def cached_ladders(tiny_cache, monkeypatch):
    """Every command here finds the tiny reference ladders in the session's cache (fitted once)."""
    monkeypatch.setenv("REVDISTILL_CACHE", str(tiny_cache))


@pytest.fixture
def small_pin1(proteingym_dir, tmp_path):
    """A quarter of PIN1's singles (every position kept), under its own DMS id so the reference checks it."""
    frame = pd.read_csv(proteingym_dir / "assays" / f"{PIN1}.csv")
    singles = frame[~frame["mutant"].str.contains(":")]
    path = tmp_path / f"{PIN1}.csv"
    singles.iloc[::4].to_csv(path, index=False)
    return path


def test_cli_writes_the_tidy_table(small_pin1, proteingym_dir, tmp_path, capsys):
    out = tmp_path / "results" / "r.csv"
    args = ["proteingym", str(small_pin1), "--models", TINY, "--out", str(out), "--data-dir", str(proteingym_dir),
            "--store", str(tmp_path / "new" / "store.h5")]
    assert main(args) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns[: len(TIDY)]) == TIDY
    assert set(table["scheme"]) == {"fold_random_5", "fold_modulo_5", "fold_contiguous_5"}
    assert set(table["representation"]) == {"esm2", "rd", "naive", "nested", "truncated"}
    assert set(table["n_variants"]) == {172} and len(table) == 3 * (9 + 10 + 10)
    assert table["spearman"].notna().all() and len(set(table["ladder_id"]) - {""}) == 1
    printed = capsys.readouterr()
    assert "single assay" in printed.out and "wrote 87 rows" in printed.err
    assert "fitted on ProteinGym v1.3 wild types" in printed.err and "protocol p-" in printed.err
    paired = read_summary(out.with_name("r.summary.csv"))
    assert set(paired["comparison"]) == {"rd-esm2", "rd-naive", "prefix-truncated"}
    assert "paired differences of Spearman (single assay" in printed.out and "RD − naive" in printed.out
    # Second run (another protocol: another --out, its own results folder): same numbers from the stored embeddings.
    other = tmp_path / "results" / "r2.csv"
    assert main([str(other) if arg == str(out) else arg for arg in args] +
                ["--schemes", "fold_random_5", "--representations", "esm2,rd"]) == 0
    again = pd.read_csv(other)
    expected = table[(table.scheme == "fold_random_5") & table.representation.isin(["esm2", "rd"])]
    pd.testing.assert_series_equal(again["spearman"], expected["spearman"].reset_index(drop=True))
    assert set(again["protocol_id"]) != set(table["protocol_id"])  # another protocol, another id


@pytest.mark.parametrize("extra, message", [
    (["PIN1_HUMAN"], "unknown ProteinGym assay id 'PIN1_HUMAN'.*did you mean PIN1_HUMAN_Tsuboyama_2023_1I6C"),
    ([], "no assays"),
    (["--all", "--max-variants", "0"], "no assay has at most --max-variants=0"),
    (["--all", "--max-variants", "700"], "assay file .*.csv not found under"),
    (["--max-variants", "5", PIN1], "use it with --all"),
    (["--all", PIN1], "not both"),
])
def test_cli_errors_are_clear(proteingym_dir, tmp_path, capsys, extra, message):
    args = ["proteingym", *extra, "--models", TINY, "--out", str(tmp_path / "r.csv"), "--data-dir", str(proteingym_dir),
            "--store", str(tmp_path / "s.h5")]
    assert main(args) == 2
    assert re.search(message, capsys.readouterr().err)


def test_cli_needs_out(proteingym_dir, capsys):
    assert main(["proteingym", PIN1, "--data-dir", str(proteingym_dir)]) == 2
    assert "--out RESULTS.csv is required" in capsys.readouterr().err


def test_cli_list_shows_all_assays_offline(tmp_path, capsys):
    assert main(["proteingym", "--list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert PIN1 in out and out.count("\n") >= 217


def test_cli_fit_then_use_the_ladder_file(small_pin1, proteingym_dir, tmp_path, capsys):
    out = tmp_path / "ladder.npz"
    assert main(["fit", "--models", TINY, "--fit-on", "raw", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ladder rdl-" in printed and "naive baseline nvb-" in printed and (tmp_path / "ladder.naive.npz").is_file()
    ladder_id = re.search(r"ladder (rdl-\w+)", printed).group(1)
    results = tmp_path / "r.csv"
    assert main(["proteingym", str(small_pin1), "--models", TINY, "--ladder", str(out), "--out", str(results),
                 "--data-dir", str(proteingym_dir), "--store", str(tmp_path / "s.h5"),
                 "--schemes", "fold_random_5"]) == 0
    table = pd.read_csv(results, keep_default_na=False)
    assert set(table.loc[table.representation == "rd", "ladder_id"]) == {ladder_id}
    assert set(table.loc[table.representation == "rd", "fit_on"]) == {"raw"}


def test_cli_refuses_to_overwrite_its_input(small_pin1, proteingym_dir, tmp_path, capsys):
    before = small_pin1.read_bytes()
    assert main(["proteingym", str(small_pin1), "--models", TINY, "--out", str(small_pin1),
                 "--data-dir", str(proteingym_dir), "--store", str(tmp_path / "s.h5")]) == 2
    assert "is also an input" in capsys.readouterr().err and small_pin1.read_bytes() == before
