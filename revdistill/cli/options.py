"""Argument groups shared by ``revdistill proteingym`` and ``revdistill fit``: the reference ladder
(corpus, convention, regressor, or a ladder file / the authors' scaler files) and embedding options."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from revdistill.esm.interfaces import Embedder
from revdistill.io.files import write_atomically

__all__ = ["add_ladder_arguments", "add_embedding_arguments", "embed_options", "reference_ladders", "corpus_of",
           "write_csv"]

FIT_ON_CHOICES = ("nested", "raw", "both")
REGRESSOR_HELP = ("how each ladder step predicts the larger model from the prefix: 'pcr' (default: principal-component "
                  "regression, the released method), 'ridge' (see --alpha) or 'ols'")


def add_ladder_arguments(parser: argparse.ArgumentParser) -> None:
    """``--corpus``, ``--fit-on``, ``--regressor``, ``--alpha``, ``--ladder``, ``--scalers``."""
    group = parser.add_argument_group("reference ladder")
    group.add_argument("--corpus", default="proteingym",
                       help="what the ladder is fitted on: 'proteingym' (default: the 187 distinct ProteinGym v1.3 "
                            "wild types, shipped), a FASTA file, or 'assays' (the assays' own variants: explicit "
                            "and labelled)")
    group.add_argument("--fit-on", default="nested", choices=FIT_ON_CHOICES,
                       help="fit convention: 'nested' (ours: each step fitted on the input it is applied to), "
                            "'raw' (the released method), or 'both' (compare them)")
    group.add_argument("--regressor", default="pcr", choices=("pcr", "ridge", "ols"), help=REGRESSOR_HELP)
    group.add_argument("--alpha", type=float, default=1.0, help="ridge penalty (--regressor ridge)")
    group.add_argument("--ladder", type=Path, default=None,
                       help="a ladder written by `revdistill fit` instead of a corpus fit")
    group.add_argument("--scalers", type=Path, default=None,
                       help="a folder of the authors' published scaler files (rd-scaler-*.npz)")


def add_embedding_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--dtype``, ``--long-sequences``, ``--weights-dir``, ``--progress``."""
    group = parser.add_argument_group("embedding")
    group.add_argument("--device", default="cpu", help="torch device for embedding (cpu, cuda, cuda:1, mps)")
    group.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"), help="embedding precision")
    group.add_argument("--long-sequences", default="window", choices=("window", "truncate", "error"),
                       help="sequences over 1022 residues: overlapping windows (default), truncate, or error")
    group.add_argument("--weights-dir", type=Path, default=None,
                       help="folder with ESM-2 checkpoints (default: $REVDISTILL_WEIGHTS, else the torch-hub cache)")
    group.add_argument("--progress", action="store_true", help="show progress")


def embed_options(args: argparse.Namespace):
    """:class:`~revdistill.esm.runner.EmbedOptions` from the embedding arguments."""
    from revdistill.cli.common import check_device
    from revdistill.esm.runner import EmbedOptions

    return EmbedOptions(device=check_device(args.device), dtype=args.dtype, long_sequences=args.long_sequences,
                        weights_dir=args.weights_dir, progress=args.progress)


def corpus_of(text: str, tasks: Sequence[Any] = ()):
    """The :class:`~revdistill.experiment.ladders.Corpus` named by ``--corpus``."""
    from revdistill.experiment.ladders import Corpus

    if text == "proteingym":
        return Corpus.proteingym_wildtypes()
    elif text == "assays":
        if not tasks:
            raise ValueError("--corpus assays fits on the assays' own variants; give assays")
        records = [record for task in tasks for record in task.records]
        names = ", ".join(task.name for task in tasks[:3]) + (" ..." if len(tasks) > 3 else "")
        corpus = Corpus.from_records(f"assays:{names}", records)
        return Corpus(name=corpus.name, records=corpus.records,
                      description=f"the assays' own variants ({names}; {corpus.n_sequences} sequences) — "
                                  f"an explicit choice, not the reference corpus")
    path = Path(text)
    if not path.exists() or path.is_dir():  # a FIFO or process substitution is read like a file
        raise FileNotFoundError(f"--corpus {text!r}: not 'proteingym', 'assays' or an existing FASTA file")
    return Corpus.from_fasta(path)


def reference_ladders(args: argparse.Namespace, models: tuple[str, ...], embedder: Embedder, tasks: Sequence[Any] = ()):
    """The reference ladders the arguments ask for (one per convention; ``--fit-on both`` gives two)."""
    from revdistill.experiment.ladders import authors_ladder, ladder_from_file, reference_ladder

    if args.ladder is not None and args.scalers is not None:
        raise ValueError("give --ladder or --scalers, not both")
    if args.ladder is not None or args.scalers is not None:
        if args.fit_on == "both" or args.corpus != "proteingym":
            raise ValueError("--fit-on both / --corpus describe a fit; a --ladder or --scalers is already fitted")
        ladder = ladder_from_file(args.ladder) if args.ladder is not None else authors_ladder(
            args.scalers, models, embedder=embedder)
        if ladder.models != models:
            raise ValueError(f"the ladder has levels {list(ladder.models)}; --models gives {list(models)}")
        return [ladder]
    corpus = corpus_of(args.corpus, tasks)
    conventions = ("nested", "raw") if args.fit_on == "both" else (args.fit_on,)
    return [reference_ladder(models, corpus, fit_on=fit_on, regressor=args.regressor, alpha=args.alpha,
                             embedder=embedder) for fit_on in conventions]


def write_csv(table: Any, path: Path) -> Path:
    """Write a results table all at once or not at all (:func:`revdistill.io.files.write_atomically`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda temporary: table.to_csv(temporary, index=False))
