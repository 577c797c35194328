"""The ESM-2 ladder as a table of frozen specs: what each model is, looked up by name, and what a list of
models means. No torch, no files, no network here (weights are :mod:`revdistill.esm.models.weights`,
loading is :mod:`revdistill.esm.models.loading`).

A *model list* (``"8M,35M,150M"`` on the command line, the ticked boxes of the dashboard, the
``models`` argument of the library) has one parser, :func:`parse_models`, with one rule: every item
names a model of the table once (by alias or fair-esm name), and the list is returned as a ladder,
small to large (by embedding width, then depth), whatever order it was given in.

Examples
--------
>>> get_spec("650M").dim
1280
>>> parse_models("150M, esm2_t6_8M_UR50D,35M")
('8M', '35M', '150M')
>>> parse_models(["tiny-48", "tiny-32"])
('tiny-32', 'tiny-48')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

__all__ = [
    "ModelSpec",
    "ESM2_MODELS",
    "TINY_MODELS",
    "DEFAULT_LADDER",
    "get_spec",
    "parse_models",
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

    def forward_flops(self, length: int) -> float:
        """Useful forward FLOPs per residue of a ``length``-residue input (no padding counted).

        ``24·layers·dim²`` (attention projections and the 4× feed-forward, 2 FLOPs per multiply-add)
        plus ``4·layers·dim·length`` (attention scores and their weighted sum).
        """
        return 24.0 * self.layers * self.dim ** 2 + 4.0 * self.layers * self.dim * int(length)


#: The trained ESM-2 family, small to large.
ESM2_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("esm2_t6_8M_UR50D", "8M", 6, 320, 20, 7.5e6),
    ModelSpec("esm2_t12_35M_UR50D", "35M", 12, 480, 20, 34e6),
    ModelSpec("esm2_t30_150M_UR50D", "150M", 30, 640, 20, 148e6),
    ModelSpec("esm2_t33_650M_UR50D", "650M", 33, 1280, 20, 651e6),
    ModelSpec("esm2_t36_3B_UR50D", "3B", 36, 2560, 40, 2.8e9),
    ModelSpec("esm2_t48_15B_UR50D", "15B", 48, 5120, 40, 15e9),
)

#: The random-init, untrained family (tests and offline demos), small to large.
TINY_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("tiny-32", "tiny-32", 2, 32, 4, 0.0, trained=False, seed=32),
    ModelSpec("tiny-48", "tiny-48", 2, 48, 4, 0.0, trained=False, seed=48),
    ModelSpec("tiny-64", "tiny-64", 3, 64, 4, 0.0, trained=False, seed=64),
)

#: The first ladder of trained models to suggest (the released reference ladder's sizes).
DEFAULT_LADDER: tuple[str, ...] = ("8M", "35M", "150M")

_ALL_SPECS = ESM2_MODELS + TINY_MODELS


def get_spec(name_or_alias: str, trained: bool = False) -> ModelSpec:
    """Return the spec for a fair-esm name (``esm2_t33_650M_UR50D``) or alias (``650M``, ``tiny-32``).

    Parameters
    ----------
    name_or_alias : str
    trained : bool, default=False
        Refuse the untrained tiny family (for what needs published weights, such as downloads).

    Raises
    ------
    ValueError
        If the name is not in the table (the message lists what is), or names an untrained model when
        ``trained`` is True (the message lists the trained ones).
    """
    key = str(name_or_alias).strip()
    for spec in _ALL_SPECS:
        if key in (spec.name, spec.alias) or key.lower() in (spec.name.lower(), spec.alias.lower()):
            if trained and not spec.trained:
                raise ValueError(f"model {spec.alias!r} is a random-init tiny model with no published weights; "
                                 f"choose from {', '.join(entry.alias for entry in ESM2_MODELS)}")
            return spec
    known = ", ".join(f"{spec.alias} ({spec.name})" if spec.trained else spec.alias for spec in _ALL_SPECS)
    raise ValueError(f"unknown model {name_or_alias!r}; known models: {known}")


def parse_models(models: str | Iterable[str], what: str = "models", trained: bool = False) -> tuple[str, ...]:
    """The one parser of a model list: aliases, checked, as a ladder from small to large.

    Parameters
    ----------
    models : str or iterable of str
        ``"8M,35M"`` (comma-separated; spaces around items are ignored) or ``["8M", "35M"]``; aliases
        or fair-esm names (``esm2_t12_35M_UR50D``), any case.
    what : str, default="models"
        The argument's name in messages (``"--models"`` on the command line).
    trained : bool, default=False
        Refuse the untrained tiny family (see :func:`get_spec`).

    Returns
    -------
    tuple of str
        Canonical aliases sorted small to large by embedding width, then depth (the order a ladder is
        fitted in), whatever order they were given in.

    Raises
    ------
    ValueError
        An empty list, an empty item (``"8M,,35M"``), an unknown model (the message lists the known
        ones), a model named more than once, also under two names (``"8M,esm2_t6_8M_UR50D"``), or an
        untrained one when ``trained`` is True.
    """
    if isinstance(models, str):
        items = [item.strip() for item in models.split(",")]
    else:
        items = [str(item).strip() for item in models]
    shown = models if isinstance(models, str) else list(items)
    if not any(items):
        raise ValueError(f"{what} is empty: name at least one model, e.g. '8M' or 'tiny-32,tiny-48'")
    if not all(items):
        raise ValueError(f"{what}={shown!r} has an empty item; give a comma-separated list of models "
                         f"without empty entries")
    specs = [get_spec(item, trained) for item in items]
    aliases = [spec.alias for spec in specs]
    repeated = sorted({alias for alias in aliases if aliases.count(alias) > 1})
    if repeated:
        raise ValueError(f"{what}={shown!r} names {repeated} more than once; give each model once")
    return tuple(spec.alias for spec in sorted(specs, key=lambda spec: (spec.dim, spec.layers)))
