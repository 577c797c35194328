"""``revdistill fit``: fit a reverse-distillation ladder.

``revdistill fit STORE.h5 --out LADDER.npz [--regressor pcr]`` fits the
:class:`~revdistill.DistillationLadder` from the stored moments (no per-residue data needed).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``fit`` subcommand."""
    fit = subparsers.add_parser("fit", help="fit the reverse-distillation ladder from a store's moments",
                                description="Fit a DistillationLadder from the joint moments in STORE.")
    fit.add_argument("store", type=Path, help="HDF5 store written by `revdistill embed`")
    fit.add_argument("--out", required=True, type=Path, help="ladder file to write (.npz)")
    fit.add_argument("--regressor", default="pcr", choices=("pcr", "ridge", "ols"))
    fit.add_argument("--alpha", type=float, default=1.0, help="ridge penalty (--regressor ridge)")
    fit.set_defaults(func=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    """Run ``revdistill fit``; return the exit status."""
    from revdistill import DistillationLadder
    from revdistill.esm.store import EmbeddingStore

    if not args.store.is_file():
        raise FileNotFoundError(f"store {args.store} does not exist; create it with `revdistill embed`")
    moments = EmbeddingStore(args.store).moments()
    ladder = DistillationLadder(regressor=args.regressor, alpha=args.alpha).fit_moments(moments)
    path = ladder.save(args.out)
    print(f"{path}: ladder {' -> '.join(ladder.level_names_)} fitted on {moments.count} residues")
    for row in ladder.diagnostics():
        print(f"  {row['small']} -> {row['large']}: r2={row['r2']:.3f} "
              f"regression components={row['n_regression_components']} "
              f"residual variance kept={row['residual_explained_variance_ratio']:.3f}")
    return 0
