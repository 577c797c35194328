"""Protein records: FASTA reading and validation against fair-esm's alphabet.

One set of rules for files and uploads (:func:`read_fasta`, :func:`parse_fasta_text`):

- plain text or compressed (gzip, bzip2, xz), recognised by the first bytes, not the file name;
  a UTF-8 byte-order mark is skipped; anything that is not UTF-8 text is refused naming the line
  and the byte;
- ``>`` starts a record, whose id is the header's first word; ``;`` lines and blank lines are
  skipped; whitespace inside sequence lines is ignored;
- sequences are checked character by character (:func:`validate_records`): the 20 amino acids and
  X/B/Z/U/O, in upper or lower case (lower case is upper-cased); any other character, including
  non-ASCII letters such as ``ß`` (which Unicode upper-casing would turn into ``SS``), is an error
  naming the record, the position and the file's line.
"""
from __future__ import annotations

import bz2
import codecs
import gzip
import io
import lzma
import zlib
from pathlib import Path
from typing import IO, Iterable, Iterator, Mapping

__all__ = ["AMINO_ACIDS", "EXTRA_LETTERS", "read_fasta", "parse_fasta_text", "validate_records"]

#: The 20 standard amino acids.
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
#: Other residue letters fair-esm's ESM-1b alphabet accepts as tokens of their own.
EXTRA_LETTERS = "XBZUO"

_ALLOWED = frozenset(AMINO_ACIDS + EXTRA_LETTERS)
#: Exact characters accepted in a sequence, mapped to the stored (upper-case) letter.
_LETTER = {**{c: c for c in _ALLOWED}, **{c.lower(): c for c in _ALLOWED}}
_DROP_ALLOWED = str.maketrans("", "", "".join(_ALLOWED))
_COMPRESSED = ((b"\x1f\x8b", "gzip", gzip.open), (b"BZh", "bzip2", bz2.open), (b"\xfd7zXZ\x00", "xz", lzma.open))
_FOREIGN = ((b"\x89HDF\r\n\x1a\n", "is an HDF5 file, not a FASTA file"),
            (b"PK\x03\x04", "is a zip archive (unzip it first), not a FASTA file"),
            (b"\x28\xb5\x2f\xfd", "is zstd-compressed (decompress it first), not a FASTA file"),
            (b"\x80", "is a pickle, not a FASTA file"), (b"\x93NUMPY", "is a NumPy .npy file, not a FASTA file"),
            (b"\xff\xfe", "is UTF-16 text; save it as UTF-8 or ASCII"),
            (b"\xfe\xff", "is UTF-16 text; save it as UTF-8 or ASCII"))


