"""``revdistill fit``: fit a reference ladder (and its naive baseline) and write them.

``revdistill fit --models 8M,35M,150M --out ladder.npz`` fits on the default corpus (ProteinGym's
187 wild types; ``--corpus FASTA`` for another, ``--fit-on raw`` for the released convention),
embedding the corpus once. ``revdistill fit STORE.h5 --out ladder.npz`` fits on the per-residue
moments of everything a store holds. Both write ``ladder.npz`` and ``ladder.naive.npz`` and print their
ids; ``revdistill proteingym --ladder ladder.npz`` uses them.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from revdistill.cli.options import REGRESSOR_HELP, add_embedding_arguments, corpus_of, embed_options


def register(subparsers) -> None:
    """Add the ``fit`` subcommand."""
    fit = subparsers.add_parser(
        "fit", help="fit a reference ladder (and naive baseline) on a corpus or a store's moments",
        description="Fit a DistillationLadder and the naive baseline on a declared corpus (embedded once) or on "
                    "the per-residue moments of an embedding store, and write both with their ids.")
    fit.add_argument("store", type=Path, nargs="?", default=None,
                     help="HDF5 store written by `revdistill embed` (omit to fit on --corpus)")
    fit.add_argument("--out", required=True, type=Path, help="ladder file to write (.npz); the naive baseline "
                                                              "goes beside it as <name>.naive.npz")
    fit.add_argument("--models", default=None, help="with --corpus: the ladder, small to large (e.g. 8M,35M,150M)")
    fit.add_argument("--corpus", default="proteingym", help="'proteingym' (default) or a FASTA file")
    fit.add_argument("--fit-on", default="nested", choices=("nested", "raw"), help="fit convention")
    fit.add_argument("--regressor", default="pcr", choices=("pcr", "ridge", "ols"), help=REGRESSOR_HELP)
    fit.add_argument("--alpha", type=float, default=1.0, help="ridge penalty (--regressor ridge)")
    add_embedding_arguments(fit)
    fit.set_defaults(func=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    """Run ``revdistill fit``; return the exit status."""
    from revdistill.cli.common import check_output

    from revdistill.experiment.ladders import ladder_from_file, naive_path_of, save_ladder_pair

    out = args.out if args.out.suffix == ".npz" else args.out.with_name(args.out.name + ".npz")
    naive_out = naive_path_of(out)
    check_output(out, inputs=[args.store], kind="ladder")
    check_output(naive_out, inputs=[args.store], kind="naive")
    if args.store is not None:
        ladder, naive, label = _fit_store(args)
    else:
        ladder, naive, label = _fit_corpus(args)
    save_ladder_pair(ladder, naive, out, naive_out)
    fitted = ladder_from_file(out)
    print(f"{out}: ladder {fitted.ladder_id}; {naive_out}: naive baseline {fitted.naive_id}")
    print(f"fitted on {label} ({ladder.fit_on} convention, {ladder.regressor})")
    for row in ladder.diagnostics():
        print(f"  {row['small']} -> {row['large']}: r2={row['r2']:.3f} "
              f"regression components={row['n_regression_components']} "
              f"residual variance kept={row['residual_explained_variance_ratio']:.3f} "
              f"max |corr| block vs prefix={row['max_abs_corr_prefix']:.2g}")
    return 0


def _fit_corpus(args: argparse.Namespace):
    from revdistill.esm.models.registry import parse_models
    from revdistill.esm.runner import LocalEmbedder
    from revdistill.experiment.ladders import reference_ladder

    if args.models is None:
        raise ValueError("--models is required when fitting on a corpus (e.g. --models 8M,35M,150M)")
    models = parse_models(args.models, "--models")
    corpus = corpus_of(args.corpus)
    fitted = reference_ladder(models, corpus, fit_on=args.fit_on, regressor=args.regressor, alpha=args.alpha,
                              embedder=LocalEmbedder(embed_options(args)),
                              progress=(lambda f, m: print(f"{f:4.0%} {m}", file=sys.stderr))
                              if args.progress else None)
    return fitted.ladder, fitted.naive, fitted.label


def _fit_store(args: argparse.Namespace):
    from revdistill import DistillationLadder, NaiveConcatPCA
    from revdistill.esm.store import EmbeddingStore

    if args.models is not None or args.corpus != "proteingym":
        raise ValueError("fitting on STORE uses its models and records; drop --models / --corpus")
    if not args.store.is_file():
        raise FileNotFoundError(f"store {args.store} does not exist; create it with `revdistill embed`")
    store = EmbeddingStore(args.store)
    hashes = sorted(set(store.sequence_hashes().values()))
    moments = store.moments()
    corpus = {"name": f"store:{args.store.name}", "digest": hashlib.sha256("\n".join(hashes).encode()).hexdigest(),
              "n_sequences": len(hashes), "n_residues": moments.count}
    provenance = {"corpus": corpus, "models": list(moments.names), "fit_on": args.fit_on}
    ladder = DistillationLadder(regressor=args.regressor, alpha=args.alpha, fit_on=args.fit_on)
    ladder.fit_moments(moments, provenance={**provenance, "estimator": "reverse-distillation ladder",
                                            "regressor": args.regressor})
    naive = NaiveConcatPCA(fit_on=args.fit_on).fit_moments(moments, provenance={**provenance,
                                                                                 "estimator": "naive concat+PCA"})
    return ladder, naive, f"every record of {args.store} ({len(hashes)} sequences, {moments.count} residues)"
