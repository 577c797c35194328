"""Reference ladders: a ladder is a model, fitted once on a declared corpus and named by an id.

A :class:`LadderSpec` declares everything a fit depends on — the models, the corpus (by the digest of
its distinct sequences), the regressor, the fit convention and the embedding numerics. Its
``ladder_id`` (and the naive baseline's ``naive_id``) is a digest of that declaration, so it is known
before fitting, stable across processes, and changes when any input changes. :func:`reference_ladder`
returns the fitted pair from the cache (``<cache>/ladders/<id>.npz``) or embeds the corpus once
(``<cache>/corpora/``) and fits it. Nothing here depends on what else sits in any store.

The default corpus is the distinct wild-type sequences of ProteinGym v1.3's reference file (187
sequences, 72,933 residues), shipped with the package. Any FASTA can be a corpus; the authors'
published scaler files are a third source (:func:`authors_ladder`).

>>> corpus = Corpus.from_records("toy", [("a", "MKVLA"), ("b", "MKVLA"), ("c", "GGSW")])
>>> corpus.n_sequences, corpus.digest == Corpus.from_records("other name", [("x", "GGSW"), ("y", "MKVLA")]).digest
(2, True)
"""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from revdistill.io.files import file_lock, read_npz_meta, save_npz_together
from revdistill.core.ladder import FORMAT_VERSION as LADDER_FORMAT, DistillationLadder, check_fit_on
from revdistill.core.naive import FORMAT_VERSION as NAIVE_FORMAT, NaiveConcatPCA
from revdistill.esm.interfaces import Embedder
from revdistill.io.paths import cache_dir

logger = logging.getLogger(__name__)

__all__ = ["Corpus", "LadderSpec", "ReferenceLadder", "reference_ladder", "ladder_from_file", "authors_ladder",
           "DEFAULT_CORPUS", "ID_VERSION"]

#: Bumped when what an id covers changes (old cached fits are then simply not found).
ID_VERSION = 1
DEFAULT_CORPUS = "proteingym-v1.3-wildtypes"
StageCallback = Callable[[float, str], None]


def _sequence_hash(sequence: str) -> str:
    return hashlib.sha256(sequence.encode("ascii")).hexdigest()