def read_fasta(path: str | Path) -> list[tuple[str, str]]:
    """Read a FASTA file (plain, gzip, bzip2 or xz) into validated ``(id, SEQUENCE)`` pairs.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    list of (str, str)
        Ids (each header's first word) and upper-cased sequences, in file order.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not FASTA text (binary, not UTF-8, damaged compression), sequence lines before any header,
        no records, or a record :func:`validate_records` refuses; the message names the file and line.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"FASTA file {path} is a folder; give a .fasta / .fa / .fa.gz file")
    if not path.exists():
        raise FileNotFoundError(f"FASTA file {path} does not exist")
    if not path.is_file():  # a FIFO or a process substitution <(zcat x.fa.gz): readable once, so read it whole
        with open(path, "rb") as stream:
            return parse_fasta_text(stream.read(), str(path))
    with open(path, "rb") as raw:
        head = raw.read(8)
    opener = _opener(head, str(path))
    with opener(path) as stream:
        return _parse(_lines(stream, str(path)), str(path))


def parse_fasta_text(text: str | bytes, name: str) -> list[tuple[str, str]]:
    """Parse FASTA content held in memory (e.g. an upload) with the rules of :func:`read_fasta`.

    Parameters
    ----------
    text : str or bytes
        The content; bytes may be compressed (gzip, bzip2, xz) and must otherwise be UTF-8.
    name : str
        What to call the content in messages (the uploaded file's name).

    Returns
    -------
    list of (str, str)
        Validated ``(id, SEQUENCE)`` pairs.
    """
    if isinstance(text, str):
        return _parse(enumerate(text.removeprefix("\ufeff").splitlines(), start=1), name)
    if not isinstance(text, (bytes, bytearray)):
        raise ValueError(f"{name}: FASTA content must be str or bytes, got {type(text).__name__}")
    opener = _opener(bytes(text[:8]), name)
    with opener(io.BytesIO(bytes(text))) as stream:
        return _parse(_lines(stream, name), name)


def _opener(head: bytes, name: str):
    for magic, _, open_compressed in _COMPRESSED:
        if head.startswith(magic):
            return lambda source: open_compressed(source, "rb")
    for magic, what in _FOREIGN:
        if head.startswith(magic):
            raise ValueError(f"{name} {what}")
    return lambda source: open(source, "rb") if isinstance(source, (str, Path)) else source


def _lines(stream: IO[bytes], name: str) -> Iterator[tuple[int, str]]:
    """Decoded lines ``(1-based number, text)``; not-UTF-8 and binary content name the line and byte."""
    offset = 0
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        for number, raw in enumerate(stream, start=1):
            if b"\x00" in raw:
                raise ValueError(f"{name}: line {number} holds a NUL byte (byte {offset + raw.index(0)} of the "
                                 f"file): a binary file, not FASTA text")
            try:
                line = decoder.decode(raw)
            except UnicodeDecodeError as error:
                byte = offset + error.start
                raise ValueError(f"{name}: line {number}, byte {byte} (0x{raw[error.start]:02x}) is not UTF-8 "
                                 f"text; FASTA files must be plain ASCII/UTF-8 text") from None
            if number == 1:
                line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark
            offset += len(raw)
            # a lone '\r' (old Mac line ends) splits lines too
            yield from ((number, part) for part in (line.splitlines() or [""]))
    except (EOFError, OSError, zlib.error, lzma.LZMAError) as error:
        raise ValueError(f"{name}: the compressed stream is damaged or truncated ({error})") from None


def _parse(lines: Iterable[tuple[int, str]], name: str) -> list[tuple[str, str]]:
    records: list[tuple[str, str]] = []
    line_of: list[list[tuple[int, int]]] = []  # per record: (line number, residues before it)
    header: str | None = None
    chunks: list[str] = []
    for line_number, line in lines:
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            if header is not None:
                records.append((header, "".join(chunks)))
            words = line[1:].split()
            if not words:
                raise ValueError(f"{name}: line {line_number}: FASTA header has no id")
            header, chunks = words[0], []
            line_of.append([(line_number, 0)])
        elif header is None:
            raise ValueError(f"{name}: line {line_number}: sequence line before the first '>' header "
                             f"(is this a FASTA file?)")
        else:
            line_of[-1].append((line_number, sum(len(chunk) for chunk in chunks)))
            chunks.append("".join(line.split()))
    if header is not None:
        records.append((header, "".join(chunks)))
    if not records:
        raise ValueError(f"{name} holds no FASTA records (no line starts with '>')")
    try:
        return validate_records(records)
    except _RecordError as error:
        lines_of_record = line_of[error.index]
        line_number = lines_of_record[0][0]  # the header
        if error.position is not None:
            line_number = max((n for n, start in lines_of_record[1:] if start < error.position), default=line_number)
        raise ValueError(f"{name}: line {line_number}: {error}") from None


class _RecordError(ValueError):
    """A refused record; knows its index and, for a bad character, its 1-based position."""

    def __init__(self, message: str, index: int, position: int | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.position = position


def validate_records(records: Iterable[tuple[str, str]] | Mapping[str, str]) -> list[tuple[str, str]]:
    """Check records and return them as ``(id, SEQUENCE)`` with upper-cased sequences.

    Each character is checked as given: the 20 amino acids and X/B/Z/U/O in ASCII upper or lower
    case are accepted (lower case is upper-cased); nothing else is, whatever ``str.upper`` would make of it.

    Raises
    ------
    ValueError
        Empty input, an id or sequence that is not a string, an empty id or sequence, duplicate ids,
        or a character outside the alphabet; the message names the record and the 1-based position.
    """
    if isinstance(records, (str, bytes)):
        raise ValueError("records must be (id, sequence) pairs or a mapping id -> sequence, not one string")
    items = list(records.items()) if isinstance(records, Mapping) else list(records)
    if not items:
        raise ValueError("records is empty: give at least one (id, sequence) pair")
    seen: dict[str, int] = {}
    clean = []
    for index, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise _RecordError(f"record {index} must be an (id, sequence) pair, got {item!r:.80}", index)
        record_id, sequence = item
        if not isinstance(record_id, str) or not isinstance(sequence, str):
            raise _RecordError(f"record {index}: id and sequence must be strings, got "
                               f"({type(record_id).__name__}, {type(sequence).__name__})", index)
        if not record_id or record_id != record_id.strip():
            raise _RecordError(f"record {index} has an empty id or one with surrounding whitespace "
                               f"({record_id!r})", index)
        if record_id in seen:
            raise _RecordError(f"duplicate record id {record_id!r} (records {seen[record_id]} and {index})", index)
        seen[record_id] = index
        if not sequence:
            raise _RecordError(f"record {record_id!r} has an empty sequence", index)
        upper = sequence.upper() if sequence.isascii() else ""  # ASCII: upper-casing is letter for letter
        if not upper or upper.translate(_DROP_ALLOWED):
            position, letter = next((i, c) for i, c in enumerate(sequence, start=1) if c not in _LETTER)
            hint = " (a stop codon: remove it)" if letter == "*" and position == len(sequence) else ""
            raise _RecordError(
                f"record {record_id!r} has invalid character {letter!r} at position {position} "
                f"(U+{ord(letter):04X}){hint}; allowed: {AMINO_ACIDS} and {EXTRA_LETTERS} (tokens of fair-esm's "
                f"alphabet), in upper or lower case", index, position)
        clean.append((record_id, upper))
    return clean
