"""ProteinGym v1.3 substitution data: where the files are, the reference file, downloads.

Where the data come from, in order: the ``data_dir`` argument, the ``REVDISTILL_PROTEINGYM_DIR``
environment variable, then the cache (:func:`revdistill.io.paths.cache_dir` ``("proteingym")``).
Inside that folder any of these layouts is read:

- ``DMS_substitutions.csv`` or ``reference_files/DMS_substitutions.csv`` (the reference file; when the
  folder has none, :func:`load_reference` reads the copy of the v1.3 file shipped with the package, so
  the 217 assays are listed offline);
- ``cv_folds_singles_substitutions/<DMS_id>.csv`` or the zip of the same name (singles with the official
  folds; preferred), then ``DMS_ProteinGym_substitutions/<DMS_id>.csv`` or its zip, then
  ``assays/<DMS_id>.csv`` or ``<DMS_id>.csv``. Zips are read in place, never extracted.

:func:`download_proteingym` downloads the whole files (resumable, SHA-256 recorded);
:func:`revdistill.proteingym.remote.fetch_assay` gets one assay's members out of the remote zips.
"""
from __future__ import annotations

import difflib
import io
import logging
import os
import re
import tempfile
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from revdistill.io.download import download_file, read_checksums
from revdistill.io.files import open_zip, read_zip_member

logger = logging.getLogger(__name__)

__all__ = [
    "ENV_VAR", "BASE_URL", "PROTEINGYM_FILES", "REFERENCE_COLUMNS", "UnknownAssayError",
    "default_cache_dir", "resolve_data_dir", "download_proteingym", "load_reference", "find_assay_csv",
    "list_assays", "suggest_assays", "read_csv_checked", "local_assay_ids", "packaged_reference_path",
    "PACKAGED_ASSAYS", "packaged_assay_path", "assay_source",
    "PROTEINGYM_URL_ENV", "proteingym_base_url",
]

ENV_VAR = "REVDISTILL_PROTEINGYM_DIR"
BASE_URL = "https://marks.hms.harvard.edu/proteingym/ProteinGym_v1.3"
REFERENCE_COMMIT = "bb685245f8f4bb95a5b54b470396c23826cd6284"  # ProteinGym v1.3-era commit (PR #83 merge)
PROTEINGYM_FILES: dict[str, str] = {
    "DMS_ProteinGym_substitutions.zip": f"{BASE_URL}/DMS_ProteinGym_substitutions.zip",
    "cv_folds_singles_substitutions.zip": f"{BASE_URL}/cv_folds_singles_substitutions.zip",
    "DMS_substitutions.csv": (
        f"https://raw.githubusercontent.com/OATML-Markslab/ProteinGym/{REFERENCE_COMMIT}"
        "/reference_files/DMS_substitutions.csv"
    ),
}
#: Environment variable naming a mirror of :data:`BASE_URL` (the two zips), read by :func:`proteingym_base_url`.
PROTEINGYM_URL_ENV = "REVDISTILL_PROTEINGYM_URL"
REFERENCE_COLUMNS = ("DMS_id", "target_seq", "UniProt_ID", "coarse_selection_type")
_COUNT_COLUMNS = ("DMS_number_single_mutants", "DMS_total_number_mutants")
_ASSAY_FOLDERS = ("cv_folds_singles_substitutions", "DMS_ProteinGym_substitutions", "assays", ".")


class UnknownAssayError(ValueError):
    """An assay id that is not in the reference file (the message lists close matches)."""