def _digest_id(prefix: str, payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Corpus:
    """The sequences a ladder is fitted on: distinct sequences, in a canonical order.

    Attributes
    ----------
    name : str
        What the corpus is (``"proteingym-v1.3-wildtypes"``, ``"fasta:uniref_sample.fa"`` ...).
    description : str
        One line for captions.
    records : tuple of (str, str)
        ``(id, sequence)`` with ids ``c-<16 hex of the sequence's SHA-256>``, sorted by id.
    """

    name: str
    description: str
    records: tuple[tuple[str, str], ...]

    @classmethod
    def from_records(cls, name: str, records: Sequence[tuple[str, str]], description: str = "") -> "Corpus":
        """Distinct sequences of ``records`` (ids are replaced by sequence digests: order and ids
        do not change the corpus)."""
        from revdistill.esm.sequences import validate_records  # noqa: PLC0415

        # each record checked on its own: ids may repeat in a corpus (only the sequences count)
        clean = [validate_records([record])[0] for record in records]
        if not clean:
            raise ValueError(f"corpus {name!r} is empty: give at least one sequence")
        distinct = {_sequence_hash(sequence): sequence for _, sequence in clean}
        canonical = tuple(sorted((f"c-{digest[:16]}", sequence) for digest, sequence in distinct.items()))
        return cls(name=str(name), description=description or str(name), records=canonical)

    @classmethod
    def from_fasta(cls, path: str | Path) -> "Corpus":
        """The distinct sequences of a FASTA file."""
        from revdistill.esm.sequences import read_fasta  # noqa: PLC0415

        path = Path(path)
        return cls.from_records(f"fasta:{path.name}", read_fasta(path), f"the sequences of {path.name}")

    @classmethod
    def proteingym_wildtypes(cls, reference: pd.DataFrame | None = None) -> "Corpus":
        """The distinct wild-type (target) sequences of ProteinGym v1.3's 217 substitution assays."""
        if reference is None:
            with resources.as_file(resources.files("revdistill") / "data" / "DMS_substitutions.csv") as path:
                reference = pd.read_csv(path, usecols=["DMS_id", "target_seq"])
        records = list(zip(reference["DMS_id"].astype(str), reference["target_seq"].astype(str)))
        corpus = cls.from_records(DEFAULT_CORPUS, records)
        return cls(name=DEFAULT_CORPUS, records=corpus.records,
                   description=f"ProteinGym v1.3 wild types ({corpus.n_sequences} sequences, "
                               f"{corpus.n_residues:,} residues)")

    @property
    def n_sequences(self) -> int:
        return len(self.records)

    @property
    def n_residues(self) -> int:
        return sum(len(sequence) for _, sequence in self.records)

    @property
    def digest(self) -> str:
        """SHA-256 over the sorted sequence digests (independent of names, ids and order)."""
        return hashlib.sha256("\n".join(record_id for record_id, _ in self.records).encode()).hexdigest()

    def summary(self) -> dict[str, Any]:
        """What identifies the corpus in a ladder's provenance."""
        return {"name": self.name, "digest": self.digest, "n_sequences": self.n_sequences,
                "n_residues": self.n_residues}


@dataclass(frozen=True)
class LadderSpec:
    """Everything a reference ladder's fit depends on; its ids are digests of this declaration.

    Attributes
    ----------
    models : tuple of str
        Model aliases, small to large.
    corpus : Corpus
    fit_on : {"nested", "raw"}
    regressor : {"pcr", "ridge", "ols"}
    alpha : float
        Ridge penalty (``regressor="ridge"``).
    numerics : tuple of (str, value)
        Embedding settings that change the numbers (:meth:`revdistill.esm.runner.EmbedOptions.numerics`).
    """

    models: tuple[str, ...]
    corpus: Corpus
    fit_on: str = "nested"
    regressor: str = "pcr"
    alpha: float = 1.0
    numerics: tuple[tuple[str, Any], ...] = (("dtype", "fp32"), ("long_sequences", "window"))

    def __post_init__(self) -> None:
        from revdistill.esm.models.registry import get_spec  # noqa: PLC0415

        check_fit_on(self.fit_on)
        if len(self.models) < 2:
            raise ValueError(f"a ladder needs at least 2 models, got {list(self.models)}")
        object.__setattr__(self, "models", tuple(get_spec(model).alias for model in self.models))

    def provenance(self, estimator: str) -> dict[str, Any]:
        """The JSON declaration behind :attr:`ladder_id` (``"ladder"``) or :attr:`naive_id` (``"naive"``)."""
        from revdistill.esm.models.registry import get_spec  # noqa: PLC0415

        models = [{"alias": alias, "name": get_spec(alias).name, "trained": get_spec(alias).trained}
                  for alias in self.models]
        common = {"id_version": ID_VERSION, "models": models, "corpus": self.corpus.summary(),
                  "fit_on": self.fit_on, "embedding": dict(self.numerics)}
        if estimator == "ladder":
            return {**common, "estimator": "reverse-distillation ladder", "format": LADDER_FORMAT,
                    "regressor": self.regressor, "alpha": float(self.alpha) if self.regressor == "ridge" else None}
        elif estimator == "naive":
            return {**common, "estimator": "naive concat+PCA", "format": NAIVE_FORMAT}
        else:
            raise ValueError(f"estimator={estimator!r}; choose 'ladder' or 'naive'")

    @property
    def ladder_id(self) -> str:
        """``rdl-`` and 12 hex digits."""
        return _digest_id("rdl", self.provenance("ladder"))

    @property
    def naive_id(self) -> str:
        """``nvb-`` and 12 hex digits."""
        return _digest_id("nvb", self.provenance("naive"))


@dataclass
class ReferenceLadder:
    """A fitted ladder and naive baseline, with their ids and what they were fitted on.

    Attributes
    ----------
    ladder : DistillationLadder
    naive : NaiveConcatPCA or None
        None when no baseline goes with the ladder (a ladder file without one).
    ladder_id, naive_id : str
    label : str
        What the pair was fitted on, for captions.
    """

    ladder: DistillationLadder
    naive: NaiveConcatPCA | None
    ladder_id: str
    naive_id: str
    label: str

    @property
    def fit_on(self) -> str:
        return self.ladder.fit_on

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.ladder.level_names_)

    def describe(self) -> str:
        """One line for captions."""
        naive = f", naive baseline {self.naive_id}" if self.naive is not None else ""
        return (f"ladder {self.ladder_id} ({self.ladder.regressor}, fit on {self.fit_on} inputs){naive}; "
                f"fitted on {self.label}")


