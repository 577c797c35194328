"""Tasks: what a probe predicts, built by the same functions for every front-end."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import PIN1, random_records
from revdistill.experiment.protocol import Protocol
from revdistill.experiment.tasks import assay_task, read_task, sequence_properties, sequence_task
from revdistill.proteingym import read_assay


def test_assay_task_keeps_the_assays_folds_and_scores(proteingym_dir):
    task = read_task(PIN1, Protocol(), data_dir=proteingym_dir)
    assay = read_assay(PIN1, data_dir=proteingym_dir)
    assert len(task) == assay.n_variants == 686 and task.is_mutant_set
    np.testing.assert_array_equal(task.scores, assay.variants["DMS_score"])
    for scheme in ("fold_random_5", "fold_modulo_5", "fold_contiguous_5"):
        np.testing.assert_array_equal(task.folds[scheme], assay.folds(scheme))
    assert task.records[0] == (f"{PIN1}:{assay.variants['mutant'].iloc[0]}", assay.variants["mutated_sequence"].iloc[0])
    assert task.uniprot_id == "PIN1_HUMAN" and task.selection_type == "Stability"
    assert (task.table["position"] == assay.variants["position"]).all()
    assert len(read_task(PIN1, Protocol(singles_only=False), data_dir=proteingym_dir)) == 802
    assert assay_task(assay).key == task.key


def test_sequence_task_predicts_a_labelled_property_with_balanced_random_folds():
    records = random_records(23, seed=4)
    task = sequence_task("set", records, "net_charge", Protocol())
    assert task.target.startswith("net_charge: ") and "not a measurement" in task.target
    assert set(task.folds) == {"fold_random_5"} and np.bincount(task.folds["fold_random_5"]).tolist() == [5, 5, 5, 4, 4]
    np.testing.assert_array_equal(task.scores, sequence_properties([s for _, s in records])["net_charge"])
    assert task.schemes(Protocol()) == ("fold_random_5",)
    assert sequence_task("set", records, "net_charge", Protocol()).key == task.key


def test_sequence_properties_never_invent_zeros():
    table = sequence_properties(["AAAA", "XXXX", "mkv".upper()])
    assert table["hydrophobicity"].iloc[0] == pytest.approx(1.8) and np.isnan(table["hydrophobicity"].iloc[1])
    with pytest.raises(ValueError, match="hydrophobicity is undefined for 1 record"):
        sequence_task("x", random_records(11, seed=5) + [("only_x", "XXXX")], "hydrophobicity")


def test_sequence_task_errors():
    with pytest.raises(ValueError, match="needs at least 10"):
        sequence_task("tiny", random_records(4))
    with pytest.raises(ValueError, match="target='fitness' is not a sequence property"):
        sequence_task("set", random_records(12), "fitness")
