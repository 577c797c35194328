"""Shared fixtures."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTEINGYM_DIR = REPO_ROOT.parent / "shared" / "data" / "proteingym"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def proteingym_dir() -> Path:
    """The real ProteinGym files beside the repository (read-only; never copied into it).

    Under CI (``$CI`` set, as ``.ci/run`` does) their absence is a failure; in a clone without them
    (a user's machine) the tests that read them are skipped, saying where the data was expected.
    """
    if not (PROTEINGYM_DIR / "reference_files" / "DMS_substitutions.csv").exists():
        message = f"the shared ProteinGym test data is missing: expected it in {PROTEINGYM_DIR}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message + " (CI fails here)")
    return PROTEINGYM_DIR


def make_levels(n_rows: int = 3000, dims=(24, 36, 52), latent: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    """Correlated synthetic per-residue levels: a shared latent space seen through each model, plus
    level-specific signal and noise, with non-zero means (like real embeddings)."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(n_rows, latent))
    levels = {}
    for index, dim in enumerate(dims):
        own = rng.normal(size=(n_rows, 4)) @ rng.normal(size=(4, dim))
        levels[f"L{index}"] = (shared @ rng.normal(size=(latent, dim)) * (1 + index) ** 0.5 + own
                               + 0.3 * rng.normal(size=(n_rows, dim)) + rng.normal(size=dim))
    return levels


@pytest.fixture
def levels() -> dict[str, np.ndarray]:
    return make_levels()


AMINO_ACIDS = np.array(list("ACDEFGHIKLMNPQRSTVWY"))


def random_records(n: int, low: int = 5, high: int = 80, seed: int = 0, prefix: str = "seq") -> list[tuple[str, str]]:
    """``n`` random protein records ``(f"{prefix}{i}", sequence)`` with lengths in [low, high)."""
    rng = np.random.default_rng(seed)
    return [(f"{prefix}{i}", "".join(rng.choice(AMINO_ACIDS, rng.integers(low, high)))) for i in range(n)]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread (and the test box is shared); restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def embed_into(store, records, models, per_residue=False, on_progress=None, **options) -> int:
    """Embed ``records`` into ``store`` with a fresh :class:`LocalEmbedder` (options as keywords)."""
    from revdistill.esm.runner import EmbedOptions, LocalEmbedder

    return LocalEmbedder(EmbedOptions(**options)).embed(store, records, models, per_residue=per_residue,
                                                        on_progress=on_progress)


TINY = ("tiny-32", "tiny-48", "tiny-64")
PIN1 = "PIN1_HUMAN_Tsuboyama_2023_1I6C"
KENNOUCHE = "A0A1I9GEU1_NEIME_Kennouche_2019"


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """A cache root shared by the session, holding the tiny family's reference ladders (both conventions),
    fitted once on the default corpus (ProteinGym's wild types, ~5 s)."""
    import torch

    from revdistill.esm.runner import LocalEmbedder
    from revdistill.experiment.ladders import reference_ladder

    root = tmp_path_factory.mktemp("cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embedder = LocalEmbedder()
        for fit_on in ("nested", "raw"):
            reference_ladder(TINY, fit_on=fit_on, embedder=embedder, cache=root)
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture
def tiny_ladders(tiny_cache):
    """The tiny family's reference ladders ``{"nested": ReferenceLadder, "raw": ReferenceLadder}`` (cached)."""
    from revdistill.experiment.ladders import reference_ladder

    return {fit_on: reference_ladder(TINY, fit_on=fit_on, cache=tiny_cache) for fit_on in ("nested", "raw")}


def wait_until(condition, seconds: float = 10.0, every: float = 0.01) -> bool:
    """Poll ``condition()`` until it is true (True) or ``seconds`` pass (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False
