"""The ESM-2 ladder as a table of frozen specs, one loader that reads it, and a tiny untrained family.

Trained checkpoints are read from local files only (``weights_dir`` or the torch-hub cache). Downloading
is :mod:`revdistill.esm.weights` (resumable, size/digest checked, into the same folder), which
:func:`load_esm2` calls only when asked with ``download=True``. Tiny models (``tiny-32``, ``tiny-48``,
``tiny-64``) are *random-init, untrained* ESM-2s built with fair-esm's ``ESM2`` class, seeded, for tests
and offline demos.

Examples
--------
>>> from revdistill.esm.models import get_spec, tiny_ladder
>>> get_spec("650M").dim
1280
>>> ladder = tiny_ladder()              # {"tiny-32": ESM2, "tiny-48": ESM2, "tiny-64": ESM2}, untrained
"""
from __future__ import annotations

import argparse
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "ModelSpec",
    "ESM2_MODELS",
    "TINY_MODELS",
    "get_spec",
    "checkpoint_paths",
    "weights_available",
    "load_esm2",
    "tiny_esm2",
    "tiny_ladder",
    "model_dim",
    "save_esm2_checkpoint",
]


@dataclass(frozen=True)
class ModelSpec:
    """One ESM-2 architecture.

    Attributes
    ----------
    name : str
        fair-esm name, also the checkpoint file stem (``esm2_t6_8M_UR50D``).
    alias : str
        Short name used across revdistill (``8M``).
    layers, dim, heads : int
        Number of transformer layers, embedding width, attention heads.
    params : float
        Parameter count (for FLOP estimates and the dashboard).
    trained : bool
        False for the tiny random-init family.
    seed : int
        Initialisation seed (tiny family only).
    """

    name: str
    alias: str
    layers: int
    dim: int
    heads: int
    params: float
    trained: bool = True
    seed: int = 0

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.dim // self.heads


ESM2_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("esm2_t6_8M_UR50D", "8M", 6, 320, 20, 7.5e6),
    ModelSpec("esm2_t12_35M_UR50D", "35M", 12, 480, 20, 34e6),
    ModelSpec("esm2_t30_150M_UR50D", "150M", 30, 640, 20, 148e6),
    ModelSpec("esm2_t33_650M_UR50D", "650M", 33, 1280, 20, 651e6),
    ModelSpec("esm2_t36_3B_UR50D", "3B", 36, 2560, 40, 2.8e9),
    ModelSpec("esm2_t48_15B_UR50D", "15B", 48, 5120, 40, 15e9),
)

TINY_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("tiny-32", "tiny-32", 2, 32, 4, 0.0, trained=False, seed=32),
    ModelSpec("tiny-48", "tiny-48", 2, 48, 4, 0.0, trained=False, seed=48),
    ModelSpec("tiny-64", "tiny-64", 3, 64, 4, 0.0, trained=False, seed=64),
)

_ALL_SPECS = ESM2_MODELS + TINY_MODELS


def get_spec(name_or_alias: str) -> ModelSpec:
    """Return the spec for a fair-esm name (``esm2_t33_650M_UR50D``) or alias (``650M``, ``tiny-32``).

    Raises
    ------
    ValueError
        If the name is not in the table; the message lists what is.
    """
    key = str(name_or_alias).strip()
    for spec in _ALL_SPECS:
        if key in (spec.name, spec.alias) or key.lower() in (spec.name.lower(), spec.alias.lower()):
            return spec
    known = ", ".join(f"{spec.alias} ({spec.name})" if spec.trained else spec.alias for spec in _ALL_SPECS)
    raise ValueError(f"unknown model {name_or_alias!r}; known models: {known}")


WEIGHTS_ENV = "REVDISTILL_WEIGHTS"


