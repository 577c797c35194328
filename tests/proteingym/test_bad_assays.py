"""Bad DMS CSVs: every message names the file, the column, the 1-based CSV line(s) and what is allowed;
no variant is silently changed, dropped, duplicated or given generated folds instead of official ones."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from revdistill import proteingym as pg

from filecheck import unchanged

TARGET = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ"
NEW = "ACDEFGHIKLMNPQRSTVWY"


def assay_frame(n: int = 40, folds: bool = True) -> pd.DataFrame:
    """``n`` single mutants of TARGET at distinct positions, with scores, sequences and official folds."""
    rows = []
    for index in range(n):
        position = 3 + index
        wild = TARGET[position - 1]
        new = next(letter for letter in NEW[index % 20:] + NEW if letter != wild)
        rows.append({"mutant": f"{wild}{position}{new}", "DMS_score": round(0.1 * index - 1.3, 3),
                     "mutated_sequence": TARGET[: position - 1] + new + TARGET[position:]})
    frame = pd.DataFrame(rows)
    if folds:
        for scheme in pg.SCHEMES:
            frame[scheme] = np.arange(n) % 5
    return frame


def write(tmp_path, frame: pd.DataFrame, name: str = "my_assay.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_a_clean_assay_outside_the_reference_reads(tmp_path):
    assay = pg.read_assay(write(tmp_path, assay_frame()), reference=pd.DataFrame())
    assert assay.target_seq == TARGET and assay.n_variants == 40
    assert assay.fold_source == {scheme: "official" for scheme in pg.SCHEMES}


def set_cell(row: int, column: str, value):
    def edit(frame):
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        return frame
    return edit


def shift_first_wild_type(frame):
    """Row 1 (CSV line 2) claims a wrong wild type: the majority of rows must decide the target."""
    position = int(frame.loc[0, "mutant"][1:-1])
    frame.loc[0, "mutant"] = f"W{position}{frame.loc[0, 'mutant'][-1]}"
    return frame


BAD_ASSAYS = [
    ("fold blank", set_cell(3, "fold_random_5", None), r"column 'fold_random_5' is empty at CSV line\(s\) 5; allowed: "
                                                        r"whole numbers 0 to 4"),
    ("fold 2.5", set_cell(2, "fold_modulo_5", 2.5), r"column 'fold_modulo_5' has invalid folds at CSV line\(s\) 4 "
                                                    r"\(values 2.5\)"),
    ("fold 7", set_cell(6, "fold_contiguous_5", 7),
     r"'fold_contiguous_5' has invalid folds at CSV line\(s\) 8 \(values 7"),
    ("fold -1", set_cell(0, "fold_random_5", -1), r"'fold_random_5' has invalid folds at CSV line\(s\) 2"),
    ("fold text", set_cell(9, "fold_random_5", "two"), r"'fold_random_5' has invalid folds at CSV line\(s\) 11 "
                                                        r"\(values 'two'\)"),
    ("padded mutant", set_cell(4, "mutant", " Y7H "), r"column 'mutant' has 1 value\(s\) that are not mutations: "
                                                     r"' Y7H ' \(CSV line 6\); allowed: <wild type>"),
    ("lower-case mutant", set_cell(1, "mutant", "k4a"), r"'k4a' \(CSV line 3\)"),
    ("blank mutant", set_cell(5, "mutant", None), r"column 'mutant' is empty at CSV line\(s\) 7"),
    ("new residue J", set_cell(1, "mutant", "K4J"), r"'K4J' \(CSV line 3\)"),
    ("position 0", set_cell(1, "mutant", "K0A"), r"'K0A' \(CSV line 3\)"),
    ("one position twice", set_cell(1, "mutant", "K4A:K4C"), r"'K4A:K4C' \(CSV line 3\)"),
    ("past the end", set_cell(8, "mutant", "A999G"), r"1 mutant\(s\) do not match the target sequence \(length 66\): "
                                                     r"A999G \(position 999 is past the end; CSV line 10\)"),
    ("first row wild type", shift_first_wild_type, r"column 'mutant': 1 mutant\(s\) do not match the target sequence "
                                                   r"\(length 66\): W3\w \(position 3 is T; CSV line 2\)"),
    ("score 1e308", set_cell(1, "DMS_score", 1e308),
     r"column 'DMS_score' is infinite or too large at CSV line\(s\) 3 \(values 1e\+308\); allowed: finite numbers "
     r"with \|score\| < 1e\+100"),
    ("score -1e308", set_cell(2, "DMS_score", -1e308), r"'DMS_score' is infinite or too large at CSV line\(s\) 4"),
    ("score inf", set_cell(3, "DMS_score", "inf"),
     r"'DMS_score' is infinite or too large at CSV line\(s\) 5 \(values inf\)"),
    ("score -inf", set_cell(3, "DMS_score", "-inf"), r"'DMS_score' is infinite or too large at CSV line\(s\) 5"),
    ("score text", set_cell(7, "DMS_score", "high"),
     r"column 'DMS_score' is missing or not a number at CSV line\(s\) 9 \(values 'high'\); allowed: finite numbers"),
    ("score blank", set_cell(7, "DMS_score", None), r"'DMS_score' is missing or not a number at CSV line\(s\) 9 "
                                                    r"\(values empty\)"),
    ("duplicate mutant", lambda f: pd.concat([f, f.iloc[[4]]], ignore_index=True),
     r"column 'mutant' repeats \['A7\w'\] at CSV line\(s\) 6, 42; allowed: each variant once"),
    ("mutated_sequence wrong", set_cell(10, "mutated_sequence", TARGET),
     r"column 'mutated_sequence' disagrees with target \+ mutant at CSV line\(s\) 12"),
    ("no DMS_score column", lambda f: f.drop(columns=["DMS_score"]), r"lacks column\(s\) \['DMS_score'\]"),
    ("no mutated_sequence", lambda f: f.drop(columns=["mutated_sequence"]),
     r"is not in the reference file and has no mutated_sequence column"),
    ("too few variants", lambda f: f.head(6), r"6 variant\(s\) after filtering; 5-fold CV needs at least 10"),
    ("constant scores", lambda f: f.assign(DMS_score=0.25), r"column 'DMS_score' has one value \(0.25\) for all 40 "
                                                            r"variants: there is nothing to predict"),
]


@pytest.mark.parametrize("edit, message", [case[1:] for case in BAD_ASSAYS], ids=[case[0] for case in BAD_ASSAYS])
def test_bad_assay_csv_is_one_clear_error_naming_the_file(tmp_path, edit, message):
    path = write(tmp_path, edit(assay_frame()))
    with unchanged(tmp_path), pytest.raises(ValueError, match=message) as caught:
        pg.read_assay(path, reference=pd.DataFrame())
    assert f"assay my_assay ({path})" in str(caught.value)


@pytest.mark.parametrize("content, message", [
    (b'mutant,DMS_score\n"K4A,0.5\nK5R,0.1,7,8\n', r"malformed assay my_assay"),
    (b"", r"malformed assay my_assay"),
    ("mutant,DMS_score\nK4A,0.5\xe9\n".encode("latin-1"), r"malformed assay my_assay"),
])
def test_unreadable_csv(tmp_path, content, message):
    path = tmp_path / "my_assay.csv"
    path.write_bytes(content)
    with unchanged(tmp_path), pytest.raises(ValueError, match=message):
        pg.read_assay(path, reference=pd.DataFrame())


def test_the_target_is_the_majority_wild_type_and_ties_are_refused(tmp_path):
    frame = shift_first_wild_type(assay_frame())
    frame.loc[0, "mutated_sequence"] = "W" * 2 + frame.loc[0, "mutated_sequence"][2:]  # its own story, outvoted
    with pytest.raises(ValueError, match=r"1 mutant\(s\) do not match .*CSV line 2\)"):
        pg.read_assay(write(tmp_path, frame), reference=pd.DataFrame())
    two = assay_frame(2, folds=False)
    two.loc[1, "mutated_sequence"] = two.loc[1, "mutated_sequence"][:-1] + "W"  # two rows, two wild types
    with pytest.raises(ValueError, match="the single mutants disagree on the target sequence"):
        pg.read_assay(write(tmp_path, two, "tie.csv"), reference=pd.DataFrame())


def test_whitespace_never_makes_a_second_variant():
    with pytest.raises(ValueError, match="has spaces around it"):
        pg.parse_mutant(" Y18H ")
    with pytest.raises(ValueError, match="has spaces around it or its parts"):
        pg.parse_mutant("Y18H: K20A")