def fit_path(fit_id: str, cache: str | Path | None = None) -> Path:
    """Where a cached fit lives: ``<cache>/ladders/<fit_id>.npz`` (a ladder's or a naive baseline's id)."""
    return cache_dir("ladders", cache) / f"{fit_id}.npz"


def reference_ladder(models: Sequence[str], corpus: Corpus | None = None, *, fit_on: str = "nested",
                     regressor: str = "pcr", alpha: float = 1.0, embedder: Embedder | None = None,
                     cache: str | Path | None = None, progress: StageCallback | None = None) -> ReferenceLadder:
    """The reference ladder and naive baseline of ``models`` fitted on ``corpus``: cached or fitted now.

    Parameters
    ----------
    models : sequence of str
        Small to large.
    corpus : Corpus, optional
        Default :meth:`Corpus.proteingym_wildtypes`.
    fit_on, regressor, alpha
        See :class:`~revdistill.core.ladder.DistillationLadder`.
    embedder : LocalEmbedder or WorkerEmbedder, optional
        Embeds the corpus when the fit is not cached (default: a CPU ``LocalEmbedder``); its options'
        numerics are part of the ladder's identity.
    cache : path, optional
        Cache root (default :func:`revdistill.io.paths.cache_root`).
    progress : callable, optional
        ``progress(fraction, message)`` while the corpus is embedded.
    """
    from revdistill.esm.runner import LocalEmbedder  # noqa: PLC0415

    embedder = embedder if embedder is not None else LocalEmbedder()
    corpus = corpus if corpus is not None else Corpus.proteingym_wildtypes()
    spec = LadderSpec(models=tuple(models), corpus=corpus, fit_on=fit_on, regressor=regressor, alpha=alpha,
                      numerics=tuple(sorted(embedder.options.numerics().items())))
    ladder_path, naive_path = fit_path(spec.ladder_id, cache), fit_path(spec.naive_id, cache)
    folder = ladder_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / f".{spec.ladder_id}.lock"):
        if ladder_path.is_file() and naive_path.is_file():
            ladder, naive = DistillationLadder.load(ladder_path), NaiveConcatPCA.load(naive_path)
            for path, fitted, kind in ((ladder_path, ladder, "ladder"), (naive_path, naive, "naive")):
                if fitted.provenance_ != spec.provenance(kind):
                    raise ValueError(f"cached fit {path} does not match its id (it was fitted on other inputs); "
                                     f"delete it and run again")
            logger.info("reference ladder %s and naive baseline %s from the cache", spec.ladder_id, spec.naive_id)
        else:
            ladder, naive = _fit(spec, embedder, cache, progress)
            save_ladder_pair(ladder, naive, ladder_path, naive_path)
    return ReferenceLadder(ladder=ladder, naive=naive, ladder_id=spec.ladder_id, naive_id=spec.naive_id,
                           label=corpus.description)


