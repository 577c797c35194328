"""bench/gpu.py at tiny sizes on the CPU: it runs every stage it can and writes one JSON of the promised shape."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run_gpu_bench(repo_root, out_dir, *extra: str) -> dict:
    command = [sys.executable, str(repo_root / "bench" / "gpu.py"), "--device", "cpu", "--n-seqs", "6",
               "--out-dir", str(out_dir), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, cwd=repo_root)
    assert done.returncode == 0, done.stderr[-3000:]
    files = list(out_dir.glob("*.json"))
    assert len(files) == 1 and files[0].name.startswith("cpu-")
    assert f"wrote {files[0]}" in done.stdout
    return json.loads(files[0].read_text())


def test_gpu_bench_runs_every_cpu_stage_and_writes_the_json(repo_root, tmp_path):
    data = run_gpu_bench(repo_root, tmp_path, "--models", "tiny-32,tiny-64", "--attention", "packed",
                         "--stock-methods", "authors,extract,bf16", "--fit-residues", "5000", "--fit-dims", "32,64")
    assert data["schema"] == "revdistill-bench-gpu/1" and data["device"]["type"] == "cpu"
    sequences = data["sequences"]
    assert sequences["n"] == 6 and 30 <= sequences["min_length"] <= sequences["max_length"] <= 1022
    assert data["errors"] == [] and data["skipped"] == ["oom fallback: needs a CUDA device"]
    assert data["complete"] is False          # the CUDA-only stage is missing, and the JSON says so
    methods = {(row["model"], row["method"]) for row in data["rows"]}
    assert methods == {(m, w) for m in ("tiny-32", "tiny-64") for w in ("authors", "extract", "bf16", "ours",
                                                                        "ours_padded")}
    for row in data["rows"]:
        assert row["residues"] == data["sequences"]["residues"] and not row["partial"]
        assert row["seconds"] > 0 and row["residues_per_s"] == pytest.approx(row["residues"] / row["seconds"], rel=1e-3)
        assert row["tflops"] > 0 and row["share_of_peak"] is None      # no peak table entry for a CPU
    ours = [row for row in data["rows"] if row["method"] == "ours"]
    assert all(set(row["speedup_vs"]) == {"authors", "extract", "bf16", "ours_padded"} for row in ours)
    assert all(row["attention"] == "packed" and row["kernel"] == "padded" for row in ours)
    for entry in data["agreement"]:
        assert entry["ours"]["cosine_min"] >= 0.99999 and entry["ours"]["pooled_rel_error_max"] <= 1e-5
        assert entry["ours_fp32_packed"]["max_rel_error"] <= 1e-5
        assert 0.99 <= entry["stock_bf16"]["cosine_mean"] < 1.0     # fair-esm's bf16 way really rounds
    ladder = data["ladder"]
    assert ladder["models"] == ["tiny-32", "tiny-64"] and ladder["moments_features"] == 96
    assert ladder["ratio_vs_largest"] == pytest.approx(ladder["seconds"] / ladder["largest_alone_seconds"], rel=1e-3)
    assert data["fit"]["dims"] == [32, 64] and data["fit"]["seconds"] >= data["fit"]["moments_seconds"] > 0


def test_gpu_bench_time_limit_still_writes_the_json(repo_root, tmp_path):
    data = run_gpu_bench(repo_root, tmp_path, "--models", "tiny-32", "--time-limit", "0")
    assert data["rows"] == [] and data["complete"] is False
    assert [entry.split(":")[0] for entry in data["skipped"]] == ["oom fallback", "fit", "size tiny-32"]


def test_gpu_bench_without_stock_builds_bf16_directly_and_checks_against_an_exact_upcast(repo_root, tmp_path):
    data = run_gpu_bench(repo_root, tmp_path, "--models", "tiny-48", "--skip-stock", "--dtype", "bf16",
                         "--skip-fit")
    assert [(row["method"], row["dtype"]) for row in data["rows"]] == [("ours", "bf16")]
    (entry,) = data["agreement"]
    assert entry["stock_bf16"] is None and entry["ours_fp32_packed"] is None
    assert 0.999 <= entry["ours"]["cosine_mean"] < 1.0 and entry["ours"]["pooled_rel_error_max"] < 0.05
