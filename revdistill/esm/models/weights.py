"""ESM-2 checkpoints: where they are expected, what is on disk, and downloading them from fair-esm's URLs.

The one place that knows ESM-2 weight files and downloads them. Files go to the folder
:func:`revdistill.esm.models.loading.load_esm2` reads (:func:`checkpoint_paths`: ``weights_dir``, else
``$REVDISTILL_WEIGHTS``, else fair-esm's torch-hub cache ``torch.hub.get_dir()/checkpoints``), under
fair-esm's own names, so fair-esm finds them too:

- ``<base>/models/<name>.pt``, the model;
- ``<base>/regression/<name>-contact-regression.pt``, the contact head (small).

``<base>`` is ``https://dl.fbaipublicfiles.com/fair-esm`` unless the ``base_url`` argument or the
``REVDISTILL_WEIGHTS_URL`` environment variable says otherwise (a mirror, or a local test server).
Downloads resume from ``<name>.pt.part`` (HTTP ``Range``), are checked against ``Content-Length`` and,
when known, the SHA-256 recorded in ``SHA256SUMS`` beside them, and are renamed into place only when
complete (see :mod:`revdistill.io.download`).

Sizes in :data:`ESM2_WEIGHTS` are **approximate** (4 bytes per parameter, as float32, plus the contact
head): the exact sizes and digests of the published files were not available when this table was
written, so no digest is claimed; the server's ``Content-Length`` is what a download is checked against.

Examples
--------
>>> from revdistill.esm.models.weights import weights_status
>>> [(s.alias, s.state) for s in weights_status("/nonexistent")][:2]
[('8M', 'missing'), ('35M', 'missing')]
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

from revdistill.esm.checkpoint import check_checkpoint_file
from revdistill.esm.models.registry import ESM2_MODELS, ModelSpec, get_spec, parse_models
from revdistill.io.download import ProgressCallback, check_online as _check_online, download_file, read_checksums

logger = logging.getLogger(__name__)

__all__ = [
    "WEIGHTS_ENV", "WEIGHTS_URL_ENV", "DEFAULT_WEIGHTS_URL", "WeightsFile", "ESM2_WEIGHTS", "WeightsStatus",
    "checkpoint_paths", "weights_available", "missing_weights_message",
    "weights_base_url", "weights_urls", "weights_status", "download_weights", "check_online",
]

WEIGHTS_ENV = "REVDISTILL_WEIGHTS"
WEIGHTS_URL_ENV = "REVDISTILL_WEIGHTS_URL"
DEFAULT_WEIGHTS_URL = "https://dl.fbaipublicfiles.com/fair-esm"


def _default_weights_dir() -> Path:
    """``$REVDISTILL_WEIGHTS`` when set, else fair-esm's cache ``torch.hub.get_dir()/checkpoints``.

    Without importing torch when this process has not: then nobody here can have called
    ``torch.hub.set_dir``, and the folder is torch's default rule (``$TORCH_HOME/hub``, else
    ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``), so a visitor's kernel stays light.
    """
    explicit = os.environ.get(WEIGHTS_ENV)
    if explicit:
        return Path(explicit).expanduser()
    torch = sys.modules.get("torch")
    if torch is not None or os.environ.get("TORCH_HUB"):  # TORCH_HUB: torch's own (deprecated) override
        import torch  # noqa: PLC0415

        return Path(torch.hub.get_dir()) / "checkpoints"
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def checkpoint_paths(name_or_alias: str, weights_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Where the checkpoint and its contact-regression file are expected.

    Parameters
    ----------
    name_or_alias : str
        A trained model from :data:`~revdistill.esm.models.registry.ESM2_MODELS`.
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


def missing_weights_message(spec: ModelSpec, model_path: Path, regression_path: Path) -> str:
    """What to do when a model's checkpoint is not in its folder (the files, their URLs, the commands)."""
    model_url, regression_url = weights_urls(spec.alias)
    return (
        f"weights for {spec.alias} ({spec.name}) are not available offline: put\n"
        f"  {model_path.name}  (from {model_url})\n"
        f"  {regression_path.name}  (from {regression_url}, optional)\n"
        f"in the folder {model_path.parent}\n"
        f"(or run `revdistill weights download {spec.alias}`, pass download=True / --download, or pass "
        f"weights_dir= / --weights-dir to another folder)"
    )


