"""Store files: writing a part, merging parts into the main file, verifying a file end to end.

The layout is described in :mod:`revdistill.esm.store`; the checksummed datasets in :mod:`revdistill.esm._hdf5`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from revdistill.esm._hdf5 import (
    StoreDamagedError, append, copy_rows, create, has, load, load_strings, open_checked, read_header, shape,
    write_header, writing,
)

STRING_KEYS = ("ids", "hashes", "per_residue/ids")
_COPY_BYTES = 64 << 20


def read_moments(handle, what: str, device: str = "cpu"):
    """The :class:`~revdistill.Moments` stored in an open store or part, checked."""
    from revdistill.core.moments import Moments  # noqa: PLC0415

    state = {key: load(handle, f"moments/{key}", what=what) for key in ("meta", "count", "mean", "scatter")}
    try:
        return Moments.from_state(state, device=device)
    except ValueError as error:
        raise StoreDamagedError(handle.filename, what, "moments", str(error)) from error


def write_result(handle, result, hashes: list[str], storage_dtype: str, numerics: dict) -> None:
    """One part file: the records of an :class:`~revdistill.esm.embed.EmbedResult` and their moments,
    made with ``numerics`` (:meth:`~revdistill.esm.runner.EmbedOptions.numerics`)."""
    models = list(result.pooled)
    write_header(handle, models, [result.pooled[m].shape[1] for m in models], storage_dtype, numerics)
    create(handle, "ids", np.array(result.ids, dtype=object))
    create(handle, "hashes", np.array(hashes, dtype=object))
    create(handle, "lengths", np.asarray(result.lengths, dtype=np.int64))
    for model in models:
        create(handle, f"pooled/{model}", result.pooled[model].astype(storage_dtype))
    for key, value in result.moments.to_state().items():
        create(handle, f"moments/{key}", value)
    kept = [record_id for record_id in result.ids if record_id in result.per_residue.get(models[0], {})]
    if kept:
        lengths = np.array([len(result.per_residue[models[0]][i]) for i in kept], dtype=np.int64)
        create(handle, "per_residue/ids", np.array(kept, dtype=object))
        create(handle, "per_residue/starts", np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64))
        create(handle, "per_residue/lengths", lengths)
        for model in models:
            values = np.concatenate([result.per_residue[model][i] for i in kept]).astype(storage_dtype)
            create(handle, f"per_residue/{model}", values)


def merge(main: Path | None, parts: list[Path], target: Path) -> None:
    """Write ``target`` = the main file (if any) followed by the parts, every block checked as it is read.

    Numeric datasets are copied block by block; strings (ids, hashes: small) are gathered and written
    once at the end, as fixed-length strings must be.
    """
    sources = ([(main, "store")] if main is not None else []) + [(part, "part file") for part in parts]
    numerics = merged_numerics(sources)
    with writing(target) as out:
        header, moments = None, None
        strings: dict[str, list[str]] = {key: [] for key in (*STRING_KEYS, "absorbed")}
        for source, what in sources:
            with open_checked(source, what) as handle:
                found = read_header(handle, what)
                if header is None:
                    header = found
                    write_header(out, found["models"], found["dims"], found["storage_dtype"], numerics)
                elif (found["models"], found["storage_dtype"]) != (header["models"], header["storage_dtype"]):
                    raise ValueError(f"{what} {source} holds models {found['models']} ({found['storage_dtype']}), "
                                     f"the store {header['models']} ({header['storage_dtype']}); move the part "
                                     f"file away")
                if what == "store" and has(handle, "absorbed", what):
                    strings["absorbed"] = load_strings(handle, "absorbed", what)
                source_ids = load_strings(handle, "ids", what)
                clash = set(strings["ids"]).intersection(source_ids)
                if clash:
                    raise ValueError(f"part file {source} repeats stored ids ({sorted(clash)[:5]}); two writers "
                                     f"used this store at once. Move the part file away and rerun")
                for key in STRING_KEYS:
                    if has(handle, key, what):
                        strings[key] += load_strings(handle, key, what)
                _copy_numbers(out, handle, found["models"], what)
                part_moments = read_moments(handle, what)
                moments = part_moments if moments is None else moments.merge(part_moments)
            if what == "part file":
                strings["absorbed"].append(source.name)
        for key, values in strings.items():
            if values or key in ("ids", "hashes", "absorbed"):
                create(out, key, np.array(values, dtype=object))
        for key, value in moments.to_state().items():
            create(out, f"moments/{key}", value)


#: What a store written before version 3 records about how its vectors were made: nothing.
UNRECORDED = {"unrecorded": True}


def recorded_numerics(header: dict) -> dict | None:
    """How a store's or part's vectors were made, or None when it does not say (written before version 3)."""
    numerics = header.get("numerics")
    return None if numerics is None or numerics == UNRECORDED else numerics


def describe_numerics(numerics: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(numerics.items()))


def merged_numerics(sources: list[tuple[Path, str]]) -> dict:
    """The one way every source's vectors were made (sources that do not record it take the others').

    Raises
    ------
    ValueError
        Two sources made their vectors differently, naming both.
    """
    numerics, first = None, None
    for source, what in sources:
        with open_checked(source, what) as handle:
            found = recorded_numerics(read_header(handle, what))
        if found is None:
            continue
        if numerics is None:
            numerics, first = found, source
        elif found != numerics:
            raise ValueError(f"{what} {source} holds vectors made with {describe_numerics(found)}, {first} with "
                             f"{describe_numerics(numerics)}; vectors made two ways cannot share a store. Move the "
                             f"part file away")
    return numerics if numerics is not None else dict(UNRECORDED)


def _copy_numbers(out, handle, models: list[str], what: str) -> None:
    """Append every numeric per-record dataset of ``handle`` to ``out`` (per-residue starts shifted)."""
    offset = 0
    if "per_residue/lengths" in out:
        offset = int(out["per_residue/starts"][-1] + out["per_residue/lengths"][-1])
    copy_rows(out, handle, "lengths", what)
    for model in models:
        copy_rows(out, handle, f"pooled/{model}", what)
    if has(handle, "per_residue/ids", what):
        append(out, "per_residue/starts", load(handle, "per_residue/starts", what=what) + offset)
        copy_rows(out, handle, "per_residue/lengths", what)
        for model in models:
            copy_rows(out, handle, f"per_residue/{model}", what)


def verify_file(path: Path, what: str, read_values: bool = True) -> int:
    """Check a store or part: header, every dataset's checksum (``read_values``) and shapes; return n_records.

    Raises
    ------
    StoreDamagedError, ValueError
    """
    with open_checked(path, what) as handle:
        header = read_header(handle, what)
        ids = load_strings(handle, "ids", what)
        n = len(ids)
        if len(set(ids)) != n:
            raise StoreDamagedError(path, what, "ids", "repeated ids")
        shapes = {"hashes": (n,), "lengths": (n,)}
        shapes.update({f"pooled/{m}": (n, d) for m, d in zip(header["models"], header["dims"])})
        if has(handle, "per_residue/ids", what):
            kept = len(load_strings(handle, "per_residue/ids", what))
            lengths = load(handle, "per_residue/lengths", what=what)
            total = int(lengths.sum())
            shapes.update({"per_residue/starts": (kept,), "per_residue/lengths": (kept,)})
            shapes.update({f"per_residue/{m}": (total, d) for m, d in zip(header["models"], header["dims"])})
        for name, expected in shapes.items():
            found = shape(handle, name, what)
            if found != expected:
                raise StoreDamagedError(path, what, name, f"shape {found}, expected {expected}")
            if read_values:
                if len(expected) == 2:  # block by block: bounded memory
                    step = max(1, _COPY_BYTES // (8 * max(1, expected[1])))
                    for start in range(0, expected[0], step):
                        load(handle, name, slice(start, start + step), what=what)
                else:
                    load(handle, name, what=what)
        moments = read_moments(handle, what)
        if list(moments.names) != header["models"] or list(moments.dims) != header["dims"]:
            raise StoreDamagedError(path, what, "moments", f"levels {moments.names} do not match the header")
        if has(handle, "absorbed", what):
            load_strings(handle, "absorbed", what)
        return n
