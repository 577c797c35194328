"""A seeded subsample of a task goes through the same pipeline, labelled as such."""
from __future__ import annotations

import numpy as np
import pytest

from revdistill.experiment.protocol import Protocol
from revdistill.experiment.tasks import SUBSAMPLE_NOTE, read_task, subsample_task
from synthetic_dms import write_dms_csv


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    csv = write_dms_csv(tmp_path_factory.mktemp("dms") / "PIN1_synthetic.csv", n_variants=741)
    return read_task(csv, Protocol())


def test_subsample_keeps_rows_scores_and_folds_of_the_chosen_records(task):
    small = subsample_task(task, 200, seed=3)
    assert len(small) == 200 and small.name == f"{task.name} [{SUBSAMPLE_NOTE}: 200 of 741 variants, seed 3]"
    assert small.notes[-1] == f"{SUBSAMPLE_NOTE}: 200 of 741 variants, seed 3"
    rows = [task.records.index(record) for record in small.records]
    assert rows == sorted(rows)
    assert np.array_equal(small.scores, task.scores[rows])
    for scheme in task.folds:
        assert np.array_equal(small.folds[scheme], task.folds[scheme][rows])
    assert small.table["id"].tolist() == [record_id for record_id, _ in small.records]
    assert small.uniprot_id == (task.uniprot_id or task.name) and small.fold_source == task.fold_source


def test_subsample_is_seeded_and_whole_tasks_pass_through(task):
    assert subsample_task(task, 200, seed=1).records == subsample_task(task, 200, seed=1).records
    assert subsample_task(task, 200, seed=1).records != subsample_task(task, 200, seed=2).records
    assert subsample_task(task, 741) is task and subsample_task(task, 5000) is task
    with pytest.raises(ValueError, match="n=3"):
        subsample_task(task, 3)