def default_cache_dir() -> Path:
    """The ProteinGym cache folder, :func:`revdistill.io.paths.cache_dir` ``("proteingym")``."""
    from revdistill.io.paths import cache_dir  # noqa: PLC0415

    return cache_dir("proteingym")


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """Return the ProteinGym folder: ``data_dir``, else ``$REVDISTILL_PROTEINGYM_DIR``, else the cache."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"ProteinGym data_dir={str(path)!r} is not a folder")
        return path
    if os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR]).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{ENV_VAR}={str(path)!r} is not a folder")
        return path
    return default_cache_dir()


def data_folders(data_dir: str | Path | None = None) -> list[Path]:
    """The folders searched for ProteinGym files, in order: :func:`resolve_data_dir`, then the cache.

    A shared, read-only data folder can sit first; what is fetched later goes to the first writable
    folder (:func:`writable_data_folder`), and is found there.
    """
    first = resolve_data_dir(data_dir)
    cache = default_cache_dir()
    return [first] if first.resolve() == cache.resolve() else [first, cache]


def writable_data_folder(data_dir: str | Path | None = None) -> Path:
    """The first of :func:`data_folders` this process can write to (created if missing)."""
    for folder in data_folders(data_dir):
        if _can_write(folder):
            return folder
    raise PermissionError(f"no writable ProteinGym folder among {[str(f) for f in data_folders(data_dir)]}; "
                          f"set {ENV_VAR} or $REVDISTILL_CACHE to a folder you can write")


def _can_write(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (created if missing); a real probe, so read-only
    mounts count as read-only even for root."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe-"):
            return True
    except OSError:
        return False


def _missing_data_message(what: str, folder: Path) -> str:
    return (
        f"{what} not found under {folder}. Either fetch this assay alone with "
        f"revdistill.proteingym.fetch_assay(DMS_id) (needs internet), or run `revdistill proteingym --download` "
        f"(fetches {', '.join(PROTEINGYM_FILES)} from {BASE_URL} and GitHub), or copy those files "
        f"(zips as they are, or extracted) into one folder and pass it with --data-dir / data_dir= or "
        f"set {ENV_VAR}=/that/folder. An assay CSV can also be given by its path."
    )


def download_proteingym(
    cache_dir: str | Path | None = None,
    names: Sequence[str] | None = None,
    expected_sha256: Mapping[str, str] | None = None,
    urls: Mapping[str, str] | None = None,
) -> Path:
    """Download the ProteinGym v1.3 substitution files into ``cache_dir`` (resumable) and return it.

    Parameters
    ----------
    cache_dir : str or Path, optional
        Target folder; default :func:`resolve_data_dir` (argument, environment variable, cache).
    names : sequence of str, optional
        Subset of :data:`PROTEINGYM_FILES` keys; default all three.
    expected_sha256 : mapping, optional
        ``{name: hex digest}`` to check; digests already recorded in ``SHA256SUMS`` are checked too.
    urls : mapping, optional
        Override the source URL per name. By default the zips come from :func:`proteingym_base_url`
        (``$REVDISTILL_PROTEINGYM_URL`` when set), the reference file from ProteinGym's GitHub.
    """
    folder = Path(cache_dir) if cache_dir is not None else resolve_data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    recorded = read_checksums(folder)
    for name in names if names is not None else tuple(PROTEINGYM_FILES):
        if name not in PROTEINGYM_FILES:
            raise ValueError(f"name={name!r} is not a ProteinGym file; choose from {sorted(PROTEINGYM_FILES)}")
        default = f"{proteingym_base_url()}/{name}" if name.endswith(".zip") else PROTEINGYM_FILES[name]
        url = (urls or {}).get(name, default)
        expected = (expected_sha256 or {}).get(name) or recorded.get(name)
        digest = download_file(url, folder / name, expected_sha256=expected)
        logger.info("%s sha256 %s", name, digest)
    return folder


def proteingym_base_url(base_url: str | None = None) -> str:
    """The zips' base: ``base_url``, else ``$REVDISTILL_PROTEINGYM_URL``, else ProteinGym's v1.3 URL (the one place
    the variable is read: whole downloads and single-assay fetches alike)."""
    base = base_url or os.environ.get(PROTEINGYM_URL_ENV) or BASE_URL
    if not base.startswith(("http://", "https://")):
        source = "base_url" if base_url else PROTEINGYM_URL_ENV
        raise ValueError(f"{source}={base!r} must be an http:// or https:// URL")
    return base.rstrip("/")


def packaged_reference_path() -> Path:
    """The copy of ProteinGym v1.3's ``DMS_substitutions.csv`` shipped in the package (217 assays)."""
    return Path(str(resources.files("revdistill") / "data" / "DMS_substitutions.csv"))


#: ProteinGym assays whose CSV ships with the package (see ``revdistill/data/SOURCES.md``), so that the
#: notebooks and the README run from a fresh clone, offline.
PACKAGED_ASSAYS = ("PIN1_HUMAN_Tsuboyama_2023_1I6C",)


def packaged_assay_path(dms_id: str) -> Path:
    """The copy of assay ``dms_id``'s CSV shipped in the package (``ValueError`` for any other assay)."""
    if dms_id not in PACKAGED_ASSAYS:
        raise ValueError(f"no copy of assay {dms_id!r} ships with the package; packaged: {list(PACKAGED_ASSAYS)}")
    return Path(str(resources.files("revdistill") / "data" / f"{dms_id}.csv"))


