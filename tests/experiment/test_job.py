"""The job's parts, manifest and results folder (revdistill.experiment.job), and its plan (experiment.plan)."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest

from revdistill.esm.models.registry import get_spec
from revdistill.esm.runner import LocalEmbedder
from revdistill.esm.store import EmbeddingStore
from revdistill.experiment.job import (JobSpec, load_results, open_results, part_path, read_part, results_folder,
                                       run_job, write_part)
from revdistill.experiment.pipeline import run_experiment
from revdistill.experiment.plan import format_plan, plan_job
from revdistill.experiment.protocol import Protocol
from revdistill.experiment.tasks import sequence_task
from revdistill.proteingym import load_reference, list_assays
from revdistill.proteingym.data import packaged_reference_path

TINY = ("tiny-32", "tiny-48", "tiny-64")
FULL = ("8M", "35M", "150M", "650M", "3B", "15B")
PROTOCOL = Protocol(schemes=("fold_random_5",), representations=("esm2", "rd"), n_bootstrap=10)


def _task(name: str, n: int, seed: int):
    rng = np.random.default_rng(seed)
    records = [(f"p{i}", "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), rng.integers(8, 30)))) for i in range(n)]
    return sequence_task(name, records, protocol=PROTOCOL)


@pytest.fixture(scope="module")
def tasks():
    return {task.name: task for task in (_task("alpha", 24, 0), _task("beta", 30, 1), _task("gamma odd/name", 20, 2))}


def _spec(tasks, ladder, **changes) -> JobSpec:
    values = dict(protocol_id=PROTOCOL.id, models=TINY, numerics=(("dtype", "fp32"), ("long_sequences", "window")),
                  assays=tuple(tasks), ladders=(("nested", ladder.ladder_id, ladder.naive_id),))
    return JobSpec(**{**values, **changes})


@pytest.fixture(scope="module")
def finished(tasks, tiny_cache, tmp_path_factory, one_torch_thread):
    """A finished job of three small tasks, and the one in-memory result of the same tasks."""
    from revdistill.experiment.ladders import reference_ladder

    ladder = reference_ladder(TINY, cache=tiny_cache)
    folder = results_folder(tmp_path_factory.mktemp("job") / "out.csv")
    spec = _spec(tasks, ladder)
    open_results(folder, spec)
    store = EmbeddingStore(folder.parent / "store.h5")
    embedder = LocalEmbedder()
    computed = run_job(folder, spec, load_task=tasks.__getitem__, ladders=[ladder], protocol=PROTOCOL, store=store,
                       embedder=embedder, sizes={"alpha": 1, "beta": 3, "gamma odd/name": 2})
    whole = run_experiment(list(tasks.values()), TINY, [ladder], PROTOCOL, store=store, embedder=embedder)
    return folder, spec, computed, whole


def test_parts_round_trip_exactly_and_assemble_in_the_job_order(finished, tasks):
    folder, spec, computed, whole = finished
    assert computed == ["beta", "gamma odd/name", "alpha"]  # largest first
    assert part_path(folder, "gamma odd/name").name.startswith("gamma_odd_name-")
    table, variants = load_results(folder)
    pd.testing.assert_frame_equal(table, whole.table, check_exact=True)
    assert table.to_csv(index=False) == whole.table.to_csv(index=False)
    assert list(variants) == list(tasks)
    for result in whole.tasks:
        scores, predictions = variants[result.task.name]
        assert scores.dtype == np.float64 and np.array_equal(scores, result.task.scores)
        assert list(predictions) == list(result.predictions)
        for key, values in result.predictions.items():
            assert predictions[key].dtype == np.float64 and np.array_equal(predictions[key], values)


def test_a_part_of_another_job_and_an_unfinished_job_are_named(finished, tasks, tmp_path):
    folder, spec, _, whole = finished
    with pytest.raises(ValueError, match=r"beta.npz is a part of job 'job-\w+', not of 'job-other'"):
        read_part(part_path(folder, "beta"), "job-other")
    other = results_folder(tmp_path / "other.csv")
    open_results(other, spec)
    write_part(other, spec.job_id, whole.tasks[0])
    with pytest.raises(ValueError, match=r"not finished: 2 of 3 assay\(s\) have no results yet \(beta, gamma "
                                         r"odd/name\); rerun the same command"):
        load_results(other)
    with pytest.raises(ValueError, match="is not a results folder .*no manifest.json"):
        load_results(tmp_path)


def test_the_manifest_refuses_another_job_and_is_left_unchanged(finished, tasks):
    folder, spec, _, _ = finished
    manifest = folder / "manifest.json"
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert json.loads(manifest.read_text())["job_id"] == spec.job_id
    open_results(folder, spec)  # the same job: fine
    changed = _spec(tasks, _Ladder(), ladders=(("nested", "rdl-000000000000", "nvb-000000000000"),))
    open_results(folder, changed, ladders_known=False)  # before the ladders are known only the rest is compared
    with pytest.raises(ValueError, match=r"reference ladders: .*rdl-000000000000.* now\. Rerun with the settings"):
        open_results(folder, changed)
    with pytest.raises(ValueError, match=r"models: \[\"tiny-32\", \"tiny-48\", \"tiny-64\"\] there, \[\"tiny-32\", "
                                         r"\"tiny-64\"\] now"):
        open_results(folder, _spec(tasks, _Ladder(), models=("tiny-32", "tiny-64")), ladders_known=False)
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() == digest


class _Ladder:
    ladder_id, naive_id = "rdl-000000000000", "nvb-000000000000"


def test_a_spec_needs_distinct_assays():
    with pytest.raises(ValueError, match=r"assays \['a'\] are given more than once"):
        JobSpec(protocol_id="p", models=TINY, numerics=(), assays=("a", "b", "a"))


# ------------------------------------------------------------------------------------------ plan
def test_plan_totals_equal_the_reference_file(tmp_path):
    reference = pd.read_csv(packaged_reference_path())
    plan = plan_job(list_assays(load_reference()), FULL, device="cuda", bench_dir=None, cache=tmp_path)
    singles = reference["DMS_number_single_mutants"].astype(int)
    lengths = reference["target_seq"].str.len()
    assert plan.n_assays == 217 and plan.n_variants == int(singles.sum()) == 696_311
    assert plan.residues == int((singles * lengths).sum()) and round(plan.residues / 1e6) == 406
    step = 1022 - 256
    windows = lengths.map(lambda n: n if n <= 1022 else math.ceil((n - 256) / step) * 1022)
    assert plan.embedded == int((singles * windows).sum()) and plan.n_long == int((lengths > 1022).sum()) == 16
    dims = sum(get_spec(model).dim for model in FULL)
    assert sum(size.store_bytes for size in plan.sizes) == plan.n_variants * dims * 4
    assert [size.source for size in plan.sizes] == ["FLOPs"] * 6
    text = format_plan(plan)
    assert "217 assays, 696,311 variants, 405.9 M residues per model" in text and len(text.splitlines()) <= 12
    assert "FLOP estimate at an assumed 400 TFLOP/s" in text and text.splitlines()[-1].split()[1] == str(dims)


def test_plan_hours_come_from_bench_results_then_calibration(tmp_path, proteingym_dir):
    assay = str(proteingym_dir / "assays" / "PIN1_HUMAN_Tsuboyama_2023_1I6C.csv")
    by_id = plan_job(["PIN1_HUMAN_Tsuboyama_2023_1I6C"], ("8M", "35M"), bench_dir=None, cache=tmp_path)
    from_csv = plan_job([assay], ("8M", "35M"), bench_dir=None, cache=tmp_path)
    assert (from_csv.n_variants, from_csv.residues) == (by_id.n_variants, by_id.residues)
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    (calibration / "speed-x.json").write_text(json.dumps({"residues_per_s": 1000.0, "models": ["8M", "35M"],
                                                          "device": "cuda:0", "length": 512, "threads": 0}))
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "nvidia-h100-20260101-000000.json").write_text(json.dumps(
        {"device": {"type": "cuda"}, "rows": [{"model": "35M", "method": "ours", "residues_per_s": 500.0}]}))
    plan = plan_job([assay], ("8M", "35M"), device="cuda", bench_dir=bench, cache=tmp_path)
    eight, thirty_five = plan.sizes
    assert thirty_five.source == "bench" and thirty_five.hours == pytest.approx(plan.embedded / 500.0 / 3600)
    share = eight.pflop / (eight.pflop + thirty_five.pflop)
    assert eight.source == "calibration" and eight.hours == pytest.approx(plan.embedded / 1000.0 / 3600 * share)
    assert "bench/results/nvidia-h100-20260101-000000.json" in format_plan(plan)
    assert plan_job([assay], ("8M", "35M"), device="cpu", bench_dir=bench, cache=tmp_path).sizes[1].source == "FLOPs"


def test_a_claimed_assay_is_left_to_its_rank_and_redone_by_the_next_run(finished, tasks, tiny_cache, tmp_path):
    folder, spec, _, whole = finished
    other = results_folder(tmp_path / "claims.csv")
    open_results(other, spec)
    for result in whole.tasks[1:]:  # beta and gamma are committed already
        write_part(other, spec.job_id, result)
    (other / ".claims" / "run-1").mkdir(parents=True)
    (other / ".claims" / "run-1" / "alpha.npz").write_text("rank 1 pid 1\n")  # a rank that died on alpha
    from revdistill.experiment.ladders import reference_ladder

    common = dict(load_task=tasks.__getitem__, ladders=[reference_ladder(TINY, cache=tiny_cache)],
                  protocol=PROTOCOL, store=EmbeddingStore(tmp_path / "store.h5"), embedder=LocalEmbedder())
    assert run_job(other, spec, run_id="run-1", **common) == []  # claimed in this run by another rank
    assert run_job(other, spec, run_id="run-2", **common) == ["alpha"]  # the next run does it again
    assert load_results(other)[0].to_csv(index=False) == whole.table.to_csv(index=False)
