"""FASTA reading and record validation: compressed files, encodings, exact characters, clear errors."""
from __future__ import annotations

import bz2
import gzip
import lzma

import pytest

from revdistill.esm.sequences import parse_fasta_text, read_fasta, validate_records

from filecheck import unchanged

PLAIN = b">a first protein\nMKV\nll\n\n>b\r\nAC\r\n"
EXPECTED = [("a", "MKVLL"), ("b", "AC")]


@pytest.mark.parametrize("name, content", [
    ("plain.fasta", PLAIN),
    ("proteome.fa.gz", gzip.compress(PLAIN)),
    ("gzip-without-suffix.txt", gzip.compress(PLAIN)),  # recognised by its magic bytes, not its name
    ("proteome.fasta.bz2", bz2.compress(PLAIN)),
    ("proteome.fasta.xz", lzma.compress(PLAIN)),
    ("bom.fasta", b"\xef\xbb\xbf" + PLAIN),
    ("old-mac.fasta", PLAIN.replace(b"\r\n", b"\n").replace(b"\n", b"\r")),
    ("comments.fasta", b";comment\n" + PLAIN),
])
def test_fasta_variants_read_the_same(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert read_fasta(path) == EXPECTED
    assert parse_fasta_text(content, name) == EXPECTED


def test_parse_fasta_text_of_a_str_upper_cases_like_the_file_reader():
    assert parse_fasta_text("\ufeff>x desc\nmkv\n", "upload.fa") == [("x", "MKV")]


BAD_FASTA = [
    ("latin1.fasta", ">a\nMK\xe9V\n".encode("latin-1"), r"latin1.fasta: line 2, byte 5 \(0xe9\) is not UTF-8 text"),
    ("binary.fasta", b">a\nMK\x00V\n", r"binary.fasta: line 2 holds a NUL byte \(byte 5 of the file\): a binary file"),
    ("eszett.fasta", ">a\nMKV\nACDßEF\n".encode(), r"eszett.fasta: line 3: record 'a' has invalid character 'ß' at "
                                                     r"position 7 \(U\+00DF\)"),
    ("stop.fasta", b">a\nMKV*\n", r"line 2: record 'a' has invalid character '\*' at position 4 .*stop codon"),
    ("gap.fasta", b">a\nMK-V\n", r"line 2: record 'a' has invalid character '-' at position 3"),
    ("digit.fasta", b">a\nMK\n>b\nAC1\n", r"line 4: record 'b' has invalid character '1' at position 3"),
    ("lower-j.fasta", b">a\nmkjv\n", r"record 'a' has invalid character 'j' at position 3"),
    ("fullwidth.fasta", ">a\nMＫV\n".encode(), r"record 'a' has invalid character 'Ｋ' at position 2"),
    ("no-header.fasta", b"MKV\n>a\nAC\n", r"line 1: sequence line before the first '>' header"),
    ("empty.fasta", b"", r"holds no FASTA records"),
    ("blank.fasta", b"\n\n  \n", r"holds no FASTA records"),
    ("bare-header.fasta", b">\nMKV\n", r"line 1: FASTA header has no id"),
    ("empty-record.fasta", b">a\n>b\nMK\n", r"line 1: record 'a' has an empty sequence"),
    ("duplicate.fasta", b">a x\nMK\n>a y\nMV\n", r"line 3: duplicate record id 'a' \(records 0 and 1\)"),
    ("truncated.fa.gz", gzip.compress(b">a\nMKV\n" * 200)[:-12], r"truncated.fa.gz: the compressed stream is damaged"),
    ("store.fasta", b"\x89HDF\r\n\x1a\n" + b"\0" * 64, r"store.fasta is an HDF5 file, not a FASTA file"),
    ("archive.fasta", b"PK\x03\x04" + b"\0" * 64, r"is a zip archive \(unzip it first\), not a FASTA file"),
    ("pickle.fasta", b"\x80\x04\x95" + b"\0" * 16, r"is a pickle, not a FASTA file"),
    ("utf16.fasta", ">a\nMKV\n".encode("utf-16"), r"utf16.fasta is UTF-16 text; save it as UTF-8"),
]


@pytest.mark.parametrize("name, content, message", BAD_FASTA, ids=[case[0] for case in BAD_FASTA])
def test_bad_fasta_is_one_clear_error_and_changes_nothing(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with unchanged(tmp_path), pytest.raises(ValueError, match=message):
        read_fasta(path)
    with pytest.raises(ValueError, match=message.replace(name, "upload.bin")):
        parse_fasta_text(content, "upload.bin")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.fasta does not exist"):
        read_fasta(tmp_path / "missing.fasta")
    with pytest.raises(ValueError, match="is a folder"):
        read_fasta(tmp_path)


@pytest.mark.parametrize("records, message", [
    ([("a", None)], r"record 0: id and sequence must be strings, got \(str, NoneType\)"),
    ([(1, "MKV")], r"record 0: id and sequence must be strings"),
    ([("a", b"MKV")], r"record 0: id and sequence must be strings, got \(str, bytes\)"),
    ([("a", "ACDßEF")], r"record 'a' has invalid character 'ß' at position 4"),
    ([("a ", "MKV")], r"record 0 has an empty id or one with surrounding whitespace"),
    ([("", "MKV")], r"record 0 has an empty id"),
    ("MKV", r"not one string"),
    ([("a", "MKV", "x")], r"record 0 must be an \(id, sequence\) pair"),
])
def test_validate_records_checks_exact_characters_and_types(records, message):
    with pytest.raises(ValueError, match=message):
        validate_records(records)


def test_validate_records_upper_cases_ascii_only():
    assert validate_records([("a", "mkvXbzuo")]) == [("a", "MKVXBZUO")]
    assert "ß".upper() == "SS"  # why sequences are checked character by character, not after str.upper()
