"""``revdistill proteingym`` end to end with the tiny untrained models, and its error messages."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from revdistill.cli import main

PIN1 = "PIN1_HUMAN_Tsuboyama_2023_1I6C"
TINY = "tiny-32,tiny-48,tiny-64"
TIDY = ["assay", "scheme", "representation", "model", "dim", "spearman", "mse", "n_variants"]


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
    table = pd.read_csv(out)
    assert list(table.columns[: len(TIDY)]) == TIDY
    assert set(table["scheme"]) == {"fold_random_5", "fold_modulo_5", "fold_contiguous_5"}
    assert set(table["representation"]) == {"esm2", "rd", "naive", "nested"}
    assert set(table["n_variants"]) == {172} and len(table) == 3 * (9 + 7)
    assert table["spearman"].notna().all()
    printed = capsys.readouterr()
    assert "proteingym" in printed.out and "mean" in printed.out and "wrote 48 rows" in printed.err
    # Second run: same numbers from the stored embeddings.
    assert main(args + ["--schemes", "fold_random_5", "--representations", "esm2,rd"]) == 0
    again = pd.read_csv(out)
    expected = table[(table.scheme == "fold_random_5") & table.representation.isin(["esm2", "rd"])]
    pd.testing.assert_series_equal(again["spearman"], expected["spearman"].reset_index(drop=True))


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
