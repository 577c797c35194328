"""One experiment: a function of (data, models, ladder, protocol) only — whatever else sits in the store,
whichever front-end runs it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import KENNOUCHE, PIN1, TINY
from revdistill.esm.runner import LocalEmbedder
from revdistill.esm.store import EmbeddingStore
from revdistill.experiment.pipeline import RESULT_COLUMNS, run_experiment
from revdistill.experiment.protocol import Protocol
from revdistill.experiment.tasks import read_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = Protocol(n_between=1, n_below=1, n_bootstrap=200)


@pytest.fixture(scope="module")
def tasks(proteingym_dir):
    return {name: read_task(proteingym_dir / "assays" / f"{name}.csv", FAST, data_dir=proteingym_dir)
            for name in (PIN1, KENNOUCHE)}


def _run(tasks, store, ladders, protocol=FAST):
    return run_experiment(tasks, TINY, ladders, protocol, store=store, embedder=LocalEmbedder())


def _csv(table: pd.DataFrame) -> bytes:
    return table.to_csv(index=False).encode()


def test_an_assays_table_does_not_depend_on_what_else_is_in_the_store(tasks, tiny_ladders, tmp_path):
    ladders = [tiny_ladders["nested"]]
    alone = _run([tasks[PIN1]], EmbeddingStore(tmp_path / "alone.h5"), ladders).table
    shared = EmbeddingStore(tmp_path / "shared.h5")
    _run([tasks[KENNOUCHE]], shared, ladders)                  # another assay embedded first
    after = _run([tasks[PIN1]], shared, ladders).table
    together = _run([tasks[KENNOUCHE], tasks[PIN1]], EmbeddingStore(tmp_path / "both.h5"), ladders).table
    assert _csv(after) == _csv(alone)
    assert _csv(together[together["assay"] == PIN1].reset_index(drop=True)) == _csv(alone)


def test_rows_carry_ids_and_cover_every_representation(tasks, tiny_ladders, tmp_path):
    result = _run([tasks[PIN1]], EmbeddingStore(tmp_path / "s.h5"), [tiny_ladders["nested"], tiny_ladders["raw"]])
    table = result.table
    assert list(table.columns) == list(RESULT_COLUMNS)
    assert set(table["protocol_id"]) == {FAST.id}
    ladder_rows = table[table["representation"].isin(["rd", "naive", "nested"])]
    assert set(zip(ladder_rows["fit_on"], ladder_rows["ladder_id"], ladder_rows["naive_id"])) == {
        (fit_on, tiny_ladders[fit_on].ladder_id, tiny_ladders[fit_on].naive_id) for fit_on in ("nested", "raw")}
    free = table[table["representation"].isin(["esm2", "truncated"])]
    assert set(free["fit_on"]) == {""} and set(free["ladder_id"]) == {""}  # not from a ladder; computed once
    dims = FAST.prefix_dims((32, 48, 64))
    per_scheme = 3 + 2 * (3 + 3 + len(dims)) + len(dims)
    assert len(table) == 3 * per_scheme and table["spearman"].notna().all() and (table["note"] == "").all()
    # level 1 is ESM-2 itself under every representation and convention: one probe, one number
    first = (table[(table["dim"] == 32) & (table["representation"] != "truncated")]
             .groupby("scheme")["spearman"].nunique())
    assert (first == 1).all()
    # the two conventions agree on step 1 and differ after it
    rd = table[table["representation"] == "rd"].pivot_table(index=["scheme", "dim"], columns="fit_on",
                                                             values="spearman")
    assert np.array_equal(rd.xs(48, level="dim")["nested"], rd.xs(48, level="dim")["raw"])
    assert not np.allclose(rd.xs(64, level="dim")["nested"], rd.xs(64, level="dim")["raw"])


def test_single_assay_summary_has_variant_intervals(tasks, tiny_ladders, tmp_path):
    result = _run([tasks[PIN1]], EmbeddingStore(tmp_path / "s.h5"), [tiny_ladders["nested"]])
    summary = result.summary()
    assert set(summary["interval"]) == {"bootstrap over variants"} and set(summary["scheme"]) == {"average"}
    row = summary[(summary["representation"] == "rd") & (summary["dim"] == 64)].iloc[0]
    table = result.table
    expected = table[(table.representation == "rd") & (table.dim == 64)]["spearman"].mean()
    assert row["value"] == pytest.approx(expected, abs=1e-12)
    assert row["ci_low"] < row["value"] < row["ci_high"] and row["ci_high"] - row["ci_low"] < 0.3
    caption = result.caption()
    assert FAST.id in caption and tiny_ladders["nested"].ladder_id in caption and "not comparable" in caption
    notes = caption.splitlines()[2]
    assert "ladder corpus (ProteinGym wild types) contains 1 of 1 test wild type" in notes
    assert "exact PCA (released: IncrementalPCA" in notes and "sequences > 1022: window (0 assay(s))" in notes
    assert "folds random: 1 generated; modulo: 1 generated" in notes and "fit on nested" in notes
    # paired answers on one assay: level 1 is ESM-2 itself (the same predictions), so RD − ESM-2 is exactly 0
    paired = result.paired().set_index(["comparison", "dim"])
    assert set(paired.index.get_level_values(0)) == {"rd-esm2", "rd-naive", "prefix-truncated"}
    assert tuple(paired.loc[("rd-esm2", 32), ["delta", "ci_low", "ci_high"]]) == (0.0, 0.0, 0.0)
    top = paired.loc[("rd-esm2", 64)]
    assert top["delta"] == pytest.approx(row["value"] - summary.set_index(["representation", "dim"]).loc[
        ("esm2", 64), "value"], abs=1e-12)
    assert top["ci_low"] <= top["delta"] <= top["ci_high"] and "variants" in top["interval"]


def test_several_assays_are_aggregated_the_proteingym_way(tasks, tiny_ladders, tmp_path):
    result = _run(list(tasks.values()), EmbeddingStore(tmp_path / "s.h5"), [tiny_ladders["nested"]])
    summary = result.summary()
    assert set(summary["aggregation"]) == {"proteingym", "mean"} and set(summary["n_assays"]) == {2}


def test_a_protein_set_runs_the_random_scheme_only_and_says_so(tiny_ladders, tmp_path):
    from conftest import random_records
    from revdistill.experiment.tasks import sequence_task

    task = sequence_task("set", random_records(40, low=30, high=90, seed=3), "hydrophobicity", FAST)
    result = _run([task], EmbeddingStore(tmp_path / "s.h5"), [tiny_ladders["nested"]])
    assert set(result.table["scheme"]) == {"fold_random_5"} and result.schemes == ("fold_random_5",)
    assert "(random)" in result.caption() and "hydrophobicity" in set(result.table["target"])


def test_inputs_are_checked_before_any_work(tasks, tiny_ladders, tmp_path):
    store = EmbeddingStore(tmp_path / "s.h5")
    with pytest.raises(ValueError, match="ladder .* has levels .*; the run uses models"):
        run_experiment([tasks[PIN1]], TINY[:2], [tiny_ladders["nested"]], FAST, store=store, embedder=LocalEmbedder())
    with pytest.raises(ValueError, match="ladders must differ in fit convention"):
        _run([tasks[PIN1]], store, [tiny_ladders["nested"], tiny_ladders["nested"]])
    with pytest.raises(ValueError, match="no tasks"):
        _run([], store, [tiny_ladders["nested"]])
    with pytest.raises(ValueError, match="given more than once"):
        _run([tasks[PIN1], tasks[PIN1]], store, [tiny_ladders["nested"]])
    assert not store.exists()  # nothing was embedded


def test_benchmark_assays_share_one_default_store_and_uploads_do_not(proteingym_dir, tmp_path):
    from revdistill.experiment.pipeline import default_store_path
    from revdistill.experiment.tasks import subsample_task

    numerics = {"dtype": "fp32", "long_sequences": "window"}
    by_id = read_task(PIN1, FAST, data_dir=proteingym_dir)
    by_csv = read_task(proteingym_dir / "assays" / f"{PIN1}.csv", FAST, data_dir=proteingym_dir)
    assert by_id.from_benchmark and not by_csv.from_benchmark
    shared = default_store_path(None, TINY, numerics, tmp_path)  # what the CLI uses for every run
    assert default_store_path(by_id, TINY, numerics, tmp_path) == shared
    assert default_store_path(subsample_task(by_id, 50), TINY, numerics, tmp_path) == shared
    assert default_store_path(by_csv, TINY, numerics, tmp_path) != shared
    assert default_store_path(by_id, TINY, {**numerics, "dtype": "bf16"}, tmp_path) != shared