def _fit(spec: LadderSpec, embedder: Embedder, cache: str | Path | None,
         progress: StageCallback | None) -> tuple[DistillationLadder, NaiveConcatPCA]:
    """Embed the corpus (once, resumably) and fit both estimators from its per-residue moments."""
    from revdistill.esm.embed import MAX_RESIDUES  # noqa: PLC0415
    from revdistill.esm.store import EmbeddingStore  # noqa: PLC0415

    numerics = "-".join(str(value) for _, value in spec.numerics)
    folder = cache_dir("corpora", cache)
    store = EmbeddingStore(folder / f"{spec.corpus.digest[:16]}-{'_'.join(spec.models)}-{numerics}.h5")
    total = spec.corpus.n_sequences
    if progress is not None:
        progress(0.0, f"embedding the ladder corpus ({spec.corpus.description}) once")

    def on_progress(done: int, share: int) -> None:
        if progress is not None:
            progress(done / max(share, 1), f"ladder corpus: {done} / {share} sequences embedded")

    # The corpus is declared and its long-sequence handling is part of the ladder's id: say it once, by count,
    # instead of the embedder's warning that lists records by their digests.
    long_records = sum(len(sequence) > MAX_RESIDUES for _, sequence in spec.corpus.records)
    if long_records:
        logger.info("ladder corpus %s: %d sequence(s) over %d residues (handled as the numerics say: %s)",
                    spec.corpus.name, long_records, MAX_RESIDUES, numerics)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\d+ record\(s\) longer than", category=UserWarning)
        embedder.embed(store, list(spec.corpus.records), spec.models, on_progress=on_progress)
    stored = set(store.ids())
    expected = {record_id for record_id, _ in spec.corpus.records}
    if stored != expected:
        raise ValueError(f"corpus store {store.path} holds {len(stored)} records, the corpus {total}; it was "
                         f"written by something else: delete it and run again")
    moments = store.moments()
    logger.info("fitting %s and %s on %d residues of %s", spec.ladder_id, spec.naive_id, moments.count,
                spec.corpus.name)
    ladder = DistillationLadder(regressor=spec.regressor, alpha=spec.alpha, fit_on=spec.fit_on)
    ladder.fit_moments(moments, provenance=spec.provenance("ladder"))
    naive = NaiveConcatPCA(fit_on=spec.fit_on).fit_moments(moments, provenance=spec.provenance("naive"))
    return ladder, naive


def naive_path_of(path: str | Path) -> Path:
    """Where the naive baseline of ladder file ``path`` lives: ``<stem>.naive.npz`` beside it."""
    path = Path(path)
    return path.with_name(path.stem + ".naive.npz")


def ladder_digest(ladder: DistillationLadder) -> str:
    """SHA-256 of a fitted ladder's learned arrays (names, dtypes, shapes, bytes): what pairs a sidecar with it."""
    sha = hashlib.sha256()
    for key, value in sorted(ladder.to_arrays().items()):
        if key != "meta":
            sha.update(f"{key}:{value.dtype.str}:{value.shape};".encode("ascii"))
            sha.update(value.tobytes())
    return sha.hexdigest()


def save_ladder_pair(ladder: DistillationLadder, naive: NaiveConcatPCA, path: str | Path,
                     naive_path: str | Path | None = None) -> tuple[Path, Path]:
    """Write a ladder and its naive baseline together: both files change or neither does.

    The baseline records the ladder's :func:`ladder_digest`, so :func:`ladder_from_file` can refuse a
    sidecar that comes from another fit.

    Parameters
    ----------
    path : path
        The ladder file (``.npz``).
    naive_path : path, optional
        Default :func:`naive_path_of` ``(path)``.
    """
    naive_path = naive_path_of(path) if naive_path is None else Path(naive_path)
    written = save_npz_together([(path, ladder.to_arrays()),
                                 (naive_path, naive.to_arrays(paired_ladder=ladder_digest(ladder)))])
    return written[0], written[1]