@dataclass(frozen=True)
class WeightsFile:
    """The published files of one trained ESM-2.

    Attributes
    ----------
    alias, name : str
        ``8M`` and fair-esm's name ``esm2_t6_8M_UR50D`` (the file stem).
    approx_bytes : int
        Approximate size of model + contact-regression file (float32 parameters); for display only.
    sha256 : str or None
        Published digest of ``<name>.pt`` when known (none is, yet); then every download is checked.
    """

    alias: str
    name: str
    approx_bytes: int
    sha256: str | None = None


def _approx_bytes(params: float, layers: int, heads: int) -> int:
    # float32 weights + ~1% pickle/zip overhead, plus the contact head (layers*heads + 1 floats + ~1 kB)
    return int(params * 4 * 1.01) + 4 * (layers * heads + 1) + 1024


ESM2_WEIGHTS: tuple[WeightsFile, ...] = tuple(
    WeightsFile(spec.alias, spec.name, _approx_bytes(spec.params, spec.layers, spec.heads)) for spec in ESM2_MODELS
)


@dataclass(frozen=True)
class WeightsStatus:
    """What is on disk for one model.

    Attributes
    ----------
    alias, name : str
    path, regression_path : Path
        Where :func:`~revdistill.esm.models.loading.load_esm2` looks for the model and its contact head.
    present : bool
        The model file exists (the contact head is optional for embeddings).
    regression_present : bool
    partial_bytes : int
        Bytes of an interrupted download (``<name>.pt.part``), 0 if none.
    size_on_disk : int
        Bytes of the model + contact-head files present (0 if none).
    expected_bytes : int
        Approximate download size (see :data:`ESM2_WEIGHTS`); ``expected_exact`` says it is not exact.
    url, regression_url : str
    """

    alias: str
    name: str
    path: Path
    regression_path: Path
    present: bool
    regression_present: bool
    partial_bytes: int
    size_on_disk: int
    expected_bytes: int
    url: str
    regression_url: str
    expected_exact: bool = False

    @property
    def partial(self) -> bool:
        """An interrupted download waits to be resumed."""
        return self.partial_bytes > 0

    @property
    def state(self) -> str:
        """``present``, ``partial`` (a download to resume) or ``missing``."""
        return "present" if self.present else "partial" if self.partial else "missing"


def weights_base_url(base_url: str | None = None) -> str:
    """The download base: ``base_url``, else ``$REVDISTILL_WEIGHTS_URL``, else fair-esm's public URL."""
    base = base_url or os.environ.get(WEIGHTS_URL_ENV) or DEFAULT_WEIGHTS_URL
    if not base.startswith(("http://", "https://", "file://")):
        source = "base_url" if base_url else WEIGHTS_URL_ENV
        raise ValueError(f"{source}={base!r} must be an http://, https:// or file:// URL")
    return base.rstrip("/")


def weights_urls(alias: str, base_url: str | None = None) -> tuple[str, str]:
    """``(model URL, contact-regression URL)`` of a trained ESM-2 (``8M`` … ``15B`` or fair-esm name)."""
    spec = get_spec(alias, trained=True)
    base = weights_base_url(base_url)
    return f"{base}/models/{spec.name}.pt", f"{base}/regression/{spec.name}-contact-regression.pt"


def _weights_file(alias: str) -> WeightsFile:
    spec = get_spec(alias, trained=True)
    return next(entry for entry in ESM2_WEIGHTS if entry.name == spec.name)


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def weights_status(weights_dir: str | Path | None = None, base_url: str | None = None) -> list[WeightsStatus]:
    """Per trained ESM-2 (8M … 15B, small to large): present, partial or missing, sizes and paths.

    Parameters
    ----------
    weights_dir : str or Path, optional
        Folder to inspect; default fair-esm's torch-hub cache (where ``load_esm2`` looks).
    base_url : str, optional
        Only used to fill in the URLs (see :func:`weights_base_url`).
    """
    statuses = []
    for entry in ESM2_WEIGHTS:
        path, regression_path = checkpoint_paths(entry.alias, weights_dir)
        url, regression_url = weights_urls(entry.alias, base_url)
        statuses.append(WeightsStatus(
            alias=entry.alias, name=entry.name, path=path, regression_path=regression_path,
            present=path.is_file(), regression_present=regression_path.is_file(),
            partial_bytes=_size(path.with_name(path.name + ".part")),
            size_on_disk=_size(path) + _size(regression_path), expected_bytes=entry.approx_bytes,
            url=url, regression_url=regression_url,
        ))
    return statuses