def assay_source(dms_id: str, data_dir: str | Path | None = None) -> str | Path:
    """What to read assay ``dms_id`` from: the id when its data are in :func:`data_folders` (official folds
    when present), else the packaged copy's path (a CSV :func:`revdistill.proteingym.read_assay` reads; its
    stem is the id, so the reference row still applies). Other assays not on disk raise ``FileNotFoundError``
    saying where to put them."""
    if dms_id in local_assay_ids(data_dir):
        return dms_id
    if dms_id in PACKAGED_ASSAYS:
        return packaged_assay_path(dms_id)
    find_assay_csv(dms_id, data_dir)  # raises FileNotFoundError saying what to put where
    return dms_id


def load_reference(data_dir: str | Path | None = None, path: str | Path | None = None) -> pd.DataFrame:
    """Read ``DMS_substitutions.csv`` (one row per assay, indexed by ``DMS_id``).

    Looks in ``path``, else the data folder (:func:`resolve_data_dir`: ``DMS_substitutions.csv`` or
    ``reference_files/DMS_substitutions.csv``), else reads the copy shipped with the package
    (:func:`packaged_reference_path`, ProteinGym v1.3) and says so in an INFO log line.

    Raises
    ------
    FileNotFoundError
        ``path`` or an explicit ``data_dir`` does not exist.
    ValueError
        A required column (:data:`REFERENCE_COLUMNS`) is missing or ``DMS_id`` repeats.
    """
    if path is None:
        folder = resolve_data_dir(data_dir)
        candidates = [folder / "DMS_substitutions.csv", folder / "reference_files" / "DMS_substitutions.csv"]
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            path = packaged_reference_path()
            logger.info("no DMS_substitutions.csv under %s: using the ProteinGym v1.3 reference file shipped with "
                        "revdistill (%s)", folder, path)
    elif not Path(path).is_file():
        raise FileNotFoundError(f"reference file path={str(path)!r} does not exist")
    reference = read_csv_checked(Path(path), what="reference file")
    missing = [c for c in REFERENCE_COLUMNS if c not in reference.columns]
    if missing:
        raise ValueError(f"reference file {path} lacks column(s) {missing}; has {list(reference.columns)[:12]}...")
    if reference["DMS_id"].duplicated().any():
        repeated = reference["DMS_id"][reference["DMS_id"].duplicated()].tolist()
        raise ValueError(f"reference file {path}: DMS_id repeats: {repeated[:5]}")
    reference = reference.set_index("DMS_id", drop=False)
    reference.attrs["path"] = str(path)  # for messages about its columns
    return reference


def list_assays(reference: pd.DataFrame, max_variants: int | None = None) -> list[str]:
    """Assay ids in the reference, optionally only those with at most ``max_variants`` single mutants."""
    ids = reference["DMS_id"]
    if max_variants is not None:
        source = reference.attrs.get("path", "the reference file")
        column = next((c for c in _COUNT_COLUMNS if c in reference.columns), None)
        if column is None:
            raise ValueError(f"--max-variants needs the number of variants of each assay, but reference file "
                             f"{source} has none of the columns {list(_COUNT_COLUMNS)}; use ProteinGym's "
                             f"DMS_substitutions.csv (or add one of them), or drop --max-variants")
        counts = pd.to_numeric(reference[column], errors="coerce")
        bad = counts.isna().to_numpy()
        if bad.any():
            raise ValueError(f"reference file {source}: column {column!r} is empty or not a number for "
                             f"{list(ids[bad])[:5]}; allowed: whole numbers (needed by --max-variants)")
        ids = ids[(counts <= max_variants).to_numpy()]
    return [str(x) for x in ids]


def suggest_assays(name: str, known: Sequence[str], n: int = 5) -> list[str]:
    """Close matches to ``name`` among ``known``: ids it starts, difflib matches, ids sharing its first token."""
    lowered = {k.lower(): k for k in known}
    hits = [k for k in known if k.lower().startswith(name.lower())]
    hits += [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
             if lowered[c] not in hits]
    prefix = name.split("_")[0].lower()
    hits += [k for k in known if k.lower().startswith(prefix) and k not in hits]
    return hits[:n]


