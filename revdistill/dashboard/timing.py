"""How long a computation will take: residues to embed, a measured embedding speed, and an ETA.

Real ESM-2 weights on a CPU are slow (a median ProteinGym assay, ~300,000 residues through
8M → 35M → 150M, takes tens of minutes on two cores), so before Compute the dashboard says how much
there is to embed and about how long it takes. The speed is *measured*: :func:`calibrate` embeds a
few seeded random sequences with the chosen models on the chosen device (after a warm-up pass that
also loads the models, which the computation then reuses) and caches the rate under
:func:`revdistill.io.paths.cache_dir` ``("calibration")``, one JSON file per models × device × numerics ×
threads × length bucket. While a computation runs, :class:`ProgressClock` turns progress fractions
into an estimated time left, starting from the estimate and moving to the observed pace.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from revdistill.esm.batching import MAX_RESIDUES, embedded_residues
from revdistill.esm.interfaces import Embedder, EmbedSettings
from revdistill.esm.sequences import AMINO_ACIDS
from revdistill.units import format_duration

__all__ = ["Speed", "Estimate", "ProgressClock", "calibrate", "cached_speed", "length_bucket", "format_duration",
           "corpus_residues_to_embed", "stored_records"]

_BUCKETS = (64, 128, 256, 512, MAX_RESIDUES)
_AMINO = np.array(list(AMINO_ACIDS))


def length_bucket(length: float) -> int:
    """The calibration length for sequences of about ``length`` residues (cost per residue grows with it)."""
    return next((bucket for bucket in _BUCKETS if length <= bucket * 1.4), _BUCKETS[-1])


@dataclass(frozen=True)
class Speed:
    """A measured embedding speed.

    Attributes
    ----------
    residues_per_s : float
        Residues per second through all the models together (they embed the same batches).
    models : tuple of str
    device : str
    length : int
        Sequence length measured at (see :func:`length_bucket`).
    threads : int
        torch intra-op threads during the measurement.
    measured_at : str
        UTC time of the measurement.
    """

    residues_per_s: float
    models: tuple[str, ...]
    device: str
    length: int
    threads: int
    measured_at: str

    def seconds(self, residues: int) -> float:
        """Seconds to embed ``residues`` at this speed."""
        return residues / max(self.residues_per_s, 1e-9)


def _key(models: Sequence[str], device: str, numerics: dict[str, Any], threads: int, length: int) -> str:
    text = json.dumps({"models": list(models), "device": device, "numerics": numerics, "threads": threads,
                       "length": length, "machine": platform.node(), "cpu": platform.processor()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _path(models: Sequence[str], device: str, numerics: dict[str, Any], threads: int, length: int,
          cache: str | Path | None) -> Path:
    from revdistill.io.paths import cache_dir  # noqa: PLC0415

    return cache_dir("calibration", cache) / f"speed-{_key(models, device, numerics, threads, length)}.json"


def _threads(device: str) -> int:
    import torch  # noqa: PLC0415

    return int(torch.get_num_threads()) if device == "cpu" else 0


def cached_speed(models: Sequence[str], device: str, numerics: dict[str, Any], length: int, *,
                 threads: int | None = None, cache: str | Path | None = None) -> Speed | None:
    """The speed measured before for these settings, or None."""
    threads = _threads(device) if threads is None else threads
    path = _path(models, device, numerics, threads, length_bucket(length), cache)
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
        return Speed(**{**values, "models": tuple(values["models"])})
    except (ValueError, TypeError, KeyError):
        return None  # a damaged file is measured again


def calibrate(embedder: Embedder, models: Sequence[str], length: int, *, cache: str | Path | None = None,
              threads: int | None = None, min_seconds: float = 1.5, max_residues: int = 4096,
              seed: int = 0) -> Speed:
    """Measure how fast ``embedder`` embeds sequences of about ``length`` residues with ``models``.

    A warm-up pass (one sequence; it also loads the models, which stay loaded for the computation) is
    not timed. Then seeded random sequences of the bucketed length are embedded into a throw-away
    store, two at first and four times more each round, until a round takes ``min_seconds`` or holds
    ``max_residues`` (so fixed per-call costs do not dominate fast models, and slow ones stay short);
    the last round gives the speed. The result is cached (see the module docstring).

    Parameters
    ----------
    embedder : LocalEmbedder or WorkerEmbedder
        The session's embedder (its options give the device and numerics).
    models : sequence of str
        Small to large.
    length : int
        Typical sequence length of the data (bucketed by :func:`length_bucket`).
    cache : path, optional
        Cache root.
    threads : int, optional
        The torch threads the embedder uses (default: this process's setting).

    Returns
    -------
    Speed
    """
    from revdistill.esm.store import EmbeddingStore  # noqa: PLC0415

    device, numerics = embedder.options.device, embedder.options.numerics()
    bucket = length_bucket(length)
    rng = np.random.default_rng(seed)

    def records(first: int, count: int) -> list[tuple[str, str]]:
        return [(f"calibration-{i}", "".join(rng.choice(_AMINO, bucket))) for i in range(first, first + count)]

    with tempfile.TemporaryDirectory(prefix="revdistill-calibration-") as folder:
        store = EmbeddingStore(Path(folder) / "calibration.h5")
        embedder.embed(store, records(0, 1), list(models))
        first, count = 1, 2
        while True:
            start = time.perf_counter()
            embedder.embed(store, records(first, count), list(models))
            seconds = time.perf_counter() - start
            if seconds >= min_seconds or 4 * count * bucket > max_residues:
                break
            first, count = first + count, 4 * count
    speed = Speed(residues_per_s=count * bucket / max(seconds, 1e-6), models=tuple(models), device=device,
                  length=bucket, threads=_threads(device) if threads is None else int(threads),
                  measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    path = _path(models, device, numerics, speed.threads, bucket, cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps({**asdict(speed), "models": list(speed.models)}, indent=1))
    os.replace(temporary, path)
    return speed


@functools.lru_cache(maxsize=1)
def _proteingym_corpus() -> Any:
    from revdistill.experiment.ladders import Corpus  # noqa: PLC0415

    return Corpus.proteingym_wildtypes()


def corpus_residues_to_embed(models: Sequence[str], corpus: str, fit_on: str, settings: EmbedSettings,
                             cache: str | Path | None = None,
                             records: Sequence[tuple[str, str]] | None = None) -> int:
    """Residues of the ladder corpus still to embed: 0 when every ladder the choices need is cached.

    Parameters
    ----------
    models : sequence of str
        Small to large.
    corpus : {"proteingym", "data"}
        The models panel's choice (:data:`~.analysis.LADDER_CORPORA`).
    fit_on : {"nested", "raw", "both"}
    settings : EmbedOptions
        The embedder's settings: its numerics are part of a ladder's id.
    records : sequence of (id, sequence), optional
        The data set's records (``corpus="data"``).
    """
    from revdistill.experiment.ladders import Corpus, LadderSpec, fit_path  # noqa: PLC0415

    if corpus == "proteingym":
        chosen = _proteingym_corpus()
    elif corpus == "data":
        if not records:
            return 0
        chosen = Corpus.from_records("data", records)
    else:
        raise ValueError(f"corpus={corpus!r}; choose 'proteingym' or 'data'")
    numerics = tuple(sorted(settings.numerics().items()))
    conventions = ("nested", "raw") if fit_on == "both" else (fit_on,)
    if all(fit_path(LadderSpec(models=tuple(models), corpus=chosen, fit_on=c, numerics=numerics).ladder_id, cache)
           .is_file() for c in conventions):
        return 0
    long_sequences = settings.long_sequences
    return sum(embedded_residues(len(sequence), long_sequences) for _, sequence in chosen.records)


def stored_records(path: Path) -> set[str]:
    """Ids already in the store at ``path`` (empty when there is none or it cannot be read)."""
    if not Path(path).exists():
        return set()
    try:
        from revdistill.esm.store import EmbeddingStore  # noqa: PLC0415

        return set(EmbeddingStore(path).ids())
    except Exception:  # noqa: BLE001 - an unreadable store only makes the estimate pessimistic
        return set()


@dataclass(frozen=True)
class Estimate:
    """What a computation has to embed, and how long that takes at a measured speed.

    Attributes
    ----------
    records : int
        Sequences of the data set.
    residues : int
        Residues the models run over for the records not stored yet (windows counted).
    stored : int or None
        Records already in the data set's store (None: unknown).
    corpus_residues : int
        Residues of the ladder corpus still to embed (0 when the ladder is cached).
    speed : Speed or None
        None while the speed has not been measured.
    """

    records: int
    residues: int
    stored: int | None
    corpus_residues: int
    speed: Speed | None

    @property
    def seconds(self) -> float | None:
        """Estimated embedding seconds (None without a speed)."""
        return None if self.speed is None else self.speed.seconds(self.residues + self.corpus_residues)

    def describe(self) -> str:
        """One line for the models panel."""
        parts = [f"{self.records:,} sequences, {self.residues:,} residues to embed"]
        if self.stored:
            parts[0] += f" ({self.stored:,} already stored)"
        if self.corpus_residues:
            parts.append(f"+ {self.corpus_residues:,} for the ladder's corpus (once)")
        if self.speed is None:
            parts.append("time: measuring this machine's speed…")
        else:
            parts.append(f"≈ {format_duration(self.seconds)} on {self.speed.device} "
                         f"({self.speed.residues_per_s:,.0f} residues/s measured for "
                         f"{' + '.join(self.speed.models)})")
        return " · ".join(parts)


class ProgressClock:
    """Time left from progress fractions: the estimate at first, the observed pace as work advances.

    Parameters
    ----------
    estimate_s : float or None
        The estimate made before starting.

    >>> clock = ProgressClock(100.0, start=0.0)
    >>> round(clock.remaining(0.5, now=50.0))
    50
    """

    def __init__(self, estimate_s: float | None, start: float | None = None) -> None:
        self.estimate_s = estimate_s
        self.start = time.monotonic() if start is None else start

    def remaining(self, fraction: float, now: float | None = None) -> float | None:
        """Seconds left at ``fraction`` done (None when nothing is known yet)."""
        elapsed = (time.monotonic() if now is None else now) - self.start
        fraction = min(max(fraction, 0.0), 1.0)
        observed = elapsed / fraction if fraction > 0.02 else None
        if observed is None and self.estimate_s is None:
            return None
        if observed is None:
            total = self.estimate_s
        elif self.estimate_s is None:
            total = observed
        else:  # trust the observed pace more as the work advances
            total = (1 - fraction) * max(self.estimate_s, elapsed) + fraction * observed
        return max(total - elapsed, 0.0)

    def describe(self, fraction: float) -> str:
        """``"1:05 elapsed · about 3 min left"``."""
        elapsed = time.monotonic() - self.start
        minutes, seconds = divmod(int(elapsed), 60)
        left = self.remaining(fraction)
        return f"{minutes}:{seconds:02d} elapsed" + ("" if left is None else f" · about {format_duration(left)} left")