def check_online(url: str | None = None, timeout: float = 5.0) -> str | None:
    """``None`` if the weights server answers, else a one-line reason (DNS failure, refused, proxy …).

    ``url`` defaults to :func:`weights_base_url` (so ``REVDISTILL_WEIGHTS_URL`` is honoured). Use it to
    say "offline: cannot reach dl.fbaipublicfiles.com (…)" before offering a download.
    """
    return _check_online(url or weights_base_url() + "/", timeout=timeout)


def download_weights(
    aliases: str | Sequence[str],
    weights_dir: str | Path | None = None,
    *,
    progress: ProgressCallback | None = None,
    base_url: str | None = None,
    verify: bool = False,
    retries: int = 3,
    timeout: float = 60.0,
    retry_wait: float = 2.0,
) -> list[Path]:
    """Download ESM-2 checkpoints (model + contact head) into the folder ``load_esm2`` reads.

    Parameters
    ----------
    aliases : str or sequence of str
        ``"8M,35M,150M"`` or ``["8M", "35M"]`` (fair-esm names work too), read by
        :func:`~revdistill.esm.models.registry.parse_models`. Tiny models are refused.
    weights_dir : str or Path, optional
        Target folder; default fair-esm's cache ``torch.hub.get_dir()/checkpoints``.
    progress : callable, optional
        ``progress(done_bytes, total_bytes, alias)`` during each model's download; bytes count the
        contact head and the model together (``total_bytes`` None until the server gave a size).
    base_url : str, optional
        Serves ``<base>/models/<name>.pt`` and ``<base>/regression/<name>-contact-regression.pt``;
        default ``$REVDISTILL_WEIGHTS_URL``, else ``https://dl.fbaipublicfiles.com/fair-esm``.
    verify : bool, default=False
        Also re-hash files already present against ``SHA256SUMS`` (slow for the large models).
    retries, timeout, retry_wait :
        Attempts per file, socket timeout and seconds between attempts (each retry resumes);
        see :func:`revdistill.io.download.download_file`.

    Returns
    -------
    list of Path
        The model files, small to large (the order of :func:`~revdistill.esm.models.registry.parse_models`).

    Raises
    ------
    ValueError
        Unknown, repeated or tiny model names.
    revdistill.io.download.DownloadError
        Offline (the reason: DNS, refused, proxy …), HTTP errors such as 404, disk full, transfer broken
        after ``retries`` attempts (the ``.part`` file is kept; the next call resumes).
    revdistill.io.download.ChecksumError
        A digest differs from the published or recorded one (the partial file is removed).
    """
    paths = []
    for alias in parse_models(aliases, "aliases", trained=True):
        entry = _weights_file(alias)
        model_path, regression_path = checkpoint_paths(alias, weights_dir)
        model_url, regression_url = weights_urls(alias, base_url)
        model_path.parent.mkdir(parents=True, exist_ok=True)
        recorded = read_checksums(model_path.parent)
        if model_path.is_file() and regression_path.is_file() and not verify:
            logger.info("%s: %s already present", alias, model_path)
            size = _size(model_path) + _size(regression_path)
            if progress is not None:
                progress(size, size, alias)
            paths.append(model_path)
            continue
        options = {"retries": retries, "timeout": timeout, "retry_wait": retry_wait}
        expected_regression = recorded.get(regression_path.name)
        download_file(regression_url, regression_path, expected_sha256=expected_regression,
                      check=None if expected_regression else partial(check_checkpoint_file, regression=True),
                      **options)
        head = _size(regression_path)

        def report(done: int, total: int | None, _label: str, head: int = head, alias: str = alias) -> None:
            if progress is not None:
                progress(head + done, None if total is None else head + total, alias)

        expected = entry.sha256 or recorded.get(model_path.name)
        # without a known digest, at least the file must be a checkpoint of this model's architecture
        check = None if expected else partial(check_checkpoint_file, spec=get_spec(alias))
        digest = download_file(model_url, model_path, expected_sha256=expected, progress=report, label=alias,
                               check=check, **options)
        logger.info("%s: %s sha256 %s", alias, model_path, digest)
        paths.append(model_path)
    return paths
