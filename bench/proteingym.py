"""ProteinGym probe: one assay x all representations x 3 CV schemes, timed, against a baseline probe.

Stages timed: reading the assay, the reference ladder (from the cache, or fitted once on the default
corpus), embedding (first run, then the second run that finds everything in the store), building the
features, and the probe. The probe is compared in the same run with the straightforward baseline: scikit-learn
``GridSearchCV(Ridge)`` over the same relative penalty grid, which refits every penalty in every inner
fold (ours: one eigendecomposition per inner fold serves all penalties). Both see the same outer folds
and standardized targets; the table shows both times, the ratio and both Spearman values.

    python bench/proteingym.py                                   # PIN1 (686 singles), tiny models, CPU
    python bench/proteingym.py --assay A0A1I9GEU1_NEIME_Kennouche_2019 --models 8M,35M,150M
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from revdistill.esm.runner import EmbedOptions, LocalEmbedder
from revdistill.esm.store import EmbeddingStore
from revdistill.experiment.features import build_features
from revdistill.experiment.ladders import reference_ladder
from revdistill.experiment.pipeline import pooled_rows
from revdistill.experiment.probe import DEFAULT_ALPHAS, blas_threads, cross_validate, spearman
from revdistill.experiment.protocol import Protocol
from revdistill.experiment.tasks import read_task
from revdistill.proteingym import SCHEMES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "proteingym"


def baseline_cv(features: np.ndarray, scores: np.ndarray, folds: np.ndarray) -> float:
    """Outer CV with sklearn GridSearchCV(Ridge) choosing the penalty on the training folds."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, KFold

    predictions = np.empty_like(scores)
    for label in np.unique(folds):
        train, test = folds != label, folds == label
        mean, std = scores[train].mean(), scores[train].std()
        centred = features[train] - features[train].mean(axis=0)
        scale = np.mean(np.linalg.svd(centred, compute_uv=False) ** 2)
        search = GridSearchCV(Ridge(), {"alpha": list(np.asarray(DEFAULT_ALPHAS) * scale)},
                              cv=KFold(5, shuffle=True, random_state=0), scoring="neg_mean_squared_error")
        search.fit(features[train], (scores[train] - mean) / std)
        predictions[test] = search.predict(features[test]) * std + mean
    return spearman(predictions, scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assay", default="PIN1_HUMAN_Tsuboyama_2023_1I6C")
    parser.add_argument("--models", default="tiny-32,tiny-48,tiny-64")
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument("--store", type=Path, default=None, help="default: a fresh temporary store")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    models = args.models.split(",")
    timings = []

    def timed(stage, function):
        start = time.perf_counter()
        value = function()
        timings.append((stage, time.perf_counter() - start))
        return value

    protocol = Protocol()
    embedder = LocalEmbedder(EmbedOptions(device=args.device))
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddingStore(args.store or Path(tmp) / "store.h5")
        task = timed("read assay + folds", lambda: read_task(args.assay, protocol, data_dir=args.data_dir))
        reference = timed("reference ladder (cache or corpus fit)", lambda: reference_ladder(models, embedder=embedder))
        new = timed("embed (first run)", lambda: embedder.embed(store, task.records, models))
        again = timed("embed (second run, store hit)", lambda: embedder.embed(store, task.records, models))
        pooled = pooled_rows(store, models, [record_id for record_id, _ in task.records])
        features = timed("build features", lambda: build_features(
            pooled, reference.ladder, reference.naive, protocol.prefix_dims(reference.ladder.dims_),
            protocol.representations))
    print(f"{task.name}: {len(task)} singles, folds {task.fold_source}; embedded {new} new, then {again}; "
          f"{reference.describe()}")
    print(pd.DataFrame(timings, columns=["stage", "seconds"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    scores = task.scores
    unique = {}
    for key, array in features.items():
        unique.setdefault(id(array), (key, array))
    rows = []
    for key, array in unique.values():
        for scheme in SCHEMES:
            folds = task.folds[scheme]
            start = time.perf_counter()
            ours = cross_validate(array, scores, folds, threads=1).spearman
            ours_s = time.perf_counter() - start
            row = {"representation": key.representation, "model": key.model, "dim": key.dim, "scheme": scheme,
                   "ours_s": ours_s, "ours_spearman": ours}
            if not args.skip_baseline:
                start = time.perf_counter()
                with blas_threads(1):  # the same BLAS setting for both
                    row["baseline_spearman"] = baseline_cv(array.astype(np.float64), scores, folds)
                row["baseline_s"] = time.perf_counter() - start
                row["speedup"] = row["baseline_s"] / ours_s
            rows.append(row)
    table = pd.DataFrame(rows)
    print(f"\nprobe: {len(unique)} distinct feature matrices x {len(SCHEMES)} schemes ({len(features)} table rows)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    total = {"ours (s)": table["ours_s"].sum()}
    if not args.skip_baseline:
        total.update({"baseline (s)": table["baseline_s"].sum(),
                      "speedup": table["baseline_s"].sum() / table["ours_s"].sum(),
                      "max |Δ spearman|": (table["ours_spearman"] - table["baseline_spearman"]).abs().max()})
    print("\n" + "  ".join(f"{k}: {v:.3f}" for k, v in total.items()))


if __name__ == "__main__":
    main()