def _default_weights_dir() -> Path:
    """``$REVDISTILL_WEIGHTS`` when set, else fair-esm's cache ``torch.hub.get_dir()/checkpoints``."""
    explicit = os.environ.get(WEIGHTS_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints"


def checkpoint_paths(name_or_alias: str, weights_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Where the checkpoint and its contact-regression file are expected.

    Parameters
    ----------
    name_or_alias : str
        A trained model from :data:`ESM2_MODELS`.
    weights_dir : str or Path, optional
        Folder holding ``<name>.pt``; defaults to ``$REVDISTILL_WEIGHTS``, else
        ``torch.hub.get_dir()/checkpoints`` (fair-esm's cache).

    Returns
    -------
    (model_path, regression_path) : tuple of Path
    """
    spec = get_spec(name_or_alias)
    if not spec.trained:
        raise ValueError(f"model {spec.alias!r} is a random-init tiny model and has no checkpoint files")
    folder = Path(weights_dir) if weights_dir is not None else _default_weights_dir()
    return folder / f"{spec.name}.pt", folder / f"{spec.name}-contact-regression.pt"


def weights_available(name_or_alias: str, weights_dir: str | Path | None = None) -> bool:
    """True if the model can be loaded without network access (tiny models always can)."""
    spec = get_spec(name_or_alias)
    if not spec.trained:
        return True
    model_path, _ = checkpoint_paths(spec.name, weights_dir)
    return model_path.is_file()


def model_dim(model: torch.nn.Module) -> int:
    """Embedding width of a fair-esm ESM-2 module."""
    return int(model.embed_dim)


def _missing_weights_message(spec: ModelSpec, model_path: Path, regression_path: Path) -> str:
    from revdistill.esm.weights import weights_urls

    model_url, regression_url = weights_urls(spec.alias)
    return (
        f"weights for {spec.alias} ({spec.name}) are not available offline: put\n"
        f"  {model_path.name}  (from {model_url})\n"
        f"  {regression_path.name}  (from {regression_url}, optional)\n"
        f"in the folder {model_path.parent}\n"
        f"(or run `revdistill weights download {spec.alias}`, pass download=True / --download, or pass "
        f"weights_dir= / --weights-dir to another folder)"
    )


def load_esm2(
    name_or_alias: str,
    weights_dir: str | Path | None = None,
    download: bool = False,
) -> tuple[torch.nn.Module, "object"]:
    """Load an ESM-2 model and its alphabet, in eval mode on the CPU.

    Parameters
    ----------
    name_or_alias : str
        ``8M`` … ``15B``, a fair-esm name, a tiny alias (``tiny-32``; random init, untrained), or a
        path to a fair-esm ``.pt`` checkpoint whose stem is an ESM-2 name.
    weights_dir : str or Path, optional
        Folder holding ``<name>.pt`` and ``<name>-contact-regression.pt``. Defaults to fair-esm's cache
        ``torch.hub.get_dir()/checkpoints``.
    download : bool, default=False
        If the files are missing, download them into that folder first
        (:func:`revdistill.esm.weights.download_weights`: fair-esm's URLs or ``$REVDISTILL_WEIGHTS_URL``,
        resumable, checked). Off by default: the core path never touches the network.

    Returns
    -------
    model : esm.model.esm2.ESM2
    alphabet : esm.data.Alphabet

    Raises
    ------
    FileNotFoundError
        Weights missing and ``download`` is False; the message names the files and the folder.
    revdistill._download.DownloadError, revdistill._download.ChecksumError
        ``download=True`` and the download failed (offline, HTTP error, disk full, digest mismatch).
    """
    import esm

    candidate = Path(str(name_or_alias))
    if candidate.suffix == ".pt":
        if not candidate.is_file():
            raise FileNotFoundError(f"checkpoint file {candidate} does not exist")
        model_path = candidate
        regression_path = Path(str(candidate.with_suffix("")) + "-contact-regression.pt")
        if not candidate.stem.startswith("esm2"):
            raise ValueError(
                f"checkpoint {candidate.name!r}: fair-esm needs the file stem to start with 'esm2' "
                f"(e.g. esm2_t6_8M_UR50D.pt) to read it as an ESM-2 model"
            )
    else:
        spec = get_spec(name_or_alias)
        if not spec.trained:
            return tiny_esm2(spec.layers, spec.dim, spec.heads, seed=spec.seed)
        model_path, regression_path = checkpoint_paths(spec.name, weights_dir)
        if not model_path.is_file():
            if not download:
                raise FileNotFoundError(_missing_weights_message(spec, model_path, regression_path))
            from revdistill.esm.weights import download_weights

            logger.info("downloading %s into %s", spec.name, model_path.parent)
            download_weights([spec.alias], weights_dir)

    from revdistill.esm.checkpoint import check_esm2_checkpoint, read_checkpoint

    model_data = read_checkpoint(model_path)
    check_esm2_checkpoint(model_data, model_path, None if candidate.suffix == ".pt" else spec)
    # Embeddings do not need the contact head: without one, load quietly.
    regression_data = read_checkpoint(regression_path, "contact-regression") if regression_path.is_file() else None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Regression weights not found")
            model, alphabet = esm.pretrained.load_model_and_alphabet_core(model_path.stem, model_data,
                                                                          regression_data)
    except (RuntimeError, KeyError, AttributeError, TypeError, ValueError) as error:
        head = regression_path.name if regression_data is not None else "no contact head"
        raise ValueError(f"checkpoint {model_path} (with {head}) cannot be read by fair-esm as an ESM-2 model: "
                         f"{' '.join(str(error).split())[:300]}") from None
    return model.eval(), alphabet


def tiny_esm2(
    num_layers: int = 2,
    embed_dim: int = 32,
    attention_heads: int = 4,
    seed: int = 0,
) -> tuple[torch.nn.Module, "object"]:
    """A seeded, random-init, **untrained** ESM-2 built with fair-esm's own ``ESM2`` class.

    The global torch RNG is left untouched (initialisation runs inside ``torch.random.fork_rng``).

    Parameters
    ----------
    num_layers, embed_dim, attention_heads : int
        Architecture; ``embed_dim / attention_heads`` must be even (rotary embeddings).
    seed : int, default=0
        Initialisation seed; the same seed gives the same weights.

    Returns
    -------
    model : esm.model.esm2.ESM2 (eval mode, CPU, float32)
    alphabet : esm.data.Alphabet (``ESM-1b``)
    """
    from esm.data import Alphabet
    from esm.model.esm2 import ESM2

    if embed_dim % attention_heads or (embed_dim // attention_heads) % 2:
        raise ValueError(
            f"embed_dim={embed_dim} must split into attention_heads={attention_heads} heads of even width"
        )
    alphabet = Alphabet.from_architecture("ESM-1b")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = ESM2(
            num_layers=num_layers,
            embed_dim=embed_dim,
            attention_heads=attention_heads,
            alphabet=alphabet,
            token_dropout=True,
        )
        # Default init leaves every LayerNorm at identity; perturb them so tests see real affine maps.
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                torch.nn.init.normal_(module.weight, mean=1.0, std=0.1)
                torch.nn.init.normal_(module.bias, std=0.1)
    model.untrained = True  # label travels with the module
    return model.eval(), alphabet


def tiny_ladder(aliases: tuple[str, ...] | None = None) -> dict[str, torch.nn.Module]:
    """The tiny untrained ladder, ``{"tiny-32": ESM2, "tiny-48": ESM2, "tiny-64": ESM2}`` (small to large).

    All share the ``ESM-1b`` alphabet (``model.alphabet``). Random init, for tests and offline demos.
    """
    specs = TINY_MODELS if aliases is None else tuple(get_spec(alias) for alias in aliases)
    ladder = {}
    for spec in specs:
        if spec.trained:
            raise ValueError(f"tiny_ladder() builds tiny models only, got {spec.alias!r}")
        ladder[spec.alias] = tiny_esm2(spec.layers, spec.dim, spec.heads, seed=spec.seed)[0]
    return ladder


def save_esm2_checkpoint(model: torch.nn.Module, path: str | Path) -> tuple[Path, Path]:
    """Write ``model`` in fair-esm's ESM-2 checkpoint format (what ``esm2_*.pt`` files hold).

    Writes ``path`` (``{"model": {"encoder.<key>": tensor}, "cfg": {"model": Namespace(...)}}``) and
    ``<stem>-contact-regression.pt`` beside it (``{"model": {"contact_head.regression.*": tensor}}``).
    The stem of ``path`` must start with ``esm2`` for fair-esm to read it back.

    Returns
    -------
    (model_path, regression_path) : tuple of Path
    """
    path = Path(path)
    if path.suffix != ".pt" or not path.stem.startswith("esm2"):
        raise ValueError(f"path={str(path)!r} must be an 'esm2*.pt' file name so fair-esm can read it back")
    state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    regression = {key: value for key, value in state.items() if key.startswith("contact_head.regression.")}
    body = {f"encoder.{key}": value for key, value in state.items() if key not in regression}
    cfg = argparse.Namespace(
        encoder_layers=int(model.num_layers),
        encoder_embed_dim=int(model.embed_dim),
        encoder_attention_heads=int(model.attention_heads),
        token_dropout=bool(model.token_dropout),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    regression_path = Path(str(path.with_suffix("")) + "-contact-regression.pt")
    torch.save({"model": body, "cfg": {"model": cfg}}, path)
    torch.save({"model": regression}, regression_path)
    return path, regression_path
