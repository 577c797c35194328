"""Synthetic DMS data for tests: PIN1's ProteinGym target with seeded additive fitness, and its zip."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

PIN1 = "KLPPGWEKRMSRSSGRVYYFNHITNASQWERPSGNSSSG"  # PIN1_HUMAN_Tsuboyama_2023_1I6C's target sequence
PIN1_ID = "PIN1_HUMAN_Tsuboyama_2023_1I6C"
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def write_dms_csv(path: Path, n_variants: int = 5000, seed: int = 0) -> Path:
    """A DMS CSV of PIN1: all 741 singles first, then doubles, with an additive synthetic fitness (seeded)."""
    rng = np.random.default_rng(seed)
    effects = rng.normal(0.0, 1.0, (len(PIN1), len(AMINO)))
    rows, seen = [], set()
    for position, wild in enumerate(PIN1, start=1):
        for mutated in AMINO:
            if mutated != wild:
                rows.append([(wild, position, mutated)])
    while len(rows) < n_variants:
        first, second = sorted(rng.choice(len(PIN1), 2, replace=False))
        pair = []
        for index in (first, second):
            choices = [a for a in AMINO if a != PIN1[index]]
            pair.append((PIN1[index], index + 1, choices[rng.integers(len(choices))]))
        key = tuple(pair)
        if key not in seen:
            seen.add(key)
            rows.append(pair)
    lines = ["mutant,mutated_sequence,DMS_score"]
    for mutations in rows[:n_variants]:
        sequence = list(PIN1)
        score = rng.normal(0.0, 0.5)
        for wild, position, mutated in mutations:
            sequence[position - 1] = mutated
            score += effects[position - 1, AMINO.index(mutated)]
        mutant = ":".join(f"{w}{p}{m}" for w, p, m in mutations)
        lines.append(f"{mutant},{''.join(sequence)},{score:.5f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_pin1_zip(root: Path) -> Path:
    """ProteinGym's singles zip (``cv_folds_singles_substitutions.zip``) holding one synthetic PIN1 assay with
    all 741 singles (no fold columns: folds are generated), laid out as the real zip."""
    root.mkdir(parents=True, exist_ok=True)
    csv = write_dms_csv(root / f"{PIN1_ID}.csv", n_variants=19 * len(PIN1))
    path = root / "cv_folds_singles_substitutions.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(csv, f"cv_folds_singles_substitutions/{PIN1_ID}.csv")
    csv.unlink()
    return path
