"""Loading ESM-2 models: one loader that reads the registry's table, and the tiny untrained family.

Trained checkpoints are read from local files only (``weights_dir`` or the torch-hub cache, see
:func:`revdistill.esm.models.weights.checkpoint_paths`). Downloading is
:mod:`revdistill.esm.models.weights` (resumable, size/digest checked, into the same folder), which
:func:`load_esm2` calls only when asked with ``download=True``. Tiny models (``tiny-32``, ``tiny-48``,
``tiny-64``) are *random-init, untrained* ESM-2s built with fair-esm's ``ESM2`` class, seeded, for tests
and offline demos.

Examples
--------
>>> from revdistill.esm.models.loading import tiny_ladder
>>> ladder = tiny_ladder()              # {"tiny-32": ESM2, "tiny-48": ESM2, "tiny-64": ESM2}, untrained
"""
from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import torch

from revdistill.esm.models.registry import TINY_MODELS, get_spec
from revdistill.esm.models.weights import checkpoint_paths, download_weights, missing_weights_message

logger = logging.getLogger(__name__)

__all__ = [
    "load_esm2",
    "tiny_esm2",
    "tiny_ladder",
    "model_dim",
    "save_esm2_checkpoint",
]


def model_dim(model: torch.nn.Module) -> int:
    """Embedding width of a fair-esm ESM-2 module."""
    return int(model.embed_dim)


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
        (:func:`revdistill.esm.models.weights.download_weights`: fair-esm's URLs or ``$REVDISTILL_WEIGHTS_URL``,
        resumable, checked). Off by default: the core path never touches the network.

    Returns
    -------
    model : esm.model.esm2.ESM2
    alphabet : esm.data.Alphabet

    Raises
    ------
    FileNotFoundError
        Weights missing and ``download`` is False; the message names the files and the folder.
    revdistill.io.download.DownloadError, revdistill.io.download.ChecksumError
        ``download=True`` and the download failed (offline, HTTP error, disk full, digest mismatch).
    """
    import esm  # noqa: PLC0415

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
                raise FileNotFoundError(missing_weights_message(spec, model_path, regression_path))
            logger.info("downloading %s into %s", spec.name, model_path.parent)
            download_weights([spec.alias], weights_dir)

    from revdistill.esm.checkpoint import check_esm2_checkpoint, read_checkpoint  # noqa: PLC0415

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
    from esm.data import Alphabet  # noqa: PLC0415
    from esm.model.esm2 import ESM2  # noqa: PLC0415

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
