"""``revdistill embed``.

``revdistill embed FASTA --models 8M,35M,150M --out STORE.h5 [--per-residue [IDS]] [--device cuda]
[--dtype bf16]`` embeds every record not yet in the store (rerun the same command to resume).
Under ``torchrun --nproc-per-node N -m revdistill embed ...`` the records are sharded across ranks
(backend ``nccl`` for CUDA, ``gloo`` otherwise; each rank uses ``cuda:LOCAL_RANK``).
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    """Add the ``embed`` subcommand."""
    embed = subparsers.add_parser(
        "embed", help="embed a FASTA file with several ESM-2 models into a resumable HDF5 store",
        description="Embed every record of FASTA not yet in STORE with all models at once (same tokens), "
                    "storing mean-pooled vectors and the joint per-residue moments for `revdistill fit`. "
                    "Rerun the same command to resume after an interruption.")
    embed.add_argument("fasta", type=Path, help="input FASTA file")
    embed.add_argument("--models", default="8M",
                       help="comma-separated models, small to large: 8M,35M,150M,650M,3B,15B, fair-esm names, "
                            "or the untrained tiny family tiny-32,tiny-48,tiny-64 (default: 8M)")
    embed.add_argument("--out", required=True, type=Path, help="HDF5 store to create or extend")
    embed.add_argument("--per-residue", nargs="?", const="all", default=None, metavar="IDS",
                       help="also store per-residue values: for all records, or for a comma-separated id list")
    embed.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    embed.add_argument("--dtype", default=None, choices=("fp32", "bf16", "fp16"),
                       help="weights/activations dtype (default: bf16 on CUDA, fp32 on CPU)")
    embed.add_argument("--storage-dtype", default="float32", choices=("float32", "float16"),
                       help="on-disk dtype of stored vectors (default: float32)")
    embed.add_argument("--token-budget", type=int, default=None,
                       help="max padded tokens per batch (default: 16384 on CUDA, 4096 on CPU)")
    embed.add_argument("--long-sequences", default="window", choices=("window", "truncate", "error"),
                       help="records over 1022 residues: overlapping windows merged (default), truncate, or error")
    embed.add_argument("--weights-dir", type=Path, default=None,
                       help="folder with esm2_*.pt checkpoints (default: $REVDISTILL_WEIGHTS, else the torch-hub "
                            "cache)")
    embed.add_argument("--download", action="store_true",
                       help="download missing checkpoints into that folder first, as `revdistill weights download` "
                            "does (from $REVDISTILL_WEIGHTS_URL, else fair-esm's public URLs; resumable)")
    embed.add_argument("--flush-every", type=int, default=1024,
                       help="records per atomic part file, the most a crash can lose (default: 1024)")
    embed.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    embed.set_defaults(func=run_embed)


def _per_residue(text: str | None, records: list[tuple[str, str]], fasta: Path) -> bool | list[str]:
    """``--per-residue``: False, True (all records) or ids that must all be in the FASTA file."""
    from revdistill.cli.common import split_list

    if text is None:
        return False
    if text == "all":
        return True
    wanted = split_list(text, "--per-residue")
    known = {record_id for record_id, _ in records}
    unknown = [record_id for record_id in wanted if record_id not in known]
    if unknown:
        raise ValueError(f"--per-residue names {len(unknown)} id(s) that are not in {fasta}: {unknown[:5]}; ids are "
                         f"the first word of each '>' header, e.g. {records[0][0]!r}")
    return wanted


def _plan(args: argparse.Namespace, records, aliases, options, per_residue, store) -> list:
    """What needs embedding; refuses, before any work, what cannot be done (other models, read-only store)."""
    from revdistill.cli.common import check_output
    from revdistill.esm.models.registry import get_spec

    missing = store.missing(records, aliases, [get_spec(alias).dim for alias in aliases], options.storage_dtype,
                            numerics=options.numerics())
    if per_residue is not False and store.path.exists():
        wanted = [record_id for record_id, _ in records] if per_residue is True else per_residue
        stored, kept = set(store.ids()), set(store.per_residue_ids())
        lacking = [record_id for record_id in wanted if record_id in stored and record_id not in kept]
        if lacking:
            raise ValueError(f"--per-residue: {len(lacking)} record(s) are already in {store.path} without per-residue "
                             f"values ({lacking[:5]}); they are kept only when a record is first embedded. Use "
                             f"another --out store for them")
    if missing or store.exists() and not store.path.exists():
        check_output(args.out, inputs=[args.fasta], kind="store", writable=True)
    if missing and store.path.exists():
        store.verify()  # the merge after embedding reads it all: find damage before the work, not after
    return missing


def run_embed(args: argparse.Namespace) -> int:
    """Run ``revdistill embed``; return the exit status. Everything is checked before any embedding starts."""
    from revdistill.cli.common import check_device, check_output
    from revdistill.esm.distributed import join_process_group, leave_process_group, rank_world
    from revdistill.esm.models.registry import parse_models
    from revdistill.esm.runner import EmbedOptions, LocalEmbedder, default_dtype
    from revdistill.esm.sequences import read_fasta
    from revdistill.esm.store import EmbeddingStore

    aliases = parse_models(args.models, "--models")
    device = check_device(args.device)
    check_output(args.out, inputs=[args.fasta], kind="store", suffixes=(".h5", ".hdf5"), writable=False)
    records = read_fasta(args.fasta)
    per_residue = _per_residue(args.per_residue, records, args.fasta)
    options = EmbedOptions(device=device, dtype=args.dtype or default_dtype(device),
                           token_budget=args.token_budget, long_sequences=args.long_sequences,
                           weights_dir=args.weights_dir, download=args.download, storage_dtype=args.storage_dtype,
                           flush_every=args.flush_every, progress=not args.no_progress)
    store = EmbeddingStore(args.out)
    missing = _plan(args, records, aliases, options, per_residue, store)
    logger.info("%d of %d record(s) to embed into %s", len(missing), len(records), args.out)
    device, initialised = join_process_group(device)
    try:
        rank, _ = rank_world()
        options = replace(options, device=device, progress=options.progress and rank == 0)
        added = LocalEmbedder(options).embed(store, records, aliases, per_residue=per_residue)
        if rank == 0:
            info = store.info()
            print(f"{args.out}: added {added} record(s); {info['n_records']} records, "
                  f"{info['n_residues']} residues, models {','.join(info['models'])}")
    finally:
        leave_process_group(initialised)
    return 0