def _check_pair(path: Path, ladder: DistillationLadder, naive_path: Path, naive: NaiveConcatPCA) -> None:
    """Refuse a naive sidecar that does not come from the same fit as the ladder beside it."""
    recorded = (read_npz_meta(naive_path) or {}).get("paired_ladder")
    advice = (f"the two files must come from one `revdistill fit`; refit, or move {naive_path.name} away to use "
              f"the ladder without a baseline")
    if recorded is not None:
        if recorded != ladder_digest(ladder):
            raise ValueError(f"naive baseline {naive_path} was written with another ladder than {path} (its "
                             f"recorded ladder digest {str(recorded)[:12]} is not this ladder's "
                             f"{ladder_digest(ladder)[:12]}); {advice}")
        return
    mine, theirs = ladder.provenance_ or {}, naive.provenance_ or {}
    for key in ("corpus", "models", "fit_on", "embedding"):
        if key in mine and key in theirs and mine[key] != theirs[key]:
            raise ValueError(f"naive baseline {naive_path} was fitted with another {key} than {path} "
                             f"({json.dumps(theirs[key], sort_keys=True)[:80]} vs "
                             f"{json.dumps(mine[key], sort_keys=True)[:80]}); {advice}")
    if list(naive.level_names_) != list(ladder.level_names_):
        raise ValueError(f"naive baseline {naive_path} has levels {list(naive.level_names_)}, the ladder {path} "
                         f"{list(ladder.level_names_)}; {advice}")


def ladder_from_file(path: str | Path) -> ReferenceLadder:
    """A ladder written by ``revdistill fit`` (and its naive baseline ``<stem>.naive.npz`` when present).

    Raises
    ------
    ValueError
        Either file is damaged, or the baseline does not come from the same fit as the ladder.
    """
    from revdistill.io.files import sha256_of  # noqa: PLC0415

    path = Path(path)
    ladder = DistillationLadder.load(path)
    naive_path = naive_path_of(path)
    naive = NaiveConcatPCA.load(naive_path) if naive_path.is_file() else None
    if naive is not None:
        _check_pair(path, ladder, naive_path, naive)
    provenance = ladder.provenance_
    ladder_id = _digest_id("rdl", provenance) if provenance else f"file-{sha256_of(path)[:12]}"
    naive_id = ""
    if naive is not None:
        naive_id = _digest_id("nvb", naive.provenance_) if naive.provenance_ else f"file-{sha256_of(naive_path)[:12]}"
    corpus = (provenance.get("corpus") or {}).get("name", "unknown inputs")
    return ReferenceLadder(ladder=ladder, naive=naive, ladder_id=ladder_id, naive_id=naive_id,
                           label=f"{corpus} (from {path.name})")


def authors_ladder(folder: str | Path, models: Sequence[str], *, pca: str | None = None,
                   embedder: Embedder | None = None, cache: str | Path | None = None,
                   progress: StageCallback | None = None) -> ReferenceLadder:
    """The authors' published scaler files as a ladder; its naive baseline is fitted the released way
    (``fit_on="raw"``) on the default corpus, since the files hold none."""
    from revdistill.core.reference import load_reference_ladder  # noqa: PLC0415

    ladder = load_reference_ladder(folder, sizes=tuple(models), regressor="pcr", pca=pca)
    baseline = reference_ladder(models, fit_on="raw", embedder=embedder, cache=cache, progress=progress)
    ladder_id = _digest_id("rdl", ladder.provenance_)
    return ReferenceLadder(ladder=ladder, naive=baseline.naive, ladder_id=ladder_id, naive_id=baseline.naive_id,
                           label=f"the authors' published scaler files ({', '.join(ladder.provenance_['files'])}); "
                                 f"naive baseline on {baseline.label}")