def _unknown_assay(name: str, reference: pd.DataFrame) -> UnknownAssayError:
    matches = suggest_assays(name, list(reference["DMS_id"]))
    hint = f"; did you mean {', '.join(matches)}?" if matches else ""
    return UnknownAssayError(f"unknown ProteinGym assay id {name!r} ({len(reference)} assays in the reference){hint}")


def find_assay_csv(dms_id: str, data_dir: str | Path | None = None) -> tuple[str, Path, str | None]:
    """Locate an assay's CSV in :func:`data_folders`: ``(source label, folder or zip path, zip member or None)``."""
    folders = data_folders(data_dir)
    for folder in folders:
        for sub in _ASSAY_FOLDERS:
            csv = folder / sub / f"{dms_id}.csv"
            if csv.exists():
                return sub, csv, None
            archive = folder / f"{sub}.zip"
            if sub != "." and archive.exists():
                with open_zip(archive, "ProteinGym archive") as zf:
                    member = next((m for m in zf.namelist() if Path(m).name == f"{dms_id}.csv"), None)
                if member is not None:
                    return sub, archive, member
    raise FileNotFoundError(_missing_data_message(f"assay file {dms_id}.csv", folders[0]))


def local_assay_ids(data_dir: str | Path | None = None) -> dict[str, str]:
    """Assays whose data are in the data folder: ``{DMS_id: source folder}`` (the one ``find_assay_csv`` picks).

    Lists each folder and reads each zip's directory once (no CSV is read). A missing default folder
    (no cache yet) gives an empty dict.
    """
    try:
        folders = data_folders(data_dir)
    except FileNotFoundError:
        if data_dir is not None:
            raise
        return {}
    found: dict[str, str] = {}
    for folder in reversed(folders):  # earlier folders, and within a folder earlier sources, win
        for sub in reversed(_ASSAY_FOLDERS):
            names: list[str] = []
            if (folder / sub).is_dir():
                names += [p.name for p in (folder / sub).glob("*.csv")]
            archive = folder / f"{sub}.zip"
            if sub != "." and archive.is_file():
                with open_zip(archive, "ProteinGym archive") as zf:
                    names += [Path(m).name for m in zf.namelist() if m.endswith(".csv")]
            for name in names:
                found[name[: -len(".csv")]] = sub
    return found


def read_csv_checked(path: Path, what: str, member: str | None = None) -> pd.DataFrame:
    """A CSV (or a CSV member of a zip) as a DataFrame, with every row checked to have the header's fields.

    Raises
    ------
    ValueError
        Naming the file (and member) and line: not CSV text, a row with more (or fewer) fields than the
        header (an unquoted comma in a value?), a header without rows, a damaged zip member.
    """
    import warnings  # noqa: PLC0415

    where = f"{path}!{member}" if member else str(path)
    try:
        if member is not None:
            with open_zip(path, "ProteinGym archive") as zf:
                data: bytes | None = read_zip_member(zf, member, "ProteinGym archive")
            source = io.BytesIO(data)
        elif not Path(path).is_file():  # a FIFO or process substitution: readable once, so read it whole
            data = Path(path).read_bytes()
            source = io.BytesIO(data)
        else:
            data, source = None, path
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(source, low_memory=False, index_col=False)
    except pd.errors.ParserWarning:  # more fields than the header in some row, every row even
        raise ValueError(_extra_fields_message(path if data is None else data, what, where)) from None
    except pd.errors.ParserError as error:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
        if found:
            expected, line, saw = found.groups()
            raise ValueError(f"malformed {what} {where}: line {line} has {saw} fields but the header has {expected} "
                             f"(an unquoted comma in a value? quote values that contain commas)") from None
        raise ValueError(f"malformed {what} {where}: {error}") from error
    except (pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"malformed {what} {where}: {error}") from error
    if frame.empty:
        raise ValueError(f"{what} {where} has a header ({', '.join(map(str, frame.columns[:8]))}) but no rows")
    return frame


def _extra_fields_message(source: Path | bytes, what: str, where: str) -> str:
    """Which line has more fields than the header (found on the error path only)."""
    import csv  # noqa: PLC0415

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    text = data.decode("utf-8", "replace")
    rows = csv.reader(io.StringIO(text))
    header = next(rows, [])
    for number, row in enumerate(rows, start=2):
        if len(row) > len(header):
            return (f"malformed {what} {where}: line {number} has {len(row)} fields but the header has {len(header)} "
                    f"({', '.join(header[:8])}); an unquoted comma in a value? Quote values that contain commas")
    return f"malformed {what} {where}: some row has more fields than the header"
